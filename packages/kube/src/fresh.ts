import { NotFoundError, type VirtualMachineInstance, type WorkItem } from '@plugline/contracts';
import type { KubeClient } from './client.js';

/** Where the VMI of a work item can be read: an informer cache, and the API server behind it. */
export interface VmiSources {
  cache: { get(namespace: string, name: string): VirtualMachineInstance | undefined };
  api: Pick<KubeClient, 'getVmi'>;
}

function specLists(vmi: VirtualMachineInstance, volume: string): boolean {
  return (vmi.spec.volumes ?? []).some((v) => v.name === volume);
}

/**
 * The VMI a work item is about, as it is now; undefined when it does not exist.
 *
 * The informer's copy is used unless it may lag behind what the item's sender saw: a generation
 * older than the item's, or a spec that disagrees with the item's direction (the sender saw the
 * volume leave the spec, and the cache still lists it — or the other way round). Acting on such a
 * stale copy would, for example, report an unplugged volume `ready` again and stall the unplug
 * until the next resync. Then the API server is asked; it is the truth.
 */
export async function currentVmi(
  sources: VmiSources,
  item: Pick<WorkItem, 'namespace' | 'vmi' | 'volume' | 'operation' | 'observedGeneration'>,
): Promise<VirtualMachineInstance | undefined> {
  const cached = sources.cache.get(item.namespace, item.vmi);
  const mayLag =
    cached === undefined ||
    (item.observedGeneration !== undefined &&
      (cached.metadata.generation ?? 0) < item.observedGeneration) ||
    specLists(cached, item.volume) !== (item.operation === 'plug');
  if (!mayLag) return cached;
  try {
    return await sources.api.getVmi(item.namespace, item.vmi);
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}
