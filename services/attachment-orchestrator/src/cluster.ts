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
  vmiUidOfPod,
  type VirtualMachineInstance,
  type VolumeStatus,
} from '@plugline/contracts';
import { BoundedMap } from '@plugline/bus';
import { createInformer, Resources, type DataVolume, type Informer } from '@plugline/kube';
import type { Logger } from '@plugline/telemetry';
import { isPodRunningAndReady, volumesOfPod, type Pod } from './pod.js';
import type { PersistentVolumeClaim } from './pvc.js';
import type { Observation, VmiRef } from './reconcile.js';
import { NudgeCause, statusChangeNudges } from './reconcile.js';

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

/** A VMI's key in the cache indexes: its namespace and uid. */
const vmiKey = (namespace: string | undefined, uid: string): string => `${namespace ?? ''}/${uid}`;

/** An attachment pod under the VMI that owns it, a launcher pod under the VMI that made it. */
function podVmiKeys(pod: CachedPod): string[] {
  const uid = vmiUidOfPod(pod);
  return uid === undefined ? [] : [vmiKey(pod.metadata.namespace, uid)];
}

/** What of a VMI the orchestrator compares between two versions of it. */
interface VmiSummary {
  namespace: string | undefined;
  uid: string | undefined;
  /** Its hotplug spec volumes and life: any change nudges. */
  life: string;
  inSpec: ReadonlySet<string>;
  entries: ReadonlyMap<string, VolumeStatus>;
}

function summarizeVmi(vmi: VirtualMachineInstance): VmiSummary {
  const hotplug = (vmi.spec.volumes ?? []).filter(isHotpluggable);
  return {
    namespace: vmi.metadata.namespace,
    uid: vmi.metadata.uid,
    life: JSON.stringify([
      hotplug,
      vmi.status?.phase,
      vmi.status?.activePods,
      vmi.metadata.deletionTimestamp,
    ]),
    inSpec: new Set(hotplug.map((v) => v.name)),
    entries: new Map((vmi.status?.volumeStatus ?? []).map((s) => [s.name, s])),
  };
}

/**
 * Whether a VMI changed in a way that may give a reconcile something to do: its spec volumes or
 * life, or a status entry as {@link statusChangeNudges} tells. A plug's forward steps in the
 * status (most of its changes) nudge nothing: the unit acts on its work items and pod changes.
 */
function vmiChangeNudges(
  before: VmiSummary | undefined,
  after: VmiSummary,
  onPod: (volume: string) => boolean,
): boolean {
  if (before === undefined || before.life !== after.life) return true;
  const names = new Set([...before.entries.keys(), ...after.entries.keys()]);
  for (const name of names) {
    const was = before.entries.get(name);
    const is = after.entries.get(name);
    if (was === is) continue;
    const volume = {
      inSpec: after.inSpec.has(name),
      // Only asked when the entry went: a pod lookup, not one per status change.
      get onPod() {
        return onPod(name);
      },
    };
    if (statusChangeNudges(was, is, volume)) return true;
  }
  return false;
}

/**
 * What about a pod may give a reconcile something to do: running and ready (its volumes can be
 * announced, old pods may go), finished, or going. A pod being created or scheduled gives none:
 * the plan waits for a starting pod of ours.
 */
function podDigest(pod: Pod): string {
  return JSON.stringify([
    isPodRunningAndReady(pod),
    pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed',
    pod.metadata.deletionTimestamp !== undefined,
  ]);
}

const differs = (before: string | undefined, after: string): boolean => before !== after;

/** A pod that appears while starting: nothing to do until it runs. */
const STARTING_POD = podDigest({ metadata: {} });

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

/**
 * How long a pod that left the cache is remembered: well past `CREATED_GRACE_MS`, the longest a
 * unit waits for a pod it created to show.
 */
const PODS_GONE_KEPT_MS = 60_000;
/** How many VMIs' gone pods are remembered (the ones whose pods left the cache last). */
const PODS_GONE_VMIS_KEPT = 10_000;

/** Drops from `gone` (name → when it left the cache) what is older than `PODS_GONE_KEPT_MS`. */
function forgetOldGone(gone: Map<string, number>, now: number): void {
  for (const [name, at] of gone) if (now - at > PODS_GONE_KEPT_MS) gone.delete(name);
}

class InformerClusterView implements ClusterView {
  readonly #vmis: Informer<VirtualMachineInstance>;
  readonly #pods: Informer<CachedPod>;
  readonly #pvcs: Informer<CachedPvc>;
  readonly #dvs: Informer<CachedDv>;
  readonly #onNudge: (nudge: Nudge) => void;
  /**
   * Lookups that need not scan a cache (issue 10: scanning every pod on each reconcile was 8 %
   * of the orchestrator's CPU at 500 VMIs, and grows with the cluster).
   */
  readonly #podsOfVmi: (key: string) => CachedPod[];
  readonly #vmisByUid: (key: string) => VirtualMachineInstance[];
  readonly #vmisByClaim: (key: string) => VirtualMachineInstance[];
  /**
   * Attachment pods that left the cache lately, by owner VMI key, then name → when. Bounded: a
   * VMI forgotten here costs at most one wait of `CREATED_GRACE_MS`.
   */
  readonly #podsGone = new BoundedMap<string, Map<string, number>>(PODS_GONE_VMIS_KEPT);
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
    this.#podsOfVmi = this.#pods.index(podVmiKeys);
    this.#vmisByUid = this.#vmis.index((vmi) =>
      vmi.metadata.uid === undefined ? [] : [vmiKey(vmi.metadata.namespace, vmi.metadata.uid)],
    );
    this.#vmisByClaim = this.#vmis.index((vmi) =>
      claimsOf(vmi).map((claim) => vmiKey(vmi.metadata.namespace, claim)),
    );
    this.#wire(
      this.#vmis,
      summarizeVmi,
      (before, after) => vmiChangeNudges(before, after, (v) => this.#onAttachmentPod(after, v)),
      (vmi) => [vmi],
      NudgeCause.Vmi,
    );
    this.#wire(
      this.#pods,
      podDigest,
      (before, after) => after !== (before ?? STARTING_POD),
      (pod) => this.#vmisOfPod(pod),
      NudgeCause.Pod,
    );
    this.#pods.onDelete((pod) => this.#podGone(pod));
    this.#wire(
      this.#pvcs,
      pvcDigest,
      differs,
      (pvc) => this.#vmisOfClaim(pvc.metadata.namespace, pvc.metadata.name),
      NudgeCause.Pvc,
    );
    this.#wire(
      this.#dvs,
      dvDigest,
      differs,
      (dv) => this.#vmisOfClaim(dv.metadata.namespace, dv.metadata.name),
      NudgeCause.DataVolume,
    );
  }

  /**
   * Nudges the VMIs an object concerns when it changed in a way `nudges` says matters, comparing
   * what `summarize` keeps of its last version; a deletion always nudges.
   */
  #wire<T extends { metadata?: { uid?: string; resourceVersion?: string; name?: string } }, S>(
    informer: Informer<T>,
    summarize: (obj: T) => S,
    nudges: (before: S | undefined, after: S) => boolean,
    vmisOf: (obj: T) => VirtualMachineInstance[],
    cause: NudgeCause,
  ): void {
    const seen = new Map<string, S>();
    const handle = (obj: T, deleted: boolean): void => {
      const key = obj.metadata?.uid ?? obj.metadata?.name ?? '';
      let changed = true;
      if (deleted) seen.delete(key);
      else {
        const after = summarize(obj);
        changed = nudges(seen.get(key), after);
        seen.set(key, after);
      }
      if (!changed || !this.#ready) return;
      const change = `${obj.metadata?.uid ?? ''}-${obj.metadata?.resourceVersion ?? ''}${deleted ? '-d' : ''}`;
      for (const vmi of vmisOf(obj)) this.#onNudge({ vmi, cause, change });
    };
    informer.onAdd((obj) => handle(obj, false));
    informer.onUpdate((obj) => handle(obj, false));
    informer.onDelete((obj) => handle(obj, true));
  }

  /** Remembers an attachment pod that left the cache, for `Observation.podsGone`. */
  #podGone(pod: CachedPod): void {
    const owner = pod.metadata.annotations?.[KubevirtLabel.OwnerVmiUid];
    const name = pod.metadata.name;
    if (owner === undefined || name === undefined) return;
    const key = vmiKey(pod.metadata.namespace, owner);
    const gone = this.#podsGone.peek(key) ?? new Map<string, number>();
    const now = Date.now();
    forgetOldGone(gone, now);
    gone.set(name, now);
    this.#podsGone.set(key, gone);
  }

  /** The VMI's attachment pods that left the cache within `PODS_GONE_KEPT_MS`. */
  #podsGoneOf(key: string): Record<string, number> {
    const gone = this.#podsGone.peek(key);
    if (gone === undefined) return {};
    forgetOldGone(gone, Date.now());
    if (gone.size === 0) this.#podsGone.delete(key);
    return Object.fromEntries(gone);
  }

  #onAttachmentPod(vmi: VmiSummary, volume: string): boolean {
    if (vmi.uid === undefined) return false;
    return this.#podsOfVmi(vmiKey(vmi.namespace, vmi.uid)).some(
      (p) => isAttachmentPodOf(p, vmi.uid) && volumesOfPod(p).includes(volume),
    );
  }

  #vmisOfClaim(namespace: string | undefined, claim: string | undefined): VirtualMachineInstance[] {
    if (claim === undefined) return [];
    return this.#vmisByClaim(vmiKey(namespace, claim));
  }

  #vmisOfPod(pod: CachedPod): VirtualMachineInstance[] {
    const ns = pod.metadata.namespace ?? '';
    if (pod.metadata.labels?.[KubevirtLabel.App] === HOTPLUG_DISK_LABEL_VALUE) {
      const name = pod.metadata.annotations?.[KubevirtLabel.OwnerVmiName];
      const vmi = name === undefined ? undefined : this.#vmis.get(ns, name);
      return vmi === undefined ? [] : [vmi];
    }
    const uid = pod.metadata.labels?.[KubevirtLabel.CreatedBy];
    return uid === undefined ? [] : this.#vmisByUid(vmiKey(ns, uid));
  }

  observe(ref: VmiRef): Observation {
    const vmi = this.#vmis.get(ref.namespace, ref.name);
    // Only this VMI's pods are copied out of the cache, not the whole namespace's.
    const launcherOwner = vmi?.metadata.uid;
    const keys = new Set(
      [ref.uid, launcherOwner ?? ref.uid].map((uid) => vmiKey(ref.namespace, uid)),
    );
    const pods = [...keys]
      .flatMap((key) => this.#podsOfVmi(key))
      .filter(
        (p) =>
          isAttachmentPodOf(p, ref.uid) ||
          (launcherOwner !== undefined && isLauncherPodOf(p, launcherOwner)),
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
      podsGone: this.#podsGoneOf(vmiKey(ref.namespace, ref.uid)),
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
