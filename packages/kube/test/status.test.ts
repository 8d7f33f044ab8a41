import type { KubeConfig } from '@kubernetes/client-node';
import type { VirtualMachineInstance, VolumeStatus } from '@plugline/contracts';
import { NotFoundError } from '@plugline/contracts';
import { startKubeSim } from '@plugline/kube-sim';
import { waitFor } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient, Resources, StatusWriter, createInformer } from '../src/index.js';
import { createNamespace, createVmi, kubeConfigFor, memoryLogger } from './helpers.js';

type Sim = Awaited<ReturnType<typeof startKubeSim>>;

let sim: Sim;
let kc: KubeConfig;
let client: KubeClient;
let ns: string;

beforeAll(async () => {
  sim = await startKubeSim({ kubelet: false });
  kc = kubeConfigFor(sim.url);
  client = new KubeClient({ kc, fieldManager: 'plugline-test' });
  ns = await createNamespace(kc);
});

afterAll(async () => {
  await sim?.stop();
});

const pending = (name: string): VolumeStatus => ({
  name,
  target: '',
  phase: 'Pending',
  reason: 'PVCNotReady',
  message: `PVC ${name} is not bound`,
});

async function rvOf(name: string): Promise<string | undefined> {
  return (await client.getVmi(ns, name)).metadata.resourceVersion;
}

describe('StatusWriter', () => {
  it('writes a change and skips a write that changes nothing', async () => {
    await createVmi(kc, ns, 'writer-vmi');
    const writer = new StatusWriter({ client, logger: memoryLogger().logger });
    const setOne = (current: VolumeStatus[]) =>
      current.some((v) => v.name === 'disk-a') ? current : [...current, pending('disk-a')];

    const rv0 = await rvOf('writer-vmi');
    expect(await writer.writeVolumeStatus(ns, 'writer-vmi', setOne)).toBe(true);
    const rv1 = await rvOf('writer-vmi');
    expect(rv1).not.toBe(rv0);
    expect((await client.getVmi(ns, 'writer-vmi')).status?.volumeStatus).toEqual([
      pending('disk-a'),
    ]);

    // Same result (even in a fresh array with keys in another order): no write.
    const reordered = (current: VolumeStatus[]) =>
      current.map((v) => ({
        message: v.message,
        reason: v.reason,
        phase: v.phase,
        target: v.target,
        name: v.name,
      }));
    expect(await writer.writeVolumeStatus(ns, 'writer-vmi', reordered)).toBe(false);
    expect(await writer.writeVolumeStatus(ns, 'writer-vmi', setOne)).toBe(false);
    expect(await rvOf('writer-vmi')).toBe(rv1);

    // Removing the last entry removes the field.
    expect(await writer.writeVolumeStatus(ns, 'writer-vmi', () => [])).toBe(true);
    expect((await client.getVmi(ns, 'writer-vmi')).status?.volumeStatus).toBeUndefined();
    expect(await writer.writeVolumeStatus(ns, 'writer-vmi', () => [])).toBe(false);
  });

  it('retries on a conflict by re-reading and recomputing', async () => {
    await createVmi(kc, ns, 'conflict-vmi');
    const other = new KubeClient({ kc, fieldManager: 'someone-else' });
    let reads = 0;
    // The real client, with another writer's change landing right after our first read.
    const racingClient = {
      getVmi: async (namespace: string, name: string) => {
        const vmi = await client.getVmi(namespace, name);
        if (++reads === 1) {
          await other.patchVmiStatus(namespace, name, [
            { op: 'add', path: '/status', value: { volumeStatus: [pending('theirs')] } },
          ]);
        }
        return vmi;
      },
      patchVmiStatus: client.patchVmiStatus.bind(client),
    };
    const writer = new StatusWriter({ client: racingClient, logger: memoryLogger().logger });
    const seenByCompute: number[] = [];
    const wrote = await writer.writeVolumeStatus(ns, 'conflict-vmi', (current) => {
      seenByCompute.push(current.length);
      return [...current, pending('mine')];
    });
    expect(wrote).toBe(true);
    expect(reads).toBe(2);
    expect(seenByCompute).toEqual([0, 1]);
    const names = (await client.getVmi(ns, 'conflict-vmi')).status?.volumeStatus?.map(
      (v) => v.name,
    );
    expect(names).toEqual(['theirs', 'mine']);
  });

  it('reads from a stale informer cache, conflicts, and recovers with a GET', async () => {
    await createVmi(kc, ns, 'cached-vmi');
    const { logger } = memoryLogger();
    const informer = createInformer<VirtualMachineInstance>({
      kc,
      resource: Resources.virtualMachineInstances,
      namespace: ns,
      logger,
    });
    await informer.start();
    try {
      await waitFor(() => informer.get(ns, 'cached-vmi'), { description: 'cached' });
      await informer.stop(); // the cache is now frozen, so it goes stale
      await client.patchVmi(ns, 'cached-vmi', [
        { op: 'add', path: '/metadata/labels/bump', value: '1' },
      ]);
      const writer = new StatusWriter({ client, informer, logger });
      const reads: (string | undefined)[] = [];
      const wrote = await writer.writeVolumeStatus(ns, 'cached-vmi', (current, vmi) => {
        reads.push(vmi.metadata.labels?.bump);
        return [...current, pending('disk-c')];
      });
      expect(wrote).toBe(true);
      expect(reads).toEqual([undefined, '1']);
    } finally {
      await informer.stop();
    }
  });

  it('throws NotFoundError for a missing VMI', async () => {
    const writer = new StatusWriter({ client, logger: memoryLogger().logger });
    await expect(writer.writeVolumeStatus(ns, 'missing-vmi', (c) => c)).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });
});
