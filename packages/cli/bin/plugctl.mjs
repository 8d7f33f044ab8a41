#!/usr/bin/env node
// plugctl (also installed as the kubectl plugin `kubectl-plugline`). Runs the bundle `pnpm build`
// and `plugctl up` write to dist/plugctl/ while no file it was built from has changed since: it
// starts in a fifth of the time. Otherwise, and for `up` (which finds the services beside its own
// sources), it runs the TypeScript sources through tsx's loader, so a fresh clone and a changed
// source work without a build step.
import { fileURLToPath } from 'node:url';
import { cliBundleStaleReason } from './cli-bundle.mjs';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const bundleDir = fileURLToPath(new URL('../../../dist/plugctl/', import.meta.url));
const fromBundle =
  process.argv[2] !== 'up' &&
  process.env.PLUGLINE_CLI_FROM_SOURCE !== '1' &&
  cliBundleStaleReason(bundleDir, repoRoot) === undefined;

if (fromBundle) {
  await import(new URL('../../../dist/plugctl/main.mjs', import.meta.url).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(new URL('../src/main.ts', import.meta.url).href);
}
