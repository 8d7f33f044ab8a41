// Whether plugctl's bundle (dist/plugctl/, written by `pnpm build` and `plugctl up`) is current.
// Plain JavaScript: the launcher asks before it loads any TypeScript; bundle.ts asks the same.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

function mtimeMs(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * The first of `inputs` (paths under `repoRoot`) that is gone or changed after `builtMs`, as a
 * reason; undefined when none is. Shared with bundle.ts's check of the services' bundles.
 */
export function changedInputReason(inputs, repoRoot, builtMs) {
  for (const input of inputs) {
    const changed = mtimeMs(join(repoRoot, String(input)));
    if (changed === undefined) return `${input} is gone`;
    if (changed > builtMs) return `${input} changed`;
  }
  return undefined;
}

/**
 * Why the bundle in `dir` must not run, or undefined when it may: its `meta.json` or `main.mjs` is
 * missing, or a file it was built from (under `repoRoot`) is gone or newer than `main.mjs`.
 * Synchronous, as the launcher needs it before anything else: a few hundred stats, a few ms.
 */
export function cliBundleStaleReason(dir, repoRoot) {
  let inputs;
  try {
    inputs = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')).inputs;
  } catch {
    return `no build in ${dir}`;
  }
  const built = mtimeMs(join(dir, 'main.mjs'));
  if (built === undefined) return `plugctl is not built in ${dir}`;
  if (!Array.isArray(inputs)) return `${join(dir, 'meta.json')} lists no inputs`;
  return changedInputReason(inputs, repoRoot, built);
}
