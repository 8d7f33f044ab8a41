import { cp, mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKubeSim, type KubeSim } from '@plugline/kube-sim';
import { spawnService, startNats, type NatsServer, type ServiceProcess } from '@plugline/testkit';
import { bundlePath, findReadyLine, staleReason } from '../src/index.js';

/**
 * `pnpm build` (the same entry, into a temporary folder): the bundled spec-watcher runs with plain
 * `node` from outside the repository, reports ready, serves `/readyz` and exits 0 on SIGTERM; and
 * the staleness check `plugctl up` relies on sees a current build as current and an old one as not.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
let work: string;
let outDir: string;
let nats: NatsServer;
let sim: KubeSim;
const processes: ServiceProcess[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'plugline-build-'));
  outDir = join(work, 'dist');
  const build = await spawnService(join(ROOT, 'node_modules', '.bin', 'tsx'), {
    args: ['packages/cli/src/build-main.ts', '--outdir', outDir],
    cwd: ROOT,
  });
  processes.push(build);
  const { code } = await build.exited;
  expect(code, build.output()).toBe(0);
  nats = await startNats();
  sim = await startKubeSim({ kubelet: false });
}, 300_000);

afterAll(async () => {
  await Promise.allSettled(processes.map((p) => p.stop()));
  await sim?.stop();
  await nats?.stop();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('pnpm build', { timeout: 120_000 }, () => {
  it('bundles a spec-watcher that starts with plain node, is ready, and stops on SIGTERM', async () => {
    // Copied away from the repository: the bundle needs no node_modules beside it.
    const alone = join(work, 'alone', 'spec-watcher.mjs');
    await cp(bundlePath('spec-watcher', outDir), alone);
    const proc = await spawnService(process.execPath, {
      args: [alone],
      cwd: work,
      env: { NATS_URL: nats.url, KUBECONFIG: sim.kubeconfigPath, LOG_LEVEL: 'info' },
      readyPattern: /"msg":"ready"/,
      readyTimeout: 60_000,
      stopSignal: 'SIGTERM',
    });
    processes.push(proc);
    const healthUrl = findReadyLine(proc.output());
    expect(healthUrl, proc.output()).toBeDefined();
    const readyz = await fetch(`${healthUrl}/readyz`);
    expect(readyz.status).toBe(200);

    proc.kill('SIGTERM');
    expect(await proc.exited).toEqual({ code: 0, signal: null });
  });

  it('is current right after the build, stale once a bundle is older than its sources', async () => {
    expect(await staleReason(outDir)).toBeUndefined();
    expect(await staleReason(join(work, 'nothing-here'))).toMatch(/^no build in /);
    const old = new Date(0);
    await utimes(bundlePath('node-mounter', outDir), old, old);
    expect(await staleReason(outDir)).toMatch(/ changed$/);
  });
});
