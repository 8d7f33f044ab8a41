import type { VirtualMachine, VirtualMachineInstance } from '@plugline/contracts';
import { NotFoundError, VirtualMachineInstancePhase } from '@plugline/contracts';
import type { Informer, KubeClient, RetryOptions } from '@plugline/kube';
import { retryOnConflict } from '@plugline/kube';
import { childLogger, type Logger } from '@plugline/telemetry';
import { diffTemplateToVmi } from './template.js';

/** What one declarative sync did. */
export type TemplateSyncResult = 'patched' | 'unchanged' | 'skipped';

export interface TemplateSyncOptions {
  client: Pick<KubeClient, 'getVm' | 'getVmi' | 'patchVmi'>;
  vms: Pick<Informer<VirtualMachine>, 'get'>;
  vmis: Pick<Informer<VirtualMachineInstance>, 'get'>;
  logger: Logger;
  retry?: RetryOptions;
}

async function optional<T>(read: Promise<T>): Promise<T | undefined> {
  try {
    return await read;
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

/**
 * KubeVirt's declarative hotplug: the hotpluggable volumes of a VM's `spec.template` are applied
 * to its running VMI (same namespace and name) with a JSON patch guarded by `test` ops on the
 * volumes and disks read ({@link diffTemplateToVmi}). A failed `test` (someone changed the VMI)
 * re-reads both objects from the API server and tries again. Syncs of one VM run one at a time.
 */
export class TemplateSync {
  readonly #o: TemplateSyncOptions;
  readonly #log: Logger;
  readonly #tails = new Map<string, Promise<void>>();
  /** VMs with a sync queued behind the running one (collapsed: one is enough). */
  readonly #queued = new Set<string>();

  constructor(options: TemplateSyncOptions) {
    this.#o = options;
    this.#log = childLogger(options.logger, { component: 'declarative-hotplug' });
  }

  /** Schedules a sync of the VM `namespace/name` (coalesced with one already waiting). */
  nudge(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const next = previous.then(async () => {
      this.#queued.delete(key);
      try {
        const result = await this.sync(namespace, name);
        if (result === 'patched') this.#log.info({ namespace, vm: name }, 'applied the template');
      } catch (err) {
        this.#log.warn({ err, namespace, vm: name }, 'declarative hotplug sync failed');
      }
    });
    this.#tails.set(key, next);
    void next.then(() => {
      if (this.#tails.get(key) === next) this.#tails.delete(key);
    });
  }

  /** Resolves when every queued sync has run. */
  async idle(): Promise<void> {
    while (this.#tails.size > 0) await Promise.all([...this.#tails.values()]);
  }

  /** Applies the VM's template hotplug volumes to its running VMI, once. */
  async sync(namespace: string, name: string): Promise<TemplateSyncResult> {
    const { client } = this.#o;
    return retryOnConflict(async (attempt) => {
      const [vm, vmi] =
        attempt === 1
          ? [this.#o.vms.get(namespace, name), this.#o.vmis.get(namespace, name)]
          : await Promise.all([
              optional(client.getVm(namespace, name)),
              optional(client.getVmi(namespace, name)),
            ]);
      if (vm === undefined || vmi === undefined) return 'skipped';
      if (vmi.status?.phase !== VirtualMachineInstancePhase.Running) return 'skipped';
      const ops = diffTemplateToVmi(vm, vmi);
      if (ops.length === 0) return 'unchanged';
      await client.patchVmi(namespace, name, ops);
      return 'patched';
    }, this.#o.retry);
  }
}
