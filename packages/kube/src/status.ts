import { cloneJson, type VirtualMachineInstance, type VolumeStatus } from '@plugline/contracts';
import type { Logger } from 'pino';
import type { KubeClient } from './client.js';
import type { Informer } from './informer.js';
import { jsonEqual } from './json.js';
import { retryOnConflict, type RetryOptions } from './retry.js';
import type { JsonPatchOp } from './types.js';

/**
 * Computes the wanted `status.volumeStatus` from the current one and the VMI. Both arguments
 * are copies: the function may mutate and return them. Must be pure: it runs again on conflict.
 */
export type VolumeStatusCompute = (
  current: VolumeStatus[],
  vmi: VirtualMachineInstance,
) => VolumeStatus[];

/** What {@link StatusWriter} needs. */
export interface StatusWriterOptions {
  client: Pick<KubeClient, 'getVmi' | 'patchVmiStatus'>;
  /** When given, the first read of each write comes from this cache; retries always GET. */
  informer?: Pick<Informer<VirtualMachineInstance>, 'get' | 'synced'>;
  logger: Logger;
  /** Conflict retries (default client-go's `DefaultRetry`). */
  retry?: RetryOptions;
}

/**
 * Builds the JSON patch that turns `vmi`'s volumeStatus (as it is now) into `next`, guarded by
 * its resourceVersion. What it needs of `vmi` is taken at once, so `vmi` may change afterwards.
 */
function volumeStatusPatchFor(
  vmi: VirtualMachineInstance,
): (next: VolumeStatus[]) => JsonPatchOp[] {
  const rv = vmi.metadata.resourceVersion;
  const hasStatus = vmi.status !== undefined;
  const hasVolumeStatus = vmi.status?.volumeStatus !== undefined;
  return (next) => {
    const ops: JsonPatchOp[] = [{ op: 'test', path: '/metadata/resourceVersion', value: rv }];
    if (!hasStatus) {
      ops.push({ op: 'add', path: '/status', value: { volumeStatus: next } });
    } else if (!hasVolumeStatus) {
      ops.push({ op: 'add', path: '/status/volumeStatus', value: next });
    } else if (next.length === 0) {
      ops.push({ op: 'remove', path: '/status/volumeStatus' });
    } else {
      ops.push({ op: 'replace', path: '/status/volumeStatus', value: next });
    }
    return ops;
  };
}

/**
 * The single writer of `vmi.status.volumeStatus`: reads, computes, skips the write when nothing
 * changed, otherwise JSON-patches the status subresource guarded by a `test` of the
 * resourceVersion it read, and on a conflict re-reads (GET) and computes again.
 */
export class StatusWriter {
  readonly #o: StatusWriterOptions;
  readonly #log: Logger;

  constructor(options: StatusWriterOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'status-writer' });
  }

  /**
   * Applies `compute` to the VMI's volumeStatus. Resolves true when it wrote, false when the
   * result equalled the current status.
   *
   * @throws NotFoundError when the VMI does not exist; ConflictError when conflicts outlast the retries.
   */
  async writeVolumeStatus(
    namespace: string,
    name: string,
    compute: VolumeStatusCompute,
  ): Promise<boolean> {
    return retryOnConflict(async (attempt) => {
      const cached = this.#cached(namespace, name, attempt);
      let computed = computeOn(cached ?? (await this.#o.client.getVmi(namespace, name)), compute);
      if (computed.next === undefined && cached !== undefined) {
        // "Nothing to change" from the cache is not known to hold for the status as it is: with
        // the cache a moment behind this writer's own last write, an event's effect could be
        // acked unwritten while the caller (the projector) took it for applied. A write that
        // changes something is guarded by the resourceVersion it read; this verdict is checked
        // against the API server's copy.
        const fresh = await this.#o.client.getVmi(namespace, name);
        if (fresh.metadata.resourceVersion !== cached.metadata.resourceVersion)
          computed = computeOn(fresh, compute);
      }
      const { next, patchFor } = computed;
      if (next === undefined) return false;
      await this.#o.client.patchVmiStatus(namespace, name, patchFor(next));
      this.#log.debug(
        { ns: namespace, vmi: name, attempt, volumes: next.length },
        'wrote volumeStatus',
      );
      return true;
    }, this.#o.retry);
  }

  /** The informer's copy, for a write's first attempt only (retries always GET). */
  #cached(namespace: string, name: string, attempt: number): VirtualMachineInstance | undefined {
    const informer = this.#o.informer;
    return attempt === 1 && informer?.synced === true ? informer.get(namespace, name) : undefined;
  }
}

/**
 * `compute` applied to what was read: the new list, undefined when it equals the current one,
 * and the patch guarded by the resourceVersion read. `vmi` is our own copy (the informer's `get`
 * and a GET both make one): `compute` may have it. The patch is built from what was read, before
 * `compute` could change it.
 */
function computeOn(
  vmi: VirtualMachineInstance,
  compute: VolumeStatusCompute,
): { next: VolumeStatus[] | undefined; patchFor: (next: VolumeStatus[]) => JsonPatchOp[] } {
  const read = vmi.status?.volumeStatus ?? [];
  // Small copies of the list instead of a second copy of the whole VMI.
  const current = cloneJson(read);
  const patchFor = volumeStatusPatchFor(vmi);
  const next = compute(cloneJson(read), vmi);
  return { next: jsonEqual(current, next) ? undefined : next, patchFor };
}
