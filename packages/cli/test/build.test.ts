import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKubeSim, type KubeSim } from '@plugline/kube-sim';
import { spawnService, startNats, type NatsServer, type ServiceProcess } from '@plugline/testkit';
import { KubeConfig } from '@kubernetes/client-node';
import { cliBundleStaleReason } from '../bin/cli-bundle.mjs';
import {
  bundlePath,
  cliBundleDir,
  createPvc,
  createRunningVmi,
  ensureNamespace,
  findReadyLine,
  staleReason,
} from '../src/index.js';

/**
 * `pnpm build` (the same entry, into a temporary folder): the bundled spec-watcher runs with plain
 * `node` from outside the repository, reports ready, serves `/readyz` and exits 0 on SIGTERM; the
 * bundled plugctl adds and lists a volume; and the staleness checks `plugctl up` and plugctl's
 * launcher rely on see a current build as current and an old one as not.
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

/** The bundled plugctl, run with plain node as bin/plugctl.mjs runs it. */
function bundledPlugctl(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(cliBundleDir(outDir), 'main.mjs'), ...args],
      { cwd: work, env: { ...process.env, ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('pnpm build: plugctl', { timeout: 120_000 }, () => {
  let withKubelet: KubeSim;
  beforeAll(async () => {
    withKubelet = await startKubeSim({ nodes: ['node-1'] });
  });
  afterAll(async () => {
    await withKubelet?.stop();
  });

  it('bundles the client commands: addvolume and status work with plain node', async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(withKubelet.kubeconfigPath);
    await ensureNamespace(kc, 'bundled');
    await createRunningVmi(kc, { namespace: 'bundled', name: 'vm', node: 'node-1' });
    await createPvc(kc, { namespace: 'bundled', name: 'data', mode: 'Filesystem' });
    const env = { KUBECONFIG: withKubelet.kubeconfigPath, NATS_URL: nats.url };

    const added = await bundledPlugctl(
      ['addvolume', 'vm', '--volume-name=data', '-n', 'bundled'],
      env,
    );
    expect(added, added.stderr).toMatchObject({ code: 0 });
    expect(added.stdout).toBe(
      'Successfully submitted add volume request to VM vm for volume data\n',
    );
    const status = await bundledPlugctl(['status', 'vm', '-n', 'bundled', '-o', 'json'], env);
    expect(status.code, status.stderr).toBe(0);
    const doc = JSON.parse(status.stdout) as { volumes: { name: string; hotpluggable: boolean }[] };
    expect(doc.volumes.find((v) => v.name === 'data')?.hotpluggable).toBe(true);
  });

  it('leaves `up` to the sources, and says so', async () => {
    const r = await bundledPlugctl(['up'], {});
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'plugctl up runs from the sources: start it with packages/cli/bin/plugctl.mjs up\n',
    );
  });

  it('is current right after the build, stale once an input is newer than the bundle', async () => {
    const dir = cliBundleDir(outDir);
    expect(cliBundleStaleReason(dir, ROOT)).toBeUndefined();
    expect(cliBundleStaleReason(join(work, 'nothing-here'), ROOT)).toMatch(/^no build in /);
    // The services' bundles current (the test above aged one), plugctl's old: `up` rebuilds too.
    const now = new Date();
    await utimes(bundlePath('node-mounter', outDir), now, now);
    expect(await staleReason(outDir)).toBeUndefined();
    const old = new Date(0);
    await utimes(join(dir, 'main.mjs'), old, old);
    expect(cliBundleStaleReason(dir, ROOT)).toMatch(/ changed$/);
    expect(await staleReason(outDir)).toMatch(/^plugctl: .* changed$/);
  });
});
