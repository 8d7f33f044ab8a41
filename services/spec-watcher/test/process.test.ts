import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, StreamName } from '@plugline/bus';
import type { Bus } from '@plugline/bus';
import { encodeToken, Stage } from '@plugline/contracts';
import type { VirtualMachineInstance, VolumeEvent, WorkItem } from '@plugline/contracts';
import { startKubeSim, Types } from '@plugline/kube-sim';
import type { KubeObject, KubeSim } from '@plugline/kube-sim';
import { spawnService, startNats, waitFor } from '@plugline/testkit';
import type { NatsServer, ServiceProcess } from '@plugline/testkit';

/**
 * `main.ts` as a process: it announces readiness with one JSON line, serves `/readyz`, survives
 * a `kill -9` right after deciding a plug (the next process re-sends the work under the same
 * operation id), and exits 0 on SIGTERM.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const ns = `swp-${randomBytes(4).toString('hex')}`;
const vmiName = `vm-${randomBytes(3).toString('hex')}`;
const decoder = new TextDecoder();

let nats: NatsServer;
let sim: KubeSim;
let bus: Bus;
const processes: ServiceProcess[] = [];

async function spawnWatcher(): Promise<{ proc: ServiceProcess; healthUrl: string }> {
  const proc = await spawnService('node_modules/.bin/tsx', {
    args: ['services/spec-watcher/src/main.ts'],
    cwd: ROOT,
    env: {
      NATS_URL: nats.url,
      KUBECONFIG: sim.kubeconfigPath,
      LOG_LEVEL: 'info',
      PLUGLINE_LEASE_TTL_MS: '1000',
      PLUGLINE_ACK_WAIT_MS: '5000',
    },
    readyPattern: /"msg":"ready"/,
    readyTimeout: 30_000,
  });
  processes.push(proc);
  const line =
    proc
      .output()
      .split('\n')
      .find((l) => l.includes('"msg":"ready"')) ?? '';
  const { healthUrl } = JSON.parse(line) as { healthUrl: string };
  return { proc, healthUrl };
}

function getVmi(): VirtualMachineInstance {
  return sim.store.get(
    Types.virtualmachineinstances,
    ns,
    vmiName,
  ) as unknown as VirtualMachineInstance;
}

async function stored<T>(stream: string, prefix: string): Promise<T[]> {
  const info = await bus.jsm.streams.info(stream);
  const out: T[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && seq > 0; seq++) {
    const m = await bus.jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null && m.subject.startsWith(prefix))
      out.push(JSON.parse(decoder.decode(m.data)) as T);
  }
  return out;
}

beforeAll(async () => {
  nats = await startNats();
  sim = await startKubeSim({ kubelet: false, namespaces: [ns] });
  bus = await connectBus({ servers: nats.url });
  sim.store.create(
    Types.virtualmachineinstances,
    {
      metadata: { name: vmiName },
      spec: {
        domain: { devices: { disks: [{ name: 'root', disk: { bus: 'virtio' } }] } },
        volumes: [{ name: 'root', containerDisk: { image: 'quay.io/containerdisks/fedora' } }],
      },
    },
    { namespace: ns },
  );
  sim.store.update(
    Types.virtualmachineinstances,
    vmiName,
    { ...(getVmi() as unknown as KubeObject), status: { phase: 'Running', nodeName: 'node-1' } },
    { namespace: ns, subresource: 'status' },
  );
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(processes.map((p) => p.stop()));
  await bus?.close();
  await sim?.stop();
  await nats?.stop();
});

describe('spec-watcher process', { timeout: 90_000 }, () => {
  it('is ready, survives kill -9 mid-way with the same operation id, and stops on SIGTERM', async () => {
    const first = await spawnWatcher();
    const readyz = await fetch(`${first.healthUrl}/readyz`);
    expect(readyz.status).toBe(200);
    expect(await readyz.json()).toMatchObject({
      ok: true,
      checks: { nats: true, consumers: true, informers: true },
    });
    // Added after the first process started: its start-up resync never saw the volume, so a
    // `resync` work item can only come from the second process.
    const vmi = structuredClone(getVmi());
    vmi.spec.volumes = [
      ...(vmi.spec.volumes ?? []),
      { name: 'data1', persistentVolumeClaim: { claimName: 'c1', hotpluggable: true } },
    ];
    vmi.spec.domain.devices.disks = [
      ...(vmi.spec.domain.devices.disks ?? []),
      { name: 'data1', disk: { bus: 'scsi' } },
    ];
    sim.store.update(Types.virtualmachineinstances, vmiName, vmi as unknown as KubeObject, {
      namespace: ns,
    });
    const prefix = `plugline.v1.events.${encodeToken(ns)}.${encodeToken(vmiName)}.data1.`;
    const requested = await waitFor(
      async () =>
        (await stored<VolumeEvent>(StreamName.Events, prefix)).find((e) =>
          e.type.endsWith('.requested'),
        ),
      { timeout: 20_000, description: 'requested' },
    );
    first.proc.kill('SIGKILL');
    await first.proc.exited;

    const second = await spawnWatcher();
    const work = await waitFor(
      async () =>
        (
          await stored<WorkItem>(
            StreamName.Work,
            `plugline.v1.work.${Stage.AttachmentOrchestrator}.`,
          )
        ).find((w) => w.vmi === vmiName && w.cause === 'resync'),
      { timeout: 20_000, description: 'resync work' },
    );
    expect(work.operationId).toBe(requested.data.operationId);
    const requests = (await stored<VolumeEvent>(StreamName.Events, prefix)).filter((e) =>
      e.type.endsWith('.requested'),
    );
    expect(requests.map((e) => e.data.operationId)).toEqual([requested.data.operationId]);
    // The projector of either process rendered the request.
    await waitFor(() => getVmi().status?.volumeStatus?.some((s) => s.name === 'data1'), {
      timeout: 20_000,
    });

    second.proc.kill('SIGTERM');
    expect(await second.proc.exited).toEqual({ code: 0, signal: null });
  });
});
