import type { VirtualMachineInstance, VolumeStatus } from '@plugline/contracts';
import { NotFoundError } from '@plugline/contracts';
import { waitFor } from '@plugline/testkit';
import { describe, expect, it } from 'vitest';
import { KubeClient, Resources, StatusWriter, createInformer } from '../src/index.js';
import { createVmi, memoryLogger } from './helpers.js';
import { useKubeSim } from './sim.js';

const env = useKubeSim();

const pending = (name: string): VolumeStatus => ({
  name,
  target: '',
  phase: 'Pending',
  reason: 'PVCNotReady',
  message: `PVC ${name} is not bound`,
});

async function rvOf(name: string): Promise<string | undefined> {
  return (await env.client.getVmi(env.ns, name)).metadata.resourceVersion;
}

/**
 * A new VMI and an informer cache that holds it and then stops: it misses every change made
 * after, so it goes stale.
 */
async function frozenCacheOf(name: string) {
  await createVmi(env.kc, env.ns, name);
  const { logger } = memoryLogger();
  const informer = createInformer<VirtualMachineInstance>({
    kc: env.kc,
    resource: Resources.virtualMachineInstances,
    namespace: env.ns,
    logger,
  });
  await informer.start();
  try {
    await waitFor(() => informer.get(env.ns, name), { description: 'cached' });
  } finally {
    await informer.stop();
  }
  return { informer, logger };
}

describe('StatusWriter', () => {
  it('writes a change and skips a write that changes nothing', async () => {
    await createVmi(env.kc, env.ns, 'writer-vmi');
    const writer = new StatusWriter({ client: env.client, logger: memoryLogger().logger });
    const setOne = (current: VolumeStatus[]) =>
      current.some((v) => v.name === 'disk-a') ? current : [...current, pending('disk-a')];

    const rv0 = await rvOf('writer-vmi');
    expect(await writer.writeVolumeStatus(env.ns, 'writer-vmi', setOne)).toBe(true);
    const rv1 = await rvOf('writer-vmi');
    expect(rv1).not.toBe(rv0);
    expect((await env.client.getVmi(env.ns, 'writer-vmi')).status?.volumeStatus).toEqual([
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
    expect(await writer.writeVolumeStatus(env.ns, 'writer-vmi', reordered)).toBe(false);
    expect(await writer.writeVolumeStatus(env.ns, 'writer-vmi', setOne)).toBe(false);
    expect(await rvOf('writer-vmi')).toBe(rv1);

    // Removing the last entry removes the field.
    expect(await writer.writeVolumeStatus(env.ns, 'writer-vmi', () => [])).toBe(true);
    expect((await env.client.getVmi(env.ns, 'writer-vmi')).status?.volumeStatus).toBeUndefined();
    expect(await writer.writeVolumeStatus(env.ns, 'writer-vmi', () => [])).toBe(false);
  });

  it('retries on a conflict by re-reading and recomputing', async () => {
    await createVmi(env.kc, env.ns, 'conflict-vmi');
    const other = new KubeClient({ kc: env.kc, fieldManager: 'someone-else' });
    let reads = 0;
    // The real client, with another writer's change landing right after our first read.
    const racingClient = {
      getVmi: async (namespace: string, name: string) => {
        const vmi = await env.client.getVmi(namespace, name);
        if (++reads === 1) {
          await other.patchVmiStatus(namespace, name, [
            { op: 'add', path: '/status', value: { volumeStatus: [pending('theirs')] } },
          ]);
        }
        return vmi;
      },
      patchVmiStatus: env.client.patchVmiStatus.bind(env.client),
    };
    const writer = new StatusWriter({ client: racingClient, logger: memoryLogger().logger });
    const seenByCompute: number[] = [];
    const wrote = await writer.writeVolumeStatus(env.ns, 'conflict-vmi', (current) => {
      seenByCompute.push(current.length);
      return [...current, pending('mine')];
    });
    expect(wrote).toBe(true);
    expect(reads).toBe(2);
    expect(seenByCompute).toEqual([0, 1]);
    const names = (await env.client.getVmi(env.ns, 'conflict-vmi')).status?.volumeStatus?.map(
      (v) => v.name,
    );
    expect(names).toEqual(['theirs', 'mine']);
  });

  it('reads from a stale informer cache, conflicts, and recovers with a GET', async () => {
    const { informer, logger } = await frozenCacheOf('cached-vmi');
    await env.client.patchVmi(env.ns, 'cached-vmi', [
      { op: 'add', path: '/metadata/labels/bump', value: '1' },
    ]);
    const writer = new StatusWriter({ client: env.client, informer, logger });
    const reads: (string | undefined)[] = [];
    const wrote = await writer.writeVolumeStatus(env.ns, 'cached-vmi', (current, vmi) => {
      reads.push(vmi.metadata.labels?.bump);
      return [...current, pending('disk-c')];
    });
    expect(wrote).toBe(true);
    expect(reads).toEqual([undefined, '1']);
  });

  it('checks "nothing to change" from a stale cache against the API server, and writes what the status needs', async () => {
    const { informer, logger } = await frozenCacheOf('behind-vmi');
    const writer = new StatusWriter({ client: env.client, informer, logger });
    const addOld = (current: VolumeStatus[]) => [...current, pending('old')];
    // Written through a writer without the cache: the frozen cache never shows it.
    const direct = new StatusWriter({ client: env.client, logger });
    expect(await direct.writeVolumeStatus(env.ns, 'behind-vmi', addOld)).toBe(true);
    // Against the cache (no entries) dropping `old` changes nothing; against the status it does.
    const dropOld = (current: VolumeStatus[]) => current.filter((v) => v.name !== 'old');
    expect(await writer.writeVolumeStatus(env.ns, 'behind-vmi', dropOld)).toBe(true);
    const status = (await env.client.getVmi(env.ns, 'behind-vmi')).status?.volumeStatus;
    expect(status ?? []).toEqual([]);
    // A verdict the API server's copy confirms stays: no write.
    const rv = await rvOf('behind-vmi');
    expect(await writer.writeVolumeStatus(env.ns, 'behind-vmi', (c) => c)).toBe(false);
    expect(await rvOf('behind-vmi')).toBe(rv);
  });

  it('throws NotFoundError for a missing VMI', async () => {
    const writer = new StatusWriter({ client: env.client, logger: memoryLogger().logger });
    await expect(writer.writeVolumeStatus(env.ns, 'missing-vmi', (c) => c)).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });
});
