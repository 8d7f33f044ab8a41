/**
 * The orchestrator's view of the cluster: informers on VMIs, PVCs, DataVolumes, launcher and
 * attachment pods; `observe` reads one VMI's world from their caches, and a change of any of
 * them is turned into a nudge for the VMIs it concerns (that is how the service waits without
 * polling).
 */
import type { KubeConfig } from '@kubernetes/client-node';
import {
  claimNameOf,
  HOTPLUG_DISK_LABEL_VALUE,
  isHotpluggable,
  KubevirtLabel,
  LAUNCHER_LABEL_VALUE,
  type VirtualMachineInstance,
} from '@plugline/contracts';
import { createInformer, Resources, type DataVolume, type Informer } from '@plugline/kube';
import type { Logger } from '@plugline/telemetry';
import type { Pod } from './pod.js';
import type { PersistentVolumeClaim } from './pvc.js';
import type { Observation, VmiRef } from './reconcile.js';
import { NudgeCause, phaseClassOf } from './reconcile.js';

type CachedPod = Pod & { metadata: { namespace?: string } };
type CachedPvc = PersistentVolumeClaim & {
  metadata: { namespace?: string; resourceVersion?: string };
};
type CachedDv = DataVolume;

/** A change that concerns a VMI: the service turns it into a work item for the VMI. */
export interface Nudge {
  vmi: VirtualMachineInstance;
  cause: NudgeCause;
  /** Identifies the change (dedup): the changed object's kind, UID and resourceVersion. */
  change: string;
  /** A volume the change concerns, when known. */
  volume?: string;
}

export interface ClusterView {
  observe(vmi: VmiRef): Observation;
  /** Every VMI with hotplug volumes, status entries or attachment pods (for the start resync). */
  vmisToReconcile(): VirtualMachineInstance[];
  /** Starts the informers; resolves once all are synced. */
  start(): Promise<void>;
  stop(): Promise<void>;
  synced(): boolean;
}

const hotplugNames = (vmi: VirtualMachineInstance): string[] =>
  (vmi.spec.volumes ?? []).filter(isHotpluggable).map((v) => v.name);

const claimsOf = (vmi: VirtualMachineInstance): string[] =>
  (vmi.spec.volumes ?? []).filter(isHotpluggable).flatMap((v) => claimNameOf(v) ?? []);

const terminating = (pod: Pod): boolean => pod.metadata.deletionTimestamp !== undefined;

const isAttachmentPodOf = (pod: Pod, vmiUid: string | undefined): boolean =>
  pod.metadata.labels?.[KubevirtLabel.App] === HOTPLUG_DISK_LABEL_VALUE &&
  pod.metadata.annotations?.[KubevirtLabel.OwnerVmiUid] === vmiUid;

const isLauncherPodOf = (pod: Pod, vmiUid: string | undefined): boolean =>
  pod.metadata.labels?.[KubevirtLabel.App] === LAUNCHER_LABEL_VALUE &&
  pod.metadata.labels[KubevirtLabel.CreatedBy] === vmiUid;

/**
 * What about a VMI makes a difference to the orchestrator (its spec volumes, phases as far as a
 * reconcile tells them apart, life): a status change that leaves this as it was nudges nothing.
 */
function vmiDigest(vmi: VirtualMachineInstance): string {
  return JSON.stringify([
    (vmi.spec.volumes ?? []).filter(isHotpluggable),
    (vmi.status?.volumeStatus ?? []).map((s) => [
      s.name,
      phaseClassOf(s.phase),
      s.hotplugVolume?.attachPodUID,
    ]),
    vmi.status?.phase,
    vmi.status?.activePods,
    vmi.metadata.deletionTimestamp,
  ]);
}

function podDigest(pod: Pod): string {
  return JSON.stringify([
    pod.status?.phase,
    pod.status?.containerStatuses?.map((c) => c.ready),
    pod.spec?.nodeName,
    pod.metadata.deletionTimestamp,
  ]);
}

function pvcDigest(pvc: CachedPvc): string {
  return JSON.stringify([pvc.status?.phase, (pvc.spec as { volumeName?: string })?.volumeName]);
}

function dvDigest(dv: CachedDv): string {
  return JSON.stringify([dv.status?.phase, dv.status?.progress]);
}

/** The launcher pod of a VMI: by `kubevirt.io/created-by`, preferring active, live, on its node. */
export function findLauncher(
  pods: readonly CachedPod[],
  vmi: VirtualMachineInstance,
): Pod | undefined {
  const uid = vmi.metadata.uid;
  const mine = pods.filter(
    (p) => p.metadata.namespace === vmi.metadata.namespace && isLauncherPodOf(p, uid),
  );
  const active = vmi.status?.activePods ?? {};
  const score = (p: Pod): number =>
    (terminating(p) ? 0 : 4) +
    (p.metadata.uid !== undefined && p.metadata.uid in active ? 2 : 0) +
    (p.spec?.nodeName !== undefined && p.spec.nodeName === vmi.status?.nodeName ? 1 : 0);
  return [...mine].sort((a, b) => score(b) - score(a))[0];
}

export interface ClusterViewOptions {
  kc: KubeConfig;
  logger: Logger;
  /** Watch one namespace; all when absent. */
  namespace?: string;
  onNudge: (nudge: Nudge) => void;
}

class InformerClusterView implements ClusterView {
  readonly #vmis: Informer<VirtualMachineInstance>;
  readonly #pods: Informer<CachedPod>;
  readonly #pvcs: Informer<CachedPvc>;
  readonly #dvs: Informer<CachedDv>;
  readonly #digests = new Map<string, string>();
  readonly #onNudge: (nudge: Nudge) => void;
  #ready = false;

  constructor(o: ClusterViewOptions) {
    const common = {
      kc: o.kc,
      logger: o.logger,
      ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
    };
    this.#onNudge = o.onNudge;
    this.#vmis = createInformer({ ...common, resource: Resources.virtualMachineInstances });
    this.#pods = createInformer({
      ...common,
      resource: Resources.pods,
      labelSelector: `${KubevirtLabel.App} in (${LAUNCHER_LABEL_VALUE},${HOTPLUG_DISK_LABEL_VALUE})`,
    });
    this.#pvcs = createInformer({ ...common, resource: Resources.persistentVolumeClaims });
    this.#dvs = createInformer({ ...common, resource: Resources.dataVolumes });
    this.#wire(this.#vmis, vmiDigest, (vmi) => [vmi], NudgeCause.Vmi);
    this.#wire(this.#pods, podDigest, (pod) => this.#vmisOfPod(pod), NudgeCause.Pod);
    this.#wire(
      this.#pvcs,
      pvcDigest,
      (pvc) => this.#vmisOfClaim(pvc.metadata.namespace, pvc.metadata.name),
      NudgeCause.Pvc,
    );
    this.#wire(
      this.#dvs,
      dvDigest,
      (dv) => this.#vmisOfClaim(dv.metadata.namespace, dv.metadata.name),
      NudgeCause.DataVolume,
    );
  }

  #wire<T extends { metadata?: { uid?: string; resourceVersion?: string; name?: string } }>(
    informer: Informer<T>,
    digest: (obj: T) => string,
    vmisOf: (obj: T) => VirtualMachineInstance[],
    cause: NudgeCause,
  ): void {
    const handle = (obj: T, deleted: boolean): void => {
      const key = `${cause}:${obj.metadata?.uid ?? obj.metadata?.name ?? ''}`;
      const d = deleted ? 'deleted' : digest(obj);
      const same = this.#digests.get(key) === d;
      if (deleted) this.#digests.delete(key);
      else this.#digests.set(key, d);
      if (same || !this.#ready) return;
      const change = `${obj.metadata?.uid ?? ''}-${obj.metadata?.resourceVersion ?? ''}${deleted ? '-d' : ''}`;
      for (const vmi of vmisOf(obj)) this.#onNudge({ vmi, cause, change });
    };
    informer.onAdd((obj) => handle(obj, false));
    informer.onUpdate((obj) => handle(obj, false));
    informer.onDelete((obj) => handle(obj, true));
  }

  #vmisOfClaim(namespace: string | undefined, claim: string | undefined): VirtualMachineInstance[] {
    if (claim === undefined) return [];
    return this.#vmis.list(
      (vmi) => vmi.metadata.namespace === namespace && claimsOf(vmi).includes(claim),
    );
  }

  #vmisOfPod(pod: CachedPod): VirtualMachineInstance[] {
    const ns = pod.metadata.namespace ?? '';
    if (pod.metadata.labels?.[KubevirtLabel.App] === HOTPLUG_DISK_LABEL_VALUE) {
      const name = pod.metadata.annotations?.[KubevirtLabel.OwnerVmiName];
      const vmi = name === undefined ? undefined : this.#vmis.get(ns, name);
      return vmi === undefined ? [] : [vmi];
    }
    const uid = pod.metadata.labels?.[KubevirtLabel.CreatedBy];
    return this.#vmis.list((v) => v.metadata.namespace === ns && v.metadata.uid === uid);
  }

  observe(ref: VmiRef): Observation {
    const vmi = this.#vmis.get(ref.namespace, ref.name);
    // Only this VMI's pods are copied out of the cache, not the whole namespace's.
    const launcherOwner = vmi?.metadata.uid;
    const pods = this.#pods.list(
      (p) =>
        p.metadata.namespace === ref.namespace &&
        (isAttachmentPodOf(p, ref.uid) ||
          (launcherOwner !== undefined && isLauncherPodOf(p, launcherOwner))),
    );
    const attachment = pods.filter((p) => isAttachmentPodOf(p, ref.uid));
    const pvcs: Record<string, PersistentVolumeClaim> = {};
    const dataVolumes: Record<string, DataVolume> = {};
    for (const claim of vmi === undefined ? [] : claimsOf(vmi)) {
      const pvc = this.#pvcs.get(ref.namespace, claim);
      if (pvc !== undefined) pvcs[claim] = pvc;
      const dv = this.#dvs.get(ref.namespace, claim);
      if (dv !== undefined) dataVolumes[claim] = dv;
    }
    return {
      vmi,
      launcher: vmi === undefined ? undefined : findLauncher(pods, vmi),
      pods: attachment,
      pvcs,
      dataVolumes,
    };
  }

  vmisToReconcile(): VirtualMachineInstance[] {
    const owners = new Set(
      this.#pods
        .list((p) => p.metadata.labels?.[KubevirtLabel.App] === HOTPLUG_DISK_LABEL_VALUE)
        .map((p) => p.metadata.annotations?.[KubevirtLabel.OwnerVmiUid]),
    );
    return this.#vmis.list(
      (vmi) =>
        hotplugNames(vmi).length > 0 ||
        (vmi.status?.volumeStatus ?? []).some((s) => s.hotplugVolume !== undefined) ||
        owners.has(vmi.metadata.uid),
    );
  }

  async start(): Promise<void> {
    await Promise.all([this.#vmis, this.#pods, this.#pvcs, this.#dvs].map((i) => i.start()));
    this.#ready = true;
  }

  async stop(): Promise<void> {
    this.#ready = false;
    await Promise.all([this.#vmis, this.#pods, this.#pvcs, this.#dvs].map((i) => i.stop()));
  }

  synced(): boolean {
    return [this.#vmis, this.#pods, this.#pvcs, this.#dvs].every((i) => i.synced);
  }
}

export function createClusterView(options: ClusterViewOptions): ClusterView {
  return new InformerClusterView(options);
}
