import {
  claimNameOf,
  EventType,
  HOTPLUG_DISK_LABEL_VALUE,
  isHotpluggable,
  KubevirtLabel,
  LAUNCHER_LABEL_VALUE,
  PluglineError,
  vmiUidOfPod,
  VolumePhase,
} from '@plugline/contracts';
import type { ObjectMeta, VirtualMachineInstance, WorkItem } from '@plugline/contracts';

import type { PlugRequest, UnplugRequest } from './node-mounter.js';
import { assertUid, VolumeMode } from './paths.js';

/**
 * What the node-mounter should do for one volume, decided from the truth (informer caches) and
 * never from the message: the work item only names the volume. Pure.
 */

/** The Pod fields the decision reads. */
export interface PodView {
  metadata?: ObjectMeta;
  spec?: {
    nodeName?: string;
    volumes?: readonly { name: string; persistentVolumeClaim?: { claimName: string } }[];
  };
  status?: { phase?: string; containerStatuses?: readonly { ready?: boolean }[] };
}

/** The PersistentVolumeClaim fields the decision reads. */
export interface PvcView {
  metadata?: ObjectMeta;
  spec?: { volumeName?: string; volumeMode?: string };
  status?: { phase?: string };
}

/** The truth about one volume as the caches show it. */
export interface VolumeView {
  readonly item: WorkItem;
  /** This agent's node. */
  readonly node: string;
  /** The VMI named by the item (any UID), if it exists. */
  readonly vmi: VirtualMachineInstance | undefined;
  /** Pods on this node (launcher and attachment pods among them). */
  readonly pods: readonly PodView[];
  /** Looks up a PVC in the item's namespace. */
  readonly pvc: (name: string) => PvcView | undefined;
}

export const DecisionKind = {
  Plug: 'plug',
  Unplug: 'unplug',
  /**
   * A precondition is not met yet (launcher, attachment pod, PVC binding), or a plug's volume
   * left the spec while the domain may hold its disk: look again later.
   */
  Wait: 'wait',
  /** Nothing to do now (the domain may still hold the disk; not a hotplug volume). */
  Skip: 'skip',
  /** Never acceptable (names that would leave the kubelet root, a foreign node). */
  Refuse: 'refuse',
} as const;
export type DecisionKind = (typeof DecisionKind)[keyof typeof DecisionKind];

export type Decision =
  | {
      readonly kind: typeof DecisionKind.Plug;
      readonly request: PlugRequest;
      readonly attachPod: { readonly name: string; readonly uid: string };
      readonly launcherPod: string;
    }
  | {
      readonly kind: typeof DecisionKind.Unplug;
      readonly request: UnplugRequest;
      readonly why: string;
    }
  | {
      readonly kind:
        typeof DecisionKind.Wait | typeof DecisionKind.Skip | typeof DecisionKind.Refuse;
      readonly reason: string;
      readonly message: string;
    };

/** Reasons of `wait`, `skip` and `refuse` decisions (and of `unplug`'s `why`). */
export const DecisionReason = {
  WrongNode: 'WrongNode',
  LauncherNotFound: 'LauncherPodNotFound',
  LauncherNotRunning: 'LauncherPodNotRunning',
  AttachmentPodNotRunning: 'AttachmentPodNotRunning',
  PvcNotFound: 'FailedPvcNotFound',
  PvcNotBound: 'PVCNotReady',
  DomainMayHoldDisk: 'DomainMayHoldDisk',
  NotHotpluggable: 'NotHotpluggable',
  VmiGone: 'VmiGone',
  VmiElsewhere: 'VmiOnAnotherNode',
  NotInSpec: 'NotInSpec',
} as const;

/** A "released" cause: the domain-updater let go of the disk. */
export const RELEASE_CAUSE = EventType.DetachedFromDomain;

const DEFAULT_VOLUME_MODE = VolumeMode.Filesystem;

function isDeleting(obj: { metadata?: ObjectMeta }): boolean {
  return obj.metadata?.deletionTimestamp !== undefined;
}

function isRunning(pod: PodView): boolean {
  return pod.status?.phase === 'Running' && !isDeleting(pod);
}

function isReady(pod: PodView): boolean {
  const statuses = pod.status?.containerStatuses ?? [];
  return isRunning(pod) && statuses.every((s) => s.ready !== false);
}

function byAge(a: PodView, b: PodView): number {
  const ta = a.metadata?.creationTimestamp ?? '';
  const tb = b.metadata?.creationTimestamp ?? '';
  if (ta !== tb) return ta < tb ? -1 : 1;
  return (a.metadata?.name ?? '') < (b.metadata?.name ?? '') ? -1 : 1;
}

/**
 * True when the pod is in `namespace` (any namespace when it is undefined). A VMI's pods live in
 * its namespace: a pod elsewhere that carries its labels is not its pod, whatever it claims.
 */
function inNamespace(pod: PodView, namespace: string | undefined): boolean {
  return namespace === undefined || pod.metadata?.namespace === namespace;
}

/**
 * The key of the VMI a launcher or attachment pod belongs to (`namespace/vmiUID`, see
 * {@link vmiPodsKey}); none for other pods. The pod cache is indexed by it: {@link decide} reads
 * only the pods of the item's VMI, found by key rather than by a look through every pod here.
 */
export function vmiKeyOfPod(pod: PodView): string | undefined {
  const namespace = pod.metadata?.namespace;
  const uid = vmiUidOfPod(pod);
  return namespace === undefined || uid === undefined ? undefined : vmiPodsKey(namespace, uid);
}

/** The key under which the pod cache finds the pods of the VMI `vmiUID` in `namespace`. */
export function vmiPodsKey(namespace: string, vmiUID: string): string {
  return `${namespace}/${vmiUID}`;
}

/** The VMI's launcher pods on this node (in `namespace`, when given), running ones first. */
export function launcherPodsOf(
  vmiUID: string,
  pods: readonly PodView[],
  namespace?: string,
): PodView[] {
  return pods
    .filter(
      (p) =>
        p.metadata?.labels?.[KubevirtLabel.App] === LAUNCHER_LABEL_VALUE &&
        p.metadata.labels[KubevirtLabel.CreatedBy] === vmiUID &&
        inNamespace(p, namespace) &&
        !isDeleting(p),
    )
    .sort((a, b) => Number(isRunning(b)) - Number(isRunning(a)) || byAge(a, b));
}

/**
 * The VMI's attachment pods on this node (in `namespace`, when given) that carry `volume` — from
 * the PVC `claim`, when given — oldest first.
 */
export function attachmentPodsWith(
  vmiUID: string,
  volume: string,
  pods: readonly PodView[],
  namespace?: string,
  claim?: string,
): PodView[] {
  return pods
    .filter(
      (p) =>
        p.metadata?.labels?.[KubevirtLabel.App] === HOTPLUG_DISK_LABEL_VALUE &&
        p.metadata.annotations?.[KubevirtLabel.OwnerVmiUid] === vmiUID &&
        inNamespace(p, namespace) &&
        (p.spec?.volumes ?? []).some(
          (v) =>
            v.name === volume &&
            v.persistentVolumeClaim !== undefined &&
            (claim === undefined || v.persistentVolumeClaim.claimName === claim),
        ),
    )
    .sort(byAge);
}

function claimOfPod(pod: PodView, volume: string): string | undefined {
  return pod.spec?.volumes?.find((v) => v.name === volume)?.persistentVolumeClaim?.claimName;
}

function volumeModeOf(pvc: PvcView | undefined): VolumeMode | undefined {
  if (pvc === undefined) return undefined;
  return pvc.spec?.volumeMode === VolumeMode.Block ? VolumeMode.Block : DEFAULT_VOLUME_MODE;
}

function wait(reason: string, message: string): Decision {
  return { kind: DecisionKind.Wait, reason, message };
}

/** The volumes of a VMI's spec that are hotpluggable. */
export function hotplugVolumesOf(vmi: VirtualMachineInstance): string[] {
  return (vmi.spec.volumes ?? []).filter(isHotpluggable).map((v) => v.name);
}

/** Phases in which domain-updater may have put the disk in the domain (the status can lag it). */
const MAY_BE_IN_DOMAIN: ReadonlySet<string> = new Set([
  VolumePhase.AttachedToNode,
  VolumePhase.MountedToPod,
  VolumePhase.Ready,
]);

/**
 * True while the VMI's status does not rule out that the domain has the disk: its entry has a
 * target, is in a phase from `AttachedToNode` to `Ready`, or names an attachment pod without a
 * phase (a re-add reset it). The status lags the stages: a `MountedToPod` entry may already be
 * in the domain (its `ready` not projected yet), so only domain-updater's hand-off
 * (`detached-from-domain`) proves it left. No entry, or one never attached: nothing to wait for.
 */
export function domainHolds(vmi: VirtualMachineInstance, volume: string): boolean {
  const entry = vmi.status?.volumeStatus?.find((s) => s.name === volume);
  if (entry === undefined) return false;
  if (entry.target !== '' || MAY_BE_IN_DOMAIN.has(entry.phase ?? '')) return true;
  return entry.phase === undefined && entry.hotplugVolume?.attachPodName !== undefined;
}

interface PlugPods {
  readonly launcher: PodView;
  readonly attachment: PodView;
}

/**
 * The running launcher and a ready attachment pod carrying the volume from the spec's `claim`,
 * both in the VMI's namespace, or why to wait. A pod carrying another claim under the volume's
 * name (a stale pod from before the volume was re-added with another PVC) is not its pod.
 */
function plugPods(view: VolumeView, vmiUID: string, claim: string): PlugPods | Decision {
  const { item, pods, node } = view;
  const launcher = launcherPodsOf(vmiUID, pods, item.namespace)[0];
  if (launcher === undefined) {
    return wait(DecisionReason.LauncherNotFound, `no launcher pod of ${item.vmi} on ${node}`);
  }
  if (!isRunning(launcher)) {
    const name = launcher.metadata?.name ?? '';
    return wait(DecisionReason.LauncherNotRunning, `launcher pod ${name} is not running`);
  }
  const attachment = attachmentPodsWith(vmiUID, item.volume, pods, item.namespace, claim).find(
    isReady,
  );
  if (attachment === undefined) {
    return wait(
      DecisionReason.AttachmentPodNotRunning,
      `no running attachment pod carries ${item.volume} (PVC ${claim}) on ${node}`,
    );
  }
  return { launcher, attachment };
}

/** The bound PV and volume mode behind the attachment pod's claim, or why to wait. */
function boundVolume(
  view: VolumeView,
  attachment: PodView,
): { pvName: string; mode: VolumeMode } | Decision {
  const claim = claimOfPod(attachment, view.item.volume) ?? '';
  const pvc = view.pvc(claim);
  if (pvc === undefined) return wait(DecisionReason.PvcNotFound, `PVC ${claim} not found`);
  const pvName = pvc.spec?.volumeName ?? '';
  const phase = pvc.status?.phase ?? 'Pending';
  if (pvName === '' || phase !== 'Bound') {
    return wait(DecisionReason.PvcNotBound, `PVC is in phase ${phase}`);
  }
  return { pvName, mode: volumeModeOf(pvc) ?? DEFAULT_VOLUME_MODE };
}

function isDecision(value: object): value is Decision {
  return 'kind' in value;
}

function decidePlug(view: VolumeView, vmiUID: string, claim: string): Decision {
  const pods = plugPods(view, vmiUID, claim);
  if (isDecision(pods)) return pods;
  const volume = boundVolume(view, pods.attachment);
  if (isDecision(volume)) return volume;
  const uidOf = (pod: PodView) => pod.metadata?.uid ?? '';
  const nameOf = (pod: PodView) => pod.metadata?.name ?? '';
  return {
    kind: DecisionKind.Plug,
    request: {
      namespace: view.item.namespace,
      vmiUID,
      launcherUID: uidOf(pods.launcher),
      attachPodUID: uidOf(pods.attachment),
      volume: view.item.volume,
      pvName: volume.pvName,
      mode: volume.mode,
    },
    attachPod: { name: nameOf(pods.attachment), uid: uidOf(pods.attachment) },
    launcherPod: nameOf(pods.launcher),
  };
}

/** The volume mode of an unplugged volume, from its status entry or an attachment pod's PVC. */
function unplugMode(view: VolumeView, vmiUID: string): VolumeMode | undefined {
  const info = view.vmi?.status?.volumeStatus?.find(
    (s) => s.name === view.item.volume,
  )?.persistentVolumeClaimInfo;
  if (info?.volumeMode === VolumeMode.Block || info?.volumeMode === VolumeMode.Filesystem) {
    return info.volumeMode;
  }
  const pod = attachmentPodsWith(vmiUID, view.item.volume, view.pods, view.item.namespace)[0];
  const claim = pod === undefined ? undefined : claimOfPod(pod, view.item.volume);
  return claim === undefined ? undefined : volumeModeOf(view.pvc(claim));
}

function unplug(view: VolumeView, vmiUID: string, why: string): Decision {
  const launcherUID = launcherPodsOf(vmiUID, view.pods, view.item.namespace)[0]?.metadata?.uid;
  const mode = unplugMode(view, vmiUID);
  // Both known: unplug can also clean a target the checkpoint does not know.
  const guess = launcherUID !== undefined && mode !== undefined ? { launcherUID, mode } : {};
  return {
    kind: DecisionKind.Unplug,
    request: { namespace: view.item.namespace, vmiUID, volume: view.item.volume, ...guess },
    why,
  };
}

/**
 * Decides plug, unplug, wait, skip or refuse for the item's volume.
 *
 * - Direction from the spec: a hotplug volume in the VMI's spec is plugged (whatever the item's
 *   operation or cause), once the launcher and an attachment pod carrying it run on this node
 *   and its PVC is bound.
 * - Unplug only once the domain cannot hold the disk: the item's cause is `detached-from-domain`,
 *   the status entry has no target (or there is none), or the VMI is gone or on another node.
 *   Otherwise an unplug's item is skipped (the domain-updater nudges this stage when it lets go),
 *   and a plug's item waits: the volume may come back with no new operation to say so.
 * - The item's `vmiUID` becomes a path segment (checkpoint) only after validation: a name that
 *   could leave the state dir or kubelet root is refused.
 * - Only pods in the item's namespace count, and only an attachment pod carrying the spec's PVC:
 *   an item naming another VMI's UID cannot reach that VMI's pods, and the requests carry the
 *   namespace so the mounter refuses a checkpointed volume of another namespace.
 */
export function decide(view: VolumeView): Decision {
  const { item, vmi } = view;
  try {
    assertUid('the checkpoint folder', 'vmiUID', item.vmiUID);
  } catch (err) {
    const reason = err instanceof PluglineError ? err.reason : 'InvalidName';
    return { kind: DecisionKind.Refuse, reason, message: (err as Error).message };
  }
  if (item.node !== view.node) {
    return {
      kind: DecisionKind.Refuse,
      reason: DecisionReason.WrongNode,
      message: `work item for node ${item.node ?? '(none)'} reached node ${view.node}`,
    };
  }
  if (vmi === undefined || vmi.metadata.uid !== item.vmiUID) {
    // Gone, or a newer VMI of the same name: the domain of this one is gone with its launcher.
    return unplug(view, item.vmiUID, DecisionReason.VmiGone);
  }
  const nodeName = vmi.status?.nodeName;
  if (nodeName !== undefined && nodeName !== '' && nodeName !== view.node) {
    return unplug(view, item.vmiUID, DecisionReason.VmiElsewhere);
  }
  const specVolume = (vmi.spec.volumes ?? []).find((v) => v.name === item.volume);
  if (specVolume !== undefined) {
    const claim = claimNameOf(specVolume);
    if (!isHotpluggable(specVolume) || claim === undefined) {
      return {
        kind: DecisionKind.Skip,
        reason: DecisionReason.NotHotpluggable,
        message: `${item.volume} is not a hotplug PVC or DataVolume volume`,
      };
    }
    return decidePlug(view, item.vmiUID, claim);
  }
  if (item.cause === RELEASE_CAUSE || !domainHolds(vmi, item.volume)) {
    return unplug(view, item.vmiUID, DecisionReason.NotInSpec);
  }
  if (item.operation === 'plug') {
    // The removal may be one the spec-watcher never saw (its watch dropped while the volume left
    // and came back): no new operation would then nudge this stage when the volume returns. So
    // the plug looks again until the spec wants the volume or the domain lets go of the disk.
    return wait(
      DecisionReason.DomainMayHoldDisk,
      `${item.volume} left the spec after its plug was asked for, and the domain may still hold it; looking again`,
    );
  }
  return {
    kind: DecisionKind.Skip,
    reason: DecisionReason.DomainMayHoldDisk,
    message: `${item.volume} left the spec but the domain may still hold it; waiting for detached-from-domain`,
  };
}

/**
 * What must stay mounted on this node, per VMI UID, for reconcile-at-start: hotplug volumes in
 * the spec of VMIs on this node, and volumes the domain may still hold (a status target).
 */
export function wantedVolumes(
  vmis: readonly VirtualMachineInstance[],
  node: string,
  pods: readonly PodView[],
): Map<string, Set<string>> {
  const wanted = new Map<string, Set<string>>();
  for (const vmi of vmis) {
    const uid = vmi.metadata.uid;
    if (uid === undefined) continue;
    const here =
      vmi.status?.nodeName === node ||
      ((vmi.status?.nodeName ?? '') === '' &&
        launcherPodsOf(uid, pods, vmi.metadata.namespace).length > 0);
    if (!here) continue;
    const volumes = new Set(hotplugVolumesOf(vmi));
    for (const s of vmi.status?.volumeStatus ?? []) {
      if (s.target !== '') volumes.add(s.name);
    }
    wanted.set(uid, volumes);
  }
  return wanted;
}
