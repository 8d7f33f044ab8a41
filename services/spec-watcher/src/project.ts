import type {
  EventType,
  OperationKind,
  PersistentVolumeClaimInfo,
  VolumeEvent,
  VolumePhase,
  VolumeStatus,
} from '@plugline/contracts';
import {
  compareOperationIds,
  eventTypeOf,
  keyOfEvent,
  KubeEventType,
  PhaseMessage,
  Reason,
  VolumePhase as Phase,
} from '@plugline/contracts';
import type { JsonPatchOp } from './patch.js';
import { canonicalJson } from './patch.js';
import { IN_USE_PHASES, UNPLUG_PHASE_SET, phaseRank } from './phase-sets.js';

/** The newest operation seen for a volume, and the direction it drives the volume. */
export interface NewestOperation {
  id: string;
  /** From its request (`requested`, `unplug-requested`), else from the first of its events seen. */
  direction: OperationKind;
  /** For an unplug: the newest plug operation seen before it (what it undoes). */
  undoes?: string;
  /**
   * Known from the spec-watcher's decision (its book, read after a restart), not from an event:
   * its own request may not have been projected yet, so that request is no repeat.
   */
  booked?: true;
}

/** What the projector knows besides the status: the newest operation seen per volume. */
export interface ProjectionContext {
  /**
   * Volume name → the newest operation seen for it. Events of older operations are stale, except
   * unplug facts while the newest operation is an unplug (see {@link isStale}).
   */
  operations: Readonly<Record<string, NewestOperation>>;
}

/** A Kubernetes Event to record on the VMI. */
export interface KubeEvent {
  type: KubeEventType;
  reason: string;
  message: string;
}

export interface Projection {
  next: VolumeStatus[];
  /** False when `next` is semantically the current status: no write is needed. */
  changed: boolean;
  k8sEvent?: KubeEvent;
  /** The context after this event (the event's operation adopted when it is newer). */
  operations: Readonly<Record<string, NewestOperation>>;
  /** True when the event belonged to an older operation and was ignored. */
  stale: boolean;
  /**
   * True for a plug fact that found the entry still in an unplug phase: it changed nothing and
   * taught nothing (`operations` as given). Its operation's request, which resets the entry, may
   * not have been projected yet: a projector that crashed holding it gets it back after the
   * operation's later facts, and must still apply it then.
   */
  unapplied?: true;
}

type EntryResult = { entry: VolumeStatus | undefined; k8sEvent?: KubeEvent };

const PLUG_FACT_PHASE: Partial<Record<EventType, VolumePhase>> = {
  pending: Phase.Pending,
  bound: Phase.Bound,
  'attached-to-node': Phase.AttachedToNode,
  'mounted-to-pod': Phase.MountedToPod,
  ready: Phase.Ready,
};

const newEntry = (name: string): VolumeStatus => ({ name, target: '', hotplugVolume: {} });

/** The claim info a stage attached (`details.claimInfo`, or `details.persistentVolumeClaimInfo`). */
function claimInfoOf(event: VolumeEvent): PersistentVolumeClaimInfo | undefined {
  const details = event.data.details;
  const info: unknown = details?.claimInfo ?? details?.persistentVolumeClaimInfo;
  if (info === null || typeof info !== 'object' || Array.isArray(info)) return undefined;
  return info;
}

function reasonAndMessage(
  phase: VolumePhase,
  event: VolumeEvent,
  entry: VolumeStatus,
): { reason: string; message: string } {
  const volume = entry.name;
  const pod = event.data.attachPod?.name ?? entry.hotplugVolume?.attachPodName ?? '';
  switch (phase) {
    case Phase.Pending:
      return {
        reason: event.data.reason ?? Reason.PVCNotReady,
        message: event.data.message ?? PhaseMessage.pvcInPhase('Pending'),
      };
    case Phase.Bound:
      return { reason: Reason.PVCNotReady, message: PhaseMessage.pvcInPhase('Bound') };
    case Phase.AttachedToNode:
      return {
        reason: Reason.SuccessfulCreate,
        message: PhaseMessage.attachmentPodCreated(pod, volume),
      };
    case Phase.MountedToPod:
      return { reason: Reason.VolumeMountedToPod, message: PhaseMessage.mountedToPod(volume) };
    case Phase.Ready:
      return { reason: Reason.VolumeReady, message: PhaseMessage.ready(volume) };
    case Phase.UnMountedFromPod:
      return {
        reason: Reason.VolumeUnMountedFromPod,
        message: PhaseMessage.unmountedFromPod(volume),
      };
    case Phase.Detaching:
      return {
        reason: Reason.SuccessfulDelete,
        message: PhaseMessage.attachmentPodDeleted(pod, volume),
      };
  }
}

function withPhase(entry: VolumeStatus, phase: VolumePhase, event: VolumeEvent): VolumeStatus {
  const next: VolumeStatus = { ...entry, phase, ...reasonAndMessage(phase, event, entry) };
  const claimInfo = claimInfoOf(event);
  if (claimInfo !== undefined) next.persistentVolumeClaimInfo = claimInfo;
  const pod = event.data.attachPod;
  if (phase === Phase.AttachedToNode && pod !== undefined) {
    next.hotplugVolume = { attachPodName: pod.name, attachPodUID: pod.uid };
  }
  if (phase === Phase.Ready) next.target = event.data.target ?? entry.target;
  if (phase === Phase.UnMountedFromPod || phase === Phase.Detaching) next.target = '';
  return next;
}

const inUnplugPhase = (entry: VolumeStatus | undefined): boolean =>
  entry?.phase !== undefined && UNPLUG_PHASE_SET.has(entry.phase);

/**
 * A plug fact: forward only, except that a volume not yet in use may fall back (pod or PVC lost).
 * An entry in an unplug phase never gets here (see `projectStatus`).
 */
function applyPlugFact(entry: VolumeStatus, phase: VolumePhase, event: VolumeEvent): VolumeStatus {
  const current = entry.phase;
  if (
    current !== undefined &&
    IN_USE_PHASES.has(current) &&
    phaseRank(phase) < phaseRank(current)
  ) {
    // Ready never falls back (KubeVirt #10165); a replacement pod only updates hotplugVolume.
    const pod = event.data.attachPod;
    return phase === Phase.AttachedToNode && pod !== undefined
      ? { ...entry, hotplugVolume: { attachPodName: pod.name, attachPodUID: pod.uid } }
      : entry;
  }
  return withPhase(entry, phase, event);
}

function applyUnplugFact(entry: VolumeStatus, type: EventType, event: VolumeEvent): VolumeStatus {
  const rank = phaseRank(entry.phase);
  switch (type) {
    case 'detached-from-domain':
      return { ...entry, target: '' };
    case 'unmounted-from-pod':
      return rank >= phaseRank(Phase.AttachedToNode) && rank <= phaseRank(Phase.UnMountedFromPod)
        ? withPhase(entry, Phase.UnMountedFromPod, event)
        : entry;
    default: // detaching: any entry whose volume the launcher does not use
      return entry.phase !== undefined && IN_USE_PHASES.has(entry.phase)
        ? entry
        : withPhase(entry, Phase.Detaching, event);
  }
}

const unplugged = (name: string): KubeEvent => ({
  type: KubeEventType.Normal,
  reason: Reason.VolumeUnplugged,
  message: PhaseMessage.unplugged(name),
});

function onRequested(entry: VolumeStatus | undefined, name: string): EntryResult {
  if (entry === undefined) return { entry: newEntry(name) };
  if (!inUnplugPhase(entry)) return { entry };
  // A re-add of a volume still being unplugged (KubeVirt #16159): reset; the PVC facts follow.
  const reset: VolumeStatus = { name, target: '', hotplugVolume: entry.hotplugVolume ?? {} };
  if (entry.persistentVolumeClaimInfo !== undefined)
    reset.persistentVolumeClaimInfo = entry.persistentVolumeClaimInfo;
  return { entry: reset };
}

function onUnplugRequested(entry: VolumeStatus | undefined, name: string): EntryResult {
  if (entry === undefined) return { entry };
  const neverAttached =
    phaseRank(entry.phase) <= phaseRank(Phase.Bound) &&
    entry.hotplugVolume?.attachPodName === undefined;
  return neverAttached ? { entry: undefined, k8sEvent: unplugged(name) } : { entry };
}

function applyEvent(
  entry: VolumeStatus | undefined,
  name: string,
  event: VolumeEvent,
): EntryResult {
  const type = eventTypeOf(event);
  const plugPhase = PLUG_FACT_PHASE[type];
  if (plugPhase !== undefined)
    return { entry: applyPlugFact(entry ?? newEntry(name), plugPhase, event) };
  switch (type) {
    case 'requested':
      return onRequested(entry, name);
    case 'unplug-requested':
      return onUnplugRequested(entry, name);
    case 'detached-from-domain':
    case 'unmounted-from-pod':
    case 'detaching':
      return { entry: entry === undefined ? undefined : applyUnplugFact(entry, type, event) };
    case 'released':
    case 'removed':
      return entry === undefined ? { entry } : { entry: undefined, k8sEvent: unplugged(name) };
    case 'failed': {
      const message = event.data.message ?? `hotplug of volume ${name} failed`;
      const warning = { type: KubeEventType.Warning, reason: Reason.HotplugFailed, message };
      if (entry === undefined) return { entry, k8sEvent: warning };
      return {
        entry: { ...entry, reason: event.data.reason ?? Reason.HotplugFailed, message },
        k8sEvent: warning,
      };
    }
    default: // import-progress: shown by the CLI from the event stream, not in the status
      return { entry };
  }
}

/**
 * Whether `event` belongs to an operation older than `newest` and so changes nothing. An unplug
 * fact of an older operation still counts while the newest operation is an unplug: the stages
 * act on the spec, so when the volume left it while this watcher was not looking they unplugged
 * it under the operation they last had (a plug), and the unplug issued after that carries no
 * facts of its own — the work was done.
 */
function isStale(event: VolumeEvent, newest: NewestOperation | undefined): boolean {
  const id = event.data.operationId;
  if (newest === undefined || compareOperationIds(id, newest.id) >= 0) return false;
  // Not a straggler of an unplug from before the plug that the newest unplug undoes.
  const ofThisUnplug = newest.undoes === undefined || compareOperationIds(id, newest.undoes) >= 0;
  return !(newest.direction === 'unplug' && isUnplugFact(event) && ofThisUnplug);
}

/** How far along the unplug facts take a volume, after every plug fact (see {@link progressOf}). */
const UNPLUG_PROGRESS: Partial<Record<EventType, number>> = {
  'detached-from-domain': phaseRank(Phase.UnMountedFromPod),
  'unmounted-from-pod': phaseRank(Phase.UnMountedFromPod),
  detaching: phaseRank(Phase.Detaching),
  released: phaseRank(Phase.Detaching) + 1,
  removed: phaseRank(Phase.Detaching) + 1,
};

/**
 * How far along its operation an event takes a volume: a plug fact by its phase, an unplug fact
 * after all of them, in their order; 0 for what moves nothing (a request, a failure, progress).
 */
export function progressOf(event: VolumeEvent): number {
  const type = eventTypeOf(event);
  const plugPhase = PLUG_FACT_PHASE[type];
  return plugPhase === undefined ? (UNPLUG_PROGRESS[type] ?? 0) : phaseRank(plugPhase);
}

/** A stage's report that the volume went (part of the way) out: not a request, not `removed`. */
export const isUnplugFact = (event: VolumeEvent): boolean => UNPLUG_FACTS.has(eventTypeOf(event));

const UNPLUG_FACTS: ReadonlySet<EventType> = new Set<EventType>([
  'detached-from-domain',
  'unmounted-from-pod',
  'detaching',
  'released',
]);

function withoutBooked({ booked: _booked, ...seen }: NewestOperation): NewestOperation {
  return seen;
}

/** The newest operation after `event` (not stale) was applied. */
function newestAfter(
  event: VolumeEvent,
  newest: NewestOperation | undefined,
): NewestOperation | undefined {
  const { operationId: id, operation } = event.data;
  const type = eventTypeOf(event);
  const request: OperationKind | undefined =
    type === 'requested' ? 'plug' : type === 'unplug-requested' ? 'unplug' : undefined;
  if (newest !== undefined && compareOperationIds(id, newest.id) <= 0) {
    // An older operation's unplug fact, or the newest's own event: its request fixes the direction.
    if (id !== newest.id) return newest;
    const seen = newest.booked === true ? withoutBooked(newest) : newest;
    if (request === undefined || request === seen.direction) return seen;
    return request === 'plug' ? { id, direction: request } : { ...seen, direction: request };
  }
  const direction = request ?? operation;
  if (direction === 'plug') return { id, direction };
  const undoes = newest?.direction === 'plug' ? newest.id : newest?.undoes;
  return undoes === undefined ? { id, direction } : { id, direction, undoes };
}

/** A repeated request of the volume's current operation (a retried publish): it changes nothing. */
function isRepeatedRequest(event: VolumeEvent, known: NewestOperation | undefined): boolean {
  const type = eventTypeOf(event);
  return (
    known?.id === event.data.operationId &&
    known.booked !== true &&
    (type === 'requested' || type === 'unplug-requested')
  );
}

/**
 * The status reducer: the only way `status.volumeStatus` changes. Applies one event to the
 * current entries (KubeVirt's phase, reason, message, target, hotplugVolume and claim info),
 * ignoring events of an operation older than the newest one seen for the volume.
 */
export function projectStatus(
  current: readonly VolumeStatus[],
  event: VolumeEvent,
  ctx: ProjectionContext,
): Projection {
  const { volume } = keyOfEvent(event);
  const known = ctx.operations[volume];
  if (isStale(event, known)) {
    return { next: [...current], changed: false, operations: ctx.operations, stale: true };
  }
  if (isRepeatedRequest(event, known)) {
    return { next: [...current], changed: false, operations: ctx.operations, stale: false };
  }
  const type = eventTypeOf(event);
  const newest = newestAfter(event, known);
  const operations = newest === known ? ctx.operations : { ...ctx.operations, [volume]: newest! };
  const index = current.findIndex((s) => s.name === volume);
  const before = index === -1 ? undefined : current[index];
  if (
    before === undefined &&
    newest?.direction === 'unplug' &&
    PLUG_FACT_PHASE[type] !== undefined
  ) {
    // No plug fact brings back the entry of a volume its newest operation unplugs: a stage that
    // looked while the spec still held it reports under the unplug's id (the domain-updater's
    // `ready`), and a late copy of that report would show a removed volume `Ready` for good.
    return { next: [...current], changed: false, operations, stale: false };
  }
  if (PLUG_FACT_PHASE[type] !== undefined && inUnplugPhase(before)) {
    // Only its operation's request resets an unplug's entry, and the fact teaches nothing
    // either: its operation adopted as the newest, that request would pass for a repeat when it
    // comes after it. It does when a projector died holding it (seen in the kill soak: a re-add's
    // `requested`, redelivered after its `mounted-to-pod` and `ready`).
    return {
      next: [...current],
      changed: false,
      operations: ctx.operations,
      stale: false,
      unapplied: true,
    };
  }
  const result = applyEvent(before, volume, event);
  const next = [...current];
  if (result.entry === undefined) {
    if (index !== -1) next.splice(index, 1);
  } else if (index === -1) next.push(result.entry);
  else next[index] = result.entry;
  // Only this entry can differ: comparing it alone keeps an event O(1) in the list's length.
  const changed = !entryEqual(before, result.entry);
  const projection: Projection = { next, changed, operations, stale: false };
  const k8sEvent = result.k8sEvent ?? phaseChangeEvent(before, result.entry);
  if (k8sEvent !== undefined && (changed || k8sEvent.type === KubeEventType.Warning))
    projection.k8sEvent = k8sEvent;
  return projection;
}

/**
 * The phases KubeVirt sets without an Event: virt-controller writes `Pending` and `Bound` (the
 * claim's state, reason `PVCNotReady`) quietly and records only the attachment pod's
 * `SuccessfulCreate` and `SuccessfulDelete`; virt-handler records the phases it sets.
 */
const QUIET_PHASES: ReadonlySet<string> = new Set<string>([Phase.Pending, Phase.Bound]);

function phaseChangeEvent(
  before: VolumeStatus | undefined,
  after: VolumeStatus | undefined,
): KubeEvent | undefined {
  if (after?.phase === undefined || after.phase === before?.phase) return undefined;
  if (QUIET_PHASES.has(after.phase)) return undefined;
  return {
    type: KubeEventType.Normal,
    reason: after.reason ?? after.phase,
    message: after.message ?? '',
  };
}

/** Folds events through `projectStatus`. */
export function projectAll(
  current: readonly VolumeStatus[],
  events: readonly VolumeEvent[],
  ctx: ProjectionContext = { operations: {} },
): {
  next: VolumeStatus[];
  operations: ProjectionContext['operations'];
  k8sEvents: KubeEvent[];
} {
  let next = [...current];
  let operations = ctx.operations;
  const k8sEvents: KubeEvent[] = [];
  for (const event of events) {
    const p = projectStatus(next, event, { operations });
    next = p.next;
    operations = p.operations;
    if (p.k8sEvent !== undefined) k8sEvents.push(p.k8sEvent);
  }
  return { next, operations, k8sEvents };
}

const byName = (a: VolumeStatus, b: VolumeStatus): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** Semantic equality of two entries (undefined: no entry). */
function entryEqual(a: VolumeStatus | undefined, b: VolumeStatus | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a === b || canonicalJson(a) === canonicalJson(b);
}

/** Semantic equality of two `volumeStatus` lists: entry order and undefined members do not matter. */
export function statusEqual(
  a: readonly VolumeStatus[] | undefined,
  b: readonly VolumeStatus[] | undefined,
): boolean {
  return canonicalJson([...(a ?? [])].sort(byName)) === canonicalJson([...(b ?? [])].sort(byName));
}

/**
 * The conditional write of a new `volumeStatus`: empty when nothing changed; otherwise a `test`
 * of the resourceVersion read (when given) and of the list as read, then the new list. A
 * concurrent writer makes the patch fail, and the caller re-reads and re-projects.
 */
export function buildStatusPatch(
  oldStatus: readonly VolumeStatus[] | undefined,
  newStatus: readonly VolumeStatus[],
  opts: { resourceVersion?: string } = {},
): JsonPatchOp[] {
  if (statusEqual(oldStatus, newStatus)) return [];
  const ops: JsonPatchOp[] = [];
  if (opts.resourceVersion !== undefined)
    ops.push({ op: 'test', path: '/metadata/resourceVersion', value: opts.resourceVersion });
  if (oldStatus === undefined) {
    ops.push({ op: 'add', path: '/status/volumeStatus', value: [...newStatus] });
  } else {
    ops.push({ op: 'test', path: '/status/volumeStatus', value: [...oldStatus] });
    ops.push({ op: 'replace', path: '/status/volumeStatus', value: [...newStatus] });
  }
  return ops;
}
