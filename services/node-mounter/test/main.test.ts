import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startKubeSim, Types } from '@plugline/kube-sim';
import type { KubeSim } from '@plugline/kube-sim';
import { placedVmi, spawnService, startNats, waitFor } from '@plugline/testkit';
import type { NatsServer } from '@plugline/testkit';

/** `src/main.ts` as a process: one `ready` line, `/readyz`, `/metrics`, clean SIGTERM (config errors: decide.test.ts). */

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const tsx = join(repoRoot, 'node_modules/.bin/tsx');
const mainTs = join(repoRoot, 'services/node-mounter/src/main.ts');

let nats: NatsServer;
let sim: KubeSim;
let base: string;

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'plugline-nm-main-'));
  nats = await startNats();
  sim = await startKubeSim({ kubelet: false, kubeletRoot: join(base, 'kubelet') });
}, 30_000);

afterAll(async () => {
  await sim?.stop();
  await nats?.stop();
  if (base !== undefined) await rm(base, { recursive: true, force: true });
});

function env(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NATS_URL: nats.url,
    KUBECONFIG: sim.kubeconfigPath,
    NODE_NAME: 'node-1',
    KUBELET_ROOT: sim.kubeletRoot,
    PLUGLINE_STATE_DIR: join(base, 'state'),
    PLUGLINE_DEVICE_CGROUP_ROOT: '',
    HEALTH_PORT: '0',
    LOG_LEVEL: 'info',
    ...overrides,
  };
}

describe('node-mounter main', () => {
  it("logs one ready line, serves readiness and metrics, is sent only its own node's VMIs and KubeVirt pods, and exits 0 on SIGTERM", async () => {
    const proc = await spawnService(tsx, {
      args: [mainTs],
      cwd: repoRoot,
      env: env(),
      readyPattern: /"msg":"ready"/,
      readyTimeout: 30_000,
    });
    try {
      const line = proc
        .output()
        .split('\n')
        .find((l) => l.includes('"msg":"ready"'))!;
      const { healthUrl } = JSON.parse(line) as { healthUrl: string };
      expect(healthUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const ready = await fetch(`${healthUrl}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({
        ok: true,
        checks: { nats: true, consumer: true, informers: true },
      });
      expect(await (await fetch(`${healthUrl}/metrics`)).text()).toMatch(
        /plugline_messages_handled_total/,
      );
      expect(proc.output()).toMatch(/PLUGLINE_DEVICE_CGROUP_ROOT is not set/);

      // It watches only this node's VMIs, as virt-handler does, and only KubeVirt's pods on it:
      // the API server sends it none of the others (counted as the store hands an event to a
      // connection). The last VMI and pod are its own, so once both have been sent (a watch
      // that started late replays the rest in order), nothing else was.
      const sent = (kind: string) => sim.watchEventsSent(kind);
      const [vmisBefore, podsBefore] = [sent('VirtualMachineInstance'), sent('Pod')];
      const pod = (name: string, labels: Record<string, string>) => ({
        metadata: { name, labels },
        spec: { nodeName: 'node-1', containers: [{ name: 'app', image: 'busybox' }] },
      });
      const objects = [
        [Types.virtualmachineinstances, placedVmi('elsewhere-1', 'node-2')],
        [Types.virtualmachineinstances, placedVmi('elsewhere-2', 'node-2')],
        [Types.pods, pod('unrelated', { app: 'web' })],
        [Types.virtualmachineinstances, placedVmi('here', 'node-1')],
        [Types.pods, pod('virt-launcher-here', { 'kubevirt.io': 'virt-launcher' })],
      ] as const;
      for (const [type, object] of objects)
        sim.store.create(type, object, { namespace: 'default' });
      const vmisSent = () => sent('VirtualMachineInstance') - vmisBefore;
      const podsSent = () => sent('Pod') - podsBefore;
      await waitFor(() => vmisSent() >= 1 && podsSent() >= 1);
      expect([vmisSent(), podsSent()]).toEqual([1, 1]);
      proc.kill('SIGTERM');
      expect(await proc.exited).toEqual({ code: 0, signal: null });
    } finally {
      await proc.stop();
    }
  }, 40_000);
});
