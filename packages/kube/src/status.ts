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
      // `vmi` is our own copy (the informer's `get` and a GET both make one): `compute` may
      // have it. The patch is built from what was read, before `compute` could change it.
      const vmi = await this.#read(namespace, name, attempt);
      const read = vmi.status?.volumeStatus ?? [];
      // Small copies of the list instead of a second copy of the whole VMI.
      const current = cloneJson(read);
      const patchFor = volumeStatusPatchFor(vmi);
      const next = compute(cloneJson(read), vmi);
      if (jsonEqual(current, next)) return false;
      await this.#o.client.patchVmiStatus(namespace, name, patchFor(next));
      this.#log.debug(
        { ns: namespace, vmi: name, attempt, volumes: next.length },
        'wrote volumeStatus',
      );
      return true;
    }, this.#o.retry);
  }

  async #read(namespace: string, name: string, attempt: number): Promise<VirtualMachineInstance> {
    const informer = this.#o.informer;
    if (attempt === 1 && informer?.synced) {
      const cached = informer.get(namespace, name);
      if (cached) return cached;
    }
    return this.#o.client.getVmi(namespace, name);
  }
}
