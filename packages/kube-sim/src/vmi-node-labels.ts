import { KubevirtLabel } from '@plugline/contracts';
import type { Logger } from 'pino';
import { Types } from './resources.js';
import type { KubeObject } from './resources.js';
import { PatchType } from './store.js';
import type { Store, StoreWatch } from './store.js';
import { WorkQueue } from './workqueue.js';

/**
 * What virt-controller does for a VMI once it is scheduled, simulated: it labels the VMI with
 * its node (`kubevirt.io/nodeName`), and relabels it when `status.nodeName` changes. Node agents
 * (virt-handler, our node-mounter and domain-updater) watch only their node's VMIs through it.
 * A VMI that has no node yet keeps whatever label it has, as in KubeVirt.
 */
export class VmiNodeLabels {
  private readonly queue: WorkQueue;
  private watch: StoreWatch | undefined;

  constructor(
    private readonly store: Store,
    logger: Logger,
  ) {
    const log = logger.child({ component: 'vmi-node-labels' });
    this.queue = new WorkQueue((key) => Promise.resolve(this.reconcile(key)), log);
  }

  start(): void {
    this.watch = this.store.watch(
      Types.virtualmachineinstances,
      {},
      {
        event: (e) => {
          if (e.type === 'DELETED' || labelNeeded(e.object) === undefined) return;
          const { namespace, name } = e.object.metadata ?? {};
          this.queue.add(`${namespace}/${name}`);
        },
        closed: () => undefined,
      },
    );
  }

  async stop(): Promise<void> {
    this.watch?.close();
    await this.queue.drain();
  }

  private reconcile(key: string): void {
    const [namespace, name] = key.split('/') as [string, string];
    const vmi = this.store.peek(Types.virtualmachineinstances, namespace, name);
    if (!vmi || vmi.metadata?.deletionTimestamp) return;
    const node = labelNeeded(vmi);
    if (node === undefined) return;
    this.store.patch(
      Types.virtualmachineinstances,
      name,
      PatchType.Merge,
      { metadata: { labels: { [KubevirtLabel.NodeName]: node } } },
      { namespace },
    );
  }
}

/** The node the VMI's label should name, when it names another (or none). */
function labelNeeded(vmi: KubeObject): string | undefined {
  const node = (vmi.status as { nodeName?: unknown } | undefined)?.nodeName;
  if (typeof node !== 'string' || node === '') return undefined;
  return vmi.metadata?.labels?.[KubevirtLabel.NodeName] === node ? undefined : node;
}
