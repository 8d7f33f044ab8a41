import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startKubeSim, Types } from '@plugline/kube-sim';
import type { KubeSim } from '@plugline/kube-sim';
import { placedVmi, spawnService, startNats } from '@plugline/testkit';
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

      // It watches only this node's VMIs, as virt-handler does: the API server sends it none of
      // another node's (the store counts a watch event as it hands it to the connection).
      const sent = () => sim.watchEventsSent('VirtualMachineInstance');
      const before = sent();
      for (const [name, node] of [
        ['elsewhere-1', 'node-2'],
        ['elsewhere-2', 'node-2'],
        ['here', 'node-1'],
      ] as const) {
        sim.store.create(Types.virtualmachineinstances, placedVmi(name, node), {
          namespace: 'default',
        });
      }
      expect(sent() - before).toBe(1);
      // Nor pods that are neither a launcher nor an attachment pod, on its node or not.
      const pods = sim.watchEventsSent('Pod');
      sim.store.create(
        Types.pods,
        {
          metadata: { name: 'unrelated' },
          spec: { nodeName: 'node-1', containers: [{ name: 'app', image: 'busybox' }] },
        },
        { namespace: 'default' },
      );
      expect(sim.watchEventsSent('Pod') - pods).toBe(0);
      proc.kill('SIGTERM');
      expect(await proc.exited).toEqual({ code: 0, signal: null });
    } finally {
      await proc.stop();
    }
  }, 40_000);
});
