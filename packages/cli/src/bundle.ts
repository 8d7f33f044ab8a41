/**
 * The production build: each service's `src/main.ts` bundled with esbuild into one ESM file
 * (`dist/<service>.mjs`) that plain `node` runs. From source, every service process carries tsx's
 * loader and compiles its TypeScript at start-up; the bundle starts with neither (issue 10: idle
 * RSS). Bundles are local build artifacts: they may refer to this checkout's node_modules.
 */
import { realpathSync } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { PluginBuild } from 'esbuild';
import { StackError } from './errors.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** Where `pnpm build` writes: `<repo>/dist/<entry>.mjs` and `dist/meta.json`. */
export const DEFAULT_BUNDLE_DIR = join(REPO_ROOT, 'dist');
const META_FILE = 'meta.json';

/** What is bundled: the four services (kube-sim stays on tsx: it reads fixtures beside its source). */
export const BUNDLE_ENTRIES = [
  'spec-watcher',
  'attachment-orchestrator',
  'node-mounter',
  'domain-updater',
] as const;
export type BundleEntry = (typeof BUNDLE_ENTRIES)[number];

/** The bundle of `entry` in `outDir`. */
export function bundlePath(entry: BundleEntry, outDir: string = DEFAULT_BUNDLE_DIR): string {
  return join(outDir, `${entry}.mjs`);
}

function entrySource(entry: BundleEntry): string {
  return join(REPO_ROOT, 'services', entry, 'src', 'main.ts');
}

/**
 * Dependencies some modules `require()` at run time (CommonJS inside an ESM bundle needs a real
 * `require`), and pino's worker files: a transport (`LOG_PRETTY=true`) starts a worker thread from
 * a file path, which a bundle does not contain, so pino is told where the installed ones are.
 */
function banner(): string {
  const telemetry = createRequire(join(REPO_ROOT, 'packages', 'telemetry', 'package.json'));
  const pino = createRequire(telemetry.resolve('pino'));
  const overrides: Record<string, string> = {};
  const tryResolve = (key: string, req: NodeJS.Require, id: string): void => {
    try {
      overrides[key] = req.resolve(id);
    } catch {
      // not installed: pino then fails loudly at start-up, only when a transport is asked for
    }
  };
  tryResolve('pino-worker', pino, 'pino/lib/worker.js');
  tryResolve(
    'thread-stream-worker',
    createRequire(pino.resolve('thread-stream')),
    'thread-stream/lib/worker.js',
  );
  tryResolve('pino-pretty', telemetry, 'pino-pretty');
  return [
    "import { createRequire as __pluglineCreateRequire } from 'node:module';",
    'const require = __pluglineCreateRequire(import.meta.url);',
    `globalThis.__bundlerPathsOverrides = ${JSON.stringify(overrides)};`,
  ].join('\n');
}

/**
 * Packages left out of the bundles and imported from where they are installed: koffi finds its
 * native binary beside its own files. Resolved from the service that depends on it, so the import
 * is an absolute path into this checkout's node_modules (pnpm does not hoist it to the root).
 */
const EXTERNAL_PACKAGES: Readonly<Record<string, string>> = { koffi: 'node-mounter' };

function externalPackages(): { name: string; setup: (build: PluginBuild) => void } {
  return {
    name: 'plugline-external-packages',
    setup(build) {
      const filter = new RegExp(`^(${Object.keys(EXTERNAL_PACKAGES).join('|')})$`);
      build.onResolve({ filter }, (args) => {
        const service = EXTERNAL_PACKAGES[args.path]!;
        const req = createRequire(join(REPO_ROOT, 'services', service, 'package.json'));
        return { path: pathToFileURL(realpathSync(req.resolve(args.path))).href, external: true };
      });
    },
  };
}

interface Meta {
  /** Every file a bundle was built from, relative to the repository root. */
  inputs: string[];
  entries: string[];
}

export interface BuildResult {
  outDir: string;
  files: string[];
  warnings: string[];
}

/**
 * Bundles every entry into `outDir`. Each file is written beside its place and renamed into it,
 * so a service starting while another `plugctl up` builds never reads half a bundle.
 */
export async function buildBundles(outDir: string = DEFAULT_BUNDLE_DIR): Promise<BuildResult> {
  // Loaded only when building: running the bundles does not need esbuild.
  const esbuild = await import('esbuild');
  const dir = resolve(outDir);
  const result = await esbuild
    .build({
      absWorkingDir: REPO_ROOT,
      entryPoints: Object.fromEntries(BUNDLE_ENTRIES.map((e) => [e, entrySource(e)])),
      outdir: dir,
      outExtension: { '.js': '.mjs' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: `node${process.versions.node.split('.')[0]}`,
      // Shared modules stay inside each bundle: one file per service, nothing else to ship.
      splitting: false,
      sourcemap: 'linked',
      legalComments: 'none',
      banner: { js: banner() },
      metafile: true,
      plugins: [externalPackages()],
      write: false,
      logLevel: 'silent',
    })
    .catch((err: unknown) => {
      throw new StackError(`the build failed: ${String(err)}`, { cause: err });
    });
  await mkdir(dir, { recursive: true });
  const files: string[] = [];
  for (const out of result.outputFiles) {
    const tmp = `${out.path}.${process.pid}.tmp`;
    await mkdir(dirname(out.path), { recursive: true });
    await writeFile(tmp, out.contents);
    await rename(tmp, out.path);
    files.push(out.path);
  }
  const meta: Meta = {
    inputs: Object.keys(result.metafile.inputs).sort(),
    entries: [...BUNDLE_ENTRIES],
  };
  // Written last: a build interrupted before it leaves no meta, so the next check rebuilds.
  await writeFile(join(dir, META_FILE), JSON.stringify(meta), 'utf8');
  const warnings = result.warnings.map((w) => {
    const where = w.location === null ? '' : `${w.location.file}:${w.location.line}: `;
    return `${where}${w.text}`;
  });
  return { outDir: dir, files, warnings };
}

async function mtimeMs(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * Why the bundles in `outDir` must be (re)built, or undefined when they are current: one is
 * missing, or a file it was built from (source, dependency, this build script) changed since.
 */
export async function staleReason(
  outDir: string = DEFAULT_BUNDLE_DIR,
): Promise<string | undefined> {
  const dir = resolve(outDir);
  let meta: Meta;
  try {
    meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8')) as Meta;
  } catch {
    return `no build in ${relative(process.cwd(), dir) || '.'}`;
  }
  let oldest = Number.POSITIVE_INFINITY;
  for (const entry of BUNDLE_ENTRIES) {
    const built = await mtimeMs(bundlePath(entry, dir));
    if (built === undefined || !meta.entries.includes(entry)) return `${entry} is not built`;
    oldest = Math.min(oldest, built);
  }
  const inputs = [...meta.inputs, relative(REPO_ROOT, fileURLToPath(import.meta.url))];
  for (const input of inputs) {
    const changed = await mtimeMs(join(REPO_ROOT, input));
    if (changed === undefined) return `${input} is gone`;
    if (changed > oldest) return `${input} changed`;
  }
  return undefined;
}

/** Builds the bundles unless they are current; resolves with what it did, for the user. */
export async function ensureBundles(
  outDir: string = DEFAULT_BUNDLE_DIR,
): Promise<{ built: boolean; reason?: string; warnings: string[] }> {
  const reason = await staleReason(outDir);
  if (reason === undefined) return { built: false, warnings: [] };
  const { warnings } = await buildBundles(outDir);
  return { built: true, reason, warnings };
}
