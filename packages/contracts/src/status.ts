/**
 * The projection of facts (events) onto a `vmi.status.volumeStatus` entry: which phase, reason,
 * message, target and attachment pod the entry shows. Pure; the status writer decides when to
 * write (only when `changed`).
 */
import type { HotplugVolumeStatus, PersistentVolumeClaimInfo, VolumeStatus } from './kubevirt.js';
import type { VolumeEvent } from './messages.js';
import { EventType, eventTypeOf, keyOfEvent } from './messages.js';
import type { PhaseOfEvent, VolumePhase } from './phases.js';
import {
  canTransition,
  IN_USE_PHASES,
  phaseOfEvent,
  renderMessage,
  VolumePhase as Phase,
} from './phases.js';

export interface VolumeStatusInput {
  name: string;
  phase?: VolumePhase;
  reason?: string;
  message?: string;
  /** The guest device (`sda`, `vdb`); "" until the disk is in the domain. */
  target?: string;
  attachPod?: { name: string; uid?: string };
  persistentVolumeClaimInfo?: PersistentVolumeClaimInfo;
  size?: number;
}

/**
 * A status entry for a hotplugged volume. `hotplugVolume` is always present (possibly empty):
 * KubeVirt treats an entry without it as a permanent volume.
 */
export function buildVolumeStatus(input: VolumeStatusInput): VolumeStatus {
  const hotplugVolume: HotplugVolumeStatus = {};
  if (input.attachPod !== undefined) {
    hotplugVolume.attachPodName = input.attachPod.name;
    if (input.attachPod.uid !== undefined) hotplugVolume.attachPodUID = input.attachPod.uid;
  }
  const status: VolumeStatus = { name: input.name, target: input.target ?? '', hotplugVolume };
  if (input.phase !== undefined) status.phase = input.phase;
  if (input.reason !== undefined) status.reason = input.reason;
  if (input.message !== undefined) status.message = input.message;
  if (input.persistentVolumeClaimInfo !== undefined)
    status.persistentVolumeClaimInfo = structuredClone(input.persistentVolumeClaimInfo);
  if (input.size !== undefined) status.size = input.size;
  return status;
}

export interface StatusProjection {
  /** The entry after the event; undefined when the entry is (or stays) absent. */
  status: VolumeStatus | undefined;
  /** Whether the entry differs from the one passed in (write only then). */
  changed: boolean;
}

/** JSON with object keys sorted, so equal objects compare equal whatever their key order. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

function samePodAfter(phase: VolumePhase): boolean {
  return phase !== Phase.Pending && phase !== Phase.Bound;
}

interface PodRef {
  name: string | undefined;
  uid: string | undefined;
}

/** The attachment pod the entry names: the event's, else (past Bound) the one it already had. */
function podOf(current: VolumeStatus | undefined, event: VolumeEvent, keep: boolean): PodRef {
  const fromEvent = event.data.attachPod;
  if (fromEvent !== undefined) return { name: fromEvent.name, uid: fromEvent.uid };
  if (!keep) return { name: undefined, uid: undefined };
  return {
    name: current?.hotplugVolume?.attachPodName,
    uid: current?.hotplugVolume?.attachPodUID,
  };
}

function nextStatus(
  current: VolumeStatus | undefined,
  event: VolumeEvent,
  phase: VolumePhase,
  meaning: PhaseOfEvent,
): VolumeStatus {
  const { volume } = keyOfEvent(event);
  const data = event.data;
  const keep = samePodAfter(phase);
  const pod = podOf(current, event, keep);
  const vars = {
    volume,
    pod: pod.name ?? '',
    pvcPhase: phase === Phase.Bound ? 'Bound' : 'Pending',
  };
  const input: VolumeStatusInput = {
    name: volume,
    phase,
    reason: data.reason ?? meaning.reason,
    message: data.message ?? renderMessage(meaning.messageTemplate ?? '', vars),
    // A volume going back to Pending/Bound (re-added while unplugging) is no longer in the domain.
    target: data.target ?? (keep ? (current?.target ?? '') : ''),
  };
  if (pod.name !== undefined) input.attachPod = { name: pod.name, uid: pod.uid };
  if (current?.persistentVolumeClaimInfo !== undefined)
    input.persistentVolumeClaimInfo = current.persistentVolumeClaimInfo;
  if (current?.size !== undefined) input.size = current.size;
  return buildVolumeStatus(input);
}

/**
 * A volume in use (`MountedToPod`, `Ready`) whose attachment pod was replaced keeps its phase
 * (#10165) but names the pod that carries it now, as virt-controller's status does: an
 * `attached-to-node` fact naming another pod changes only `hotplugVolume`.
 */
function repointed(
  current: VolumeStatus | undefined,
  event: VolumeEvent,
): StatusProjection | undefined {
  const pod = event.data.attachPod;
  if (current === undefined || pod === undefined) return undefined;
  if (eventTypeOf(event) !== EventType.AttachedToNode) return undefined;
  if (current.phase === undefined || !IN_USE_PHASES.has(current.phase)) return undefined;
  const named = current.hotplugVolume;
  if (named?.attachPodName === pod.name && named?.attachPodUID === pod.uid) return undefined;
  const hotplugVolume: HotplugVolumeStatus = { ...named, attachPodName: pod.name };
  if (pod.uid === undefined) delete hotplugVolume.attachPodUID;
  else hotplugVolume.attachPodUID = pod.uid;
  return { status: { ...current, hotplugVolume }, changed: true };
}

/**
 * Applies one fact to a volume's status entry. Facts that imply no phase, and transitions the
 * phase model forbids (e.g. `Ready` back to `Bound`), leave the entry as it is; `removed` drops
 * it. A `failed` fact keeps the last good phase (it is reported as a Warning event instead).
 */
export function applyEventToVolumeStatus(
  current: VolumeStatus | undefined,
  event: VolumeEvent,
): StatusProjection {
  const unchanged: StatusProjection = { status: current, changed: false };
  const meaning = phaseOfEvent(eventTypeOf(event));
  if (meaning === undefined) return unchanged;
  if (meaning.removesEntry) return { status: undefined, changed: current !== undefined };
  const phase = meaning.phase;
  if (phase === undefined || !canTransition(current?.phase as VolumePhase | undefined, phase))
    return repointed(current, event) ?? unchanged;
  const next = nextStatus(current, event, phase, meaning);
  return canonical(next) === canonical(current) ? unchanged : { status: next, changed: true };
}
