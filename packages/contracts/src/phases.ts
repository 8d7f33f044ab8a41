/**
 * The phase model of `vmi.status.volumeStatus[].phase`, as data: KubeVirt's phases, the allowed
 * transitions, and the reasons and messages KubeVirt writes with each (see
 * `pkg/virt-controller/watch/vmi/storage.go`, `pkg/virt-handler/vm.go`).
 */
import type { EventType } from './messages.js';

export const VolumePhase = {
  Pending: 'Pending',
  Bound: 'Bound',
  AttachedToNode: 'AttachedToNode',
  MountedToPod: 'MountedToPod',
  Ready: 'Ready',
  UnMountedFromPod: 'UnMountedFromPod',
  Detaching: 'Detaching',
} as const;
export type VolumePhase = (typeof VolumePhase)[keyof typeof VolumePhase];
export const VOLUME_PHASES: readonly VolumePhase[] = Object.values(VolumePhase);

/** The plug direction, in order. A later phase is further along. */
export const PLUG_PHASES: readonly VolumePhase[] = [
  VolumePhase.Pending,
  VolumePhase.Bound,
  VolumePhase.AttachedToNode,
  VolumePhase.MountedToPod,
  VolumePhase.Ready,
];
/**
 * Phases in which the launcher uses the volume: its attachment pod must stay (KubeVirt #14998),
 * and its phase never falls back when the pod is replaced (#10165).
 */
export const IN_USE_PHASES: ReadonlySet<string> = new Set([
  VolumePhase.MountedToPod,
  VolumePhase.Ready,
]);
/** The unplug direction, in order; after `Detaching` the status entry is removed. */
export const UNPLUG_PHASES: readonly VolumePhase[] = [
  VolumePhase.UnMountedFromPod,
  VolumePhase.Detaching,
];

/** Reasons of status entries and Kubernetes Events, as KubeVirt spells them. */
export const Reason = {
  SuccessfulCreate: 'SuccessfulCreate',
  VolumeMountedToPod: 'VolumeMountedToPod',
  VolumeReady: 'VolumeReady',
  VolumeUnMountedFromPod: 'VolumeUnMountedFromPod',
  SuccessfulDelete: 'SuccessfulDelete',
  FailedPvcNotFound: 'FailedPvcNotFound',
  PVCNotReady: 'PVCNotReady',
  HotplugFailed: 'HotplugFailed',
  VolumeUnplugged: 'VolumeUnplugged',
  /** Plugline's own: the guest has not let go of a detached disk within the detach timeout. */
  DetachTimeout: 'DetachTimeout',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/**
 * Whether a `failed` fact with this reason ends its operation. A guest that holds a detached disk
 * past the timeout is reported, but the unplug goes on (the detach is asked again, and the unplug
 * finishes once the guest lets go), so a follower keeps following it.
 */
export function failureEndsOperation(reason: string | undefined): boolean {
  return reason !== Reason.DetachTimeout;
}

/** Kubernetes Event types. */
export const KubeEventType = { Normal: 'Normal', Warning: 'Warning' } as const;
export type KubeEventType = (typeof KubeEventType)[keyof typeof KubeEventType];

/** Messages, word for word KubeVirt's. */
export const PhaseMessage = {
  pvcNotFound: (claim: string) => `PVC ${claim} not found`,
  pvcInPhase: (pvcPhase: string) => `PVC is in phase ${pvcPhase}`,
  attachmentPodCreated: (pod: string, volume: string) =>
    `Created hotplug attachment pod ${pod}, for volume ${volume}`,
  mountedToPod: (volume: string) => `Volume ${volume} has been mounted in virt-launcher pod`,
  ready: (volume: string) => `Successfully attach hotplugged volume ${volume} to VM`,
  unmountedFromPod: (volume: string) =>
    `Volume ${volume} has been unmounted from virt-launcher pod`,
  attachmentPodDeleted: (pod: string, volume: string) =>
    `Deleted hotplug attachment pod ${pod}, for volume ${volume}`,
  unplugged: (volume: string) => `Volume ${volume} has been unplugged`,
} as const;

/**
 * Allowed next phases. Plug moves forward and may skip steps (facts can arrive coalesced);
 * `Bound` may fall back to `Pending` (PVC lost) and `AttachedToNode` to `Bound`/`Pending` (the
 * pod vanished before the mount); `MountedToPod` and `Ready` never fall back to a plug phase
 * (KubeVirt #10165). Any phase may start the unplug with `Detaching`; a mounted volume unplugs
 * through `UnMountedFromPod`. A re-added volume in an unplug phase is reset from its PVC to
 * `Pending` or `Bound` (KubeVirt #16159). Staying in the same phase (a new message) is allowed.
 */
export const PHASE_TRANSITIONS: Readonly<Record<VolumePhase, readonly VolumePhase[]>> = {
  Pending: ['Pending', 'Bound', 'AttachedToNode', 'MountedToPod', 'Ready', 'Detaching'],
  Bound: ['Bound', 'Pending', 'AttachedToNode', 'MountedToPod', 'Ready', 'Detaching'],
  AttachedToNode: ['AttachedToNode', 'Bound', 'Pending', 'MountedToPod', 'Ready', 'Detaching'],
  MountedToPod: ['MountedToPod', 'Ready', 'UnMountedFromPod', 'Detaching'],
  Ready: ['Ready', 'UnMountedFromPod', 'Detaching'],
  UnMountedFromPod: ['UnMountedFromPod', 'Detaching', 'Pending', 'Bound'],
  Detaching: ['Detaching', 'Pending', 'Bound'],
};

export function isVolumePhase(value: unknown): value is VolumePhase {
  return VOLUME_PHASES.includes(value as VolumePhase);
}

/** Whether a status entry may move from `from` (undefined: no entry yet) to `to`. */
export function canTransition(from: VolumePhase | undefined, to: VolumePhase): boolean {
  if (!isVolumePhase(to)) return false;
  if (from === undefined) return PLUG_PHASES.includes(to);
  if (!isVolumePhase(from)) return false;
  return PHASE_TRANSITIONS[from].includes(to);
}

export function isUnplugPhase(phase: unknown): boolean {
  return UNPLUG_PHASES.includes(phase as VolumePhase);
}

export function isPlugPhase(phase: unknown): boolean {
  return PLUG_PHASES.includes(phase as VolumePhase);
}

/** What a fact (event type) means for the status entry. */
export interface PhaseOfEvent {
  /** The phase the entry moves to; undefined when the fact keeps the phase. */
  phase: VolumePhase | undefined;
  reason: Reason | undefined;
  kubeEventType: KubeEventType;
  /** KubeVirt's message, with `{volume}`, `{pod}`, `{claim}`, `{pvcPhase}` placeholders. */
  messageTemplate: string | undefined;
  /** The fact ends the volume's life in the status (the entry is removed). */
  removesEntry: boolean;
}

const fact = (
  phase: VolumePhase | undefined,
  reason: Reason | undefined,
  messageTemplate: string | undefined,
  extra: Partial<PhaseOfEvent> = {},
): PhaseOfEvent => ({
  phase,
  reason,
  messageTemplate,
  kubeEventType: KubeEventType.Normal,
  removesEntry: false,
  ...extra,
});

/**
 * Each event type's meaning for `volumeStatus`. `pending` carries `PVCNotReady` by default; a
 * missing PVC uses `FailedPvcNotFound` with `PVC {claim} not found` (`pendingReasonFor`).
 */
export const PHASE_OF_EVENT: Readonly<Record<EventType, PhaseOfEvent>> = {
  requested: fact(undefined, undefined, undefined),
  'unplug-requested': fact(undefined, undefined, undefined),
  pending: fact('Pending', Reason.PVCNotReady, 'PVC is in phase {pvcPhase}'),
  bound: fact('Bound', Reason.PVCNotReady, 'PVC is in phase {pvcPhase}'),
  'import-progress': fact(undefined, undefined, undefined),
  'attached-to-node': fact(
    'AttachedToNode',
    Reason.SuccessfulCreate,
    'Created hotplug attachment pod {pod}, for volume {volume}',
  ),
  'mounted-to-pod': fact(
    'MountedToPod',
    Reason.VolumeMountedToPod,
    'Volume {volume} has been mounted in virt-launcher pod',
  ),
  ready: fact('Ready', Reason.VolumeReady, 'Successfully attach hotplugged volume {volume} to VM'),
  'detached-from-domain': fact(undefined, undefined, undefined),
  'unmounted-from-pod': fact(
    'UnMountedFromPod',
    Reason.VolumeUnMountedFromPod,
    'Volume {volume} has been unmounted from virt-launcher pod',
  ),
  detaching: fact(
    'Detaching',
    Reason.SuccessfulDelete,
    'Deleted hotplug attachment pod {pod}, for volume {volume}',
  ),
  released: fact(undefined, undefined, undefined),
  removed: fact(undefined, Reason.VolumeUnplugged, 'Volume {volume} has been unplugged', {
    removesEntry: true,
  }),
  failed: fact(undefined, Reason.HotplugFailed, undefined, {
    kubeEventType: KubeEventType.Warning,
  }),
};

/** The status meaning of an event type; undefined for anything that is not one. */
export function phaseOfEvent(type: string): PhaseOfEvent | undefined {
  return Object.hasOwn(PHASE_OF_EVENT, type) ? PHASE_OF_EVENT[type as EventType] : undefined;
}

/** The reason and message of a `Pending` entry: a missing PVC, or one not bound yet. */
export function pendingReasonFor(
  claim: string,
  pvcPhase: string | undefined,
): { reason: Reason; message: string } {
  return pvcPhase === undefined
    ? { reason: Reason.FailedPvcNotFound, message: PhaseMessage.pvcNotFound(claim) }
    : { reason: Reason.PVCNotReady, message: PhaseMessage.pvcInPhase(pvcPhase) };
}

/** Fills a message template's `{name}` placeholders; unknown placeholders stay as written. */
export function renderMessage(template: string, vars: Readonly<Record<string, string>>): string {
  return template.replace(/\{([a-zA-Z]+)\}/g, (whole, key: string) =>
    Object.hasOwn(vars, key) ? (vars[key] as string) : whole,
  );
}
