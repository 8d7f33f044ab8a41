import type { Logger } from 'pino';
import { EventRecorder } from './recorder.js';
import { Types, apiVersionOf } from './resources.js';
import type { KubeObject } from './resources.js';
import type { Store, StoreWatch } from './store.js';
import { CSI_DRIVER } from './volumes.js';
import { cloneJson } from '@plugline/contracts';
import { Timers, WorkQueue } from './workqueue.js';

/** Annotations that steer the simulated storage (failure injection and timing). */
export const SimAnnotation = {
  /** On a PVC (or a DataVolume, copied to its PVC): never bind. */
  neverBind: 'sim.plugline.io/never-bind',
  /** On a DataVolume: the import fails. */
  importFails: 'sim.plugline.io/import-fails',
  /** On a DataVolume: how long the import takes, in ms. */
  importDurationMs: 'sim.plugline.io/import-duration-ms',
  /** On a PVC: `WaitForFirstConsumer` or `Immediate` binding. */
  bindingMode: 'sim.plugline.io/binding-mode',
} as const;

export const SELECTED_NODE = 'volume.kubernetes.io/selected-node';

type Obj = Record<string, unknown>;

export interface StorageControllerOptions {
  store: Store;
  logger: Logger;
  dataVolumeImportMs: number;
  /** Storage classes that bind on first consumer. */
  waitForFirstConsumerClasses: readonly string[];
  /** Keys (`ns/name`) of claims that never bind and DataVolumes whose import fails. */
  failures: { neverBind: Set<string>; importFails: Set<string> };
}

function ann(obj: KubeObject, key: string): string | undefined {
  return obj.metadata?.annotations?.[key];
}

function spec(obj: KubeObject): Obj {
  return (obj.spec ?? {}) as Obj;
}

function status(obj: KubeObject): Obj {
  return (obj.status ?? {}) as Obj;
}

/** Is this claim bound on first consumer rather than at once? */
export function waitsForConsumer(pvc: KubeObject, classes: readonly string[]): boolean {
  const mode = ann(pvc, SimAnnotation.bindingMode);
  if (mode) return mode === 'WaitForFirstConsumer';
  const cls = spec(pvc).storageClassName;
  return typeof cls === 'string' && classes.includes(cls);
}

/**
 * The persistent-volume binder and CDI's DataVolume import, simulated: a PVC gets a PV
 * `pvc-<uid>` and goes Bound; a DataVolume gets its PVC, then ImportScheduled →
 * ImportInProgress (progress) → Succeeded.
 */
export class StorageControllers {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly queue: WorkQueue;
  private readonly timers = new Timers();
  private readonly watches: StoreWatch[] = [];
  private readonly importing = new Set<string>();
  private readonly binder: EventRecorder;
  private readonly cdi: EventRecorder;

  constructor(private readonly opts: StorageControllerOptions) {
    this.store = opts.store;
    this.log = opts.logger.child({ component: 'storage-controllers' });
    this.queue = new WorkQueue((key) => this.reconcile(key), this.log);
    this.binder = new EventRecorder(this.store, 'persistentvolume-controller');
    this.cdi = new EventRecorder(this.store, 'datavolume-import-controller');
  }

  start(): void {
    const keyed = (prefix: string) => ({
      event: (e: { object: KubeObject }) =>
        this.queue.add(`${prefix}/${e.object.metadata?.namespace}/${e.object.metadata?.name}`),
      closed: () => undefined,
    });
    this.watches.push(
      this.store.watch(
        Types.persistentvolumeclaims,
        {},
        {
          event: (e) => {
            const { namespace, name } = e.object.metadata ?? {};
            this.queue.add(`pvc/${namespace}/${name}`);
            if (this.store.peek(Types.datavolumes, namespace, name ?? '')) {
              this.queue.add(`dv/${namespace}/${name}`);
            }
          },
          closed: () => undefined,
        },
      ),
    );
    this.watches.push(this.store.watch(Types.datavolumes, {}, keyed('dv')));
  }

  async stop(): Promise<void> {
    this.watches.forEach((w) => w.close());
    this.timers.cancelAll();
    await this.queue.drain();
  }

  private async reconcile(key: string): Promise<void> {
    const [kind, namespace, name] = key.split('/') as [string, string, string];
    if (kind === 'pvc') this.reconcileClaim(namespace, name);
    else await this.reconcileDataVolume(namespace, name);
  }

  private neverBinds(pvc: KubeObject, key: string): boolean {
    return ann(pvc, SimAnnotation.neverBind) === 'true' || this.opts.failures.neverBind.has(key);
  }

  private reconcileClaim(namespace: string, name: string): void {
    const pvc = this.store.peek(Types.persistentvolumeclaims, namespace, name);
    if (!pvc || pvc.metadata?.deletionTimestamp) return;
    if (status(pvc).phase === 'Bound' || this.neverBinds(pvc, `${namespace}/${name}`)) return;
    if (waitsForConsumer(pvc, this.opts.waitForFirstConsumerClasses) && !ann(pvc, SELECTED_NODE)) {
      return;
    }
    this.bind(pvc);
  }

  private bind(pvc: KubeObject): void {
    const meta = pvc.metadata!;
    const s = spec(pvc);
    const requests = ((s.resources as Obj | undefined)?.requests ?? {}) as Obj;
    const pvName = `pvc-${meta.uid}`;
    const node = ann(pvc, SELECTED_NODE);
    if (!this.store.peek(Types.persistentvolumes, undefined, pvName)) {
      const pv: KubeObject = {
        metadata: {
          name: pvName,
          annotations: { 'pv.kubernetes.io/provisioned-by': CSI_DRIVER },
          finalizers: ['kubernetes.io/pv-protection'],
        },
        spec: {
          capacity: { storage: requests.storage },
          accessModes: s.accessModes,
          volumeMode: s.volumeMode ?? 'Filesystem',
          persistentVolumeReclaimPolicy: 'Delete',
          storageClassName: s.storageClassName ?? '',
          claimRef: {
            apiVersion: 'v1',
            kind: 'PersistentVolumeClaim',
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
          },
          csi: { driver: CSI_DRIVER, volumeHandle: pvName, fsType: 'ext4' },
          ...(node
            ? {
                nodeAffinity: {
                  required: {
                    nodeSelectorTerms: [
                      {
                        matchExpressions: [
                          { key: 'kubernetes.io/hostname', operator: 'In', values: [node] },
                        ],
                      },
                    ],
                  },
                },
              }
            : {}),
        },
        status: { phase: 'Bound' },
      };
      this.store.create(Types.persistentvolumes, pv, { internal: true });
    }
    const bound = cloneJson(pvc);
    bound.spec = { ...s, volumeName: pvName };
    bound.metadata!.annotations = {
      ...meta.annotations,
      'pv.kubernetes.io/bind-completed': 'yes',
      'pv.kubernetes.io/bound-by-controller': 'yes',
    };
    const updated = this.store.update(Types.persistentvolumeclaims, meta.name!, bound, {
      namespace: meta.namespace,
    });
    this.store.update(
      Types.persistentvolumeclaims,
      meta.name!,
      {
        ...updated,
        status: {
          phase: 'Bound',
          accessModes: s.accessModes,
          capacity: { storage: requests.storage },
        },
      },
      { namespace: meta.namespace, subresource: 'status' },
    );
    this.binder.record(
      pvc,
      'Normal',
      'ProvisioningSucceeded',
      `Successfully provisioned volume ${pvName}`,
    );
  }

  /** Deletes the PV of a claim that went away (reclaim policy Delete). */
  releaseVolume(pvName: string): void {
    const pv = this.store.peek(Types.persistentvolumes, undefined, pvName);
    if (!pv) return;
    const next = cloneJson(pv);
    delete next.metadata!.finalizers;
    try {
      this.store.update(Types.persistentvolumes, pvName, next);
      if (this.store.peek(Types.persistentvolumes, undefined, pvName)) {
        this.store.delete(Types.persistentvolumes, undefined, pvName);
      }
    } catch (err) {
      this.log.debug({ err, pv: pvName }, 'PV already gone');
    }
  }

  private claimFor(dv: KubeObject): KubeObject | undefined {
    const meta = dv.metadata!;
    const existing = this.store.peek(Types.persistentvolumeclaims, meta.namespace, meta.name!);
    if (existing) return existing;
    const s = spec(dv);
    const source = (s.pvc ?? s.storage ?? {}) as Obj;
    const annotations: Record<string, string> = {};
    for (const [k, v] of Object.entries(meta.annotations ?? {})) {
      if (k.startsWith('sim.plugline.io/')) annotations[k] = v;
    }
    if (this.opts.failures.neverBind.has(`${meta.namespace}/${meta.name}`)) {
      annotations[SimAnnotation.neverBind] = 'true';
    }
    return this.store.create(
      Types.persistentvolumeclaims,
      {
        metadata: {
          name: meta.name,
          namespace: meta.namespace,
          labels: { app: 'containerized-data-importer', 'app.kubernetes.io/component': 'storage' },
          annotations,
          ownerReferences: [
            {
              apiVersion: apiVersionOf(Types.datavolumes),
              kind: 'DataVolume',
              name: meta.name!,
              uid: meta.uid!,
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
        },
        spec: {
          accessModes: source.accessModes ?? ['ReadWriteOnce'],
          resources: source.resources,
          volumeMode: source.volumeMode ?? 'Filesystem',
          ...(source.storageClassName ? { storageClassName: source.storageClassName } : {}),
        },
      },
      { namespace: meta.namespace },
    );
  }

  private setDvStatus(namespace: string, name: string, next: Obj): KubeObject | undefined {
    const dv = this.store.peek(Types.datavolumes, namespace, name);
    if (!dv) return undefined;
    return this.store.update(
      Types.datavolumes,
      name,
      { ...dv, status: { ...status(dv), ...next } },
      { namespace, subresource: 'status' },
    );
  }

  private async reconcileDataVolume(namespace: string, name: string): Promise<void> {
    const dv = this.store.peek(Types.datavolumes, namespace, name);
    if (!dv || dv.metadata?.deletionTimestamp) return;
    const phase = status(dv).phase;
    if (phase === 'Succeeded' || phase === 'Failed') return;
    const pvc = this.claimFor(dv);
    if (!pvc) return;
    if (status(pvc).phase !== 'Bound') {
      const wffc =
        waitsForConsumer(pvc, this.opts.waitForFirstConsumerClasses) && !ann(pvc, SELECTED_NODE);
      const want = wffc ? 'PendingPopulation' : 'Pending';
      if (phase !== want) {
        this.setDvStatus(namespace, name, {
          phase: want,
          progress: 'N/A',
          claimName: name,
          conditions: conditions('False', 'Pending', 'False'),
        });
      }
      // A change of the claim re-queues the DataVolume (see start()).
      return;
    }
    const uid = dv.metadata!.uid!;
    if (this.importing.has(uid)) return;
    this.importing.add(uid);
    try {
      await this.runImport(dv);
    } finally {
      this.importing.delete(uid);
    }
  }

  private durationOf(dv: KubeObject): number {
    const v = Number(ann(dv, SimAnnotation.importDurationMs));
    return Number.isFinite(v) && v >= 0 && ann(dv, SimAnnotation.importDurationMs) !== undefined
      ? v
      : this.opts.dataVolumeImportMs;
  }

  private async runImport(dv: KubeObject): Promise<void> {
    const { namespace, name } = dv.metadata! as { namespace: string; name: string };
    const fails =
      ann(dv, SimAnnotation.importFails) === 'true' ||
      this.opts.failures.importFails.has(`${namespace}/${name}`);
    const total = this.durationOf(dv);
    const steps = 4;
    const base = { claimName: name };
    const scheduled = this.setDvStatus(namespace, name, {
      ...base,
      phase: 'ImportScheduled',
      progress: 'N/A',
      conditions: conditions('True', 'ImportScheduled', 'False'),
    });
    if (scheduled)
      this.cdi.record(scheduled, 'Normal', 'ImportScheduled', `Import into ${name} scheduled`);
    for (let i = 0; i < steps; i++) {
      const progress = `${((100 * i) / steps).toFixed(2)}%`;
      if (
        !this.setDvStatus(namespace, name, {
          ...base,
          phase: 'ImportInProgress',
          progress,
          conditions: conditions('True', 'Pod is running', 'True'),
        })
      )
        return;
      if (fails && i === steps / 2) break;
      if (!(await this.timers.sleep(total / steps))) return;
    }
    const done = fails
      ? this.setDvStatus(namespace, name, {
          ...base,
          phase: 'Failed',
          conditions: conditions(
            'True',
            'Error',
            'False',
            'Unable to process data: simulated import failure',
          ),
        })
      : this.setDvStatus(namespace, name, {
          ...base,
          phase: 'Succeeded',
          progress: '100.0%',
          conditions: conditions('True', 'Completed', 'False'),
        });
    if (!done) return;
    if (fails)
      this.cdi.record(done, 'Warning', 'Error', 'Unable to process data: simulated import failure');
    else this.cdi.record(done, 'Normal', 'ImportSucceeded', 'Successfully imported into PVC');
  }
}

function conditions(bound: string, runningReason: string, running: string, message = ''): Obj[] {
  const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  const ready = runningReason === 'Completed' ? 'True' : 'False';
  return [
    {
      type: 'Bound',
      status: bound,
      reason: bound === 'True' ? 'Bound' : 'Pending',
      lastTransitionTime: now,
      lastHeartbeatTime: now,
    },
    {
      type: 'Ready',
      status: ready,
      reason: ready === 'True' ? '' : 'TransferRunning',
      lastTransitionTime: now,
      lastHeartbeatTime: now,
    },
    {
      type: 'Running',
      status: running,
      reason: runningReason,
      message,
      lastTransitionTime: now,
      lastHeartbeatTime: now,
    },
  ];
}
