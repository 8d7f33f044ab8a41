/**
 * One level-triggered reconcile of a VMI's attachment volumes, as pure data: from what the
 * informer caches show (an {@link Observation}) and what this unit remembers (a {@link UnitState}),
 * decide the pod effects, the facts to publish and where to rest. No I/O.
 */
import {
  claimNameOf,
  compareOperationIds,
  EventType,
  isHotpluggable,
  PhaseMessage,
  Reason,
  Stage,
  VolumePhase,
  type EventData,
  type OperationKind,
  type PersistentVolumeClaimInfo,
  type VirtualMachineInstance,
  type VolumeStatus,
  type WorkItem,
} from '@plugline/contracts';
import { fact, nextWork, type StageEmitted } from '@plugline/bus';
import type { AttachmentVolume, Pod } from './pod.js';
import { buildAttachmentPod, isPodRunningAndReady, volumesOfPod } from './pod.js';
import type { DataVolume, PersistentVolumeClaim, PvcReadiness } from './pvc.js';
import { DataVolumePhase, pvcReadiness } from './pvc.js';
import { IN_USE_PHASES, planAttachment, type PlanAction } from './plan.js';

/** The VMI a unit is about. */
export interface VmiRef {
  namespace: string;
  name: string;
  uid: string;
}

/** What the caches show about one VMI. JSON-shaped. */
export interface Observation {
  /** Undefined when the VMI is gone. */
  vmi: VirtualMachineInstance | undefined;
  /** The launcher pod; undefined when there is none. */
  launcher: Pod | undefined;
  /** This VMI's attachment pods (by the owner-vmi-uid annotation), terminating ones included. */
  pods: Pod[];
  /** PVCs by claim name (only those the spec references). */
  pvcs: Record<string, PersistentVolumeClaim>;
  /** DataVolumes by name (only those the spec references). */
  dataVolumes: Record<string, DataVolume>;
  /**
   * This VMI's attachment pods that left the cache lately, by name, with when (epoch ms). A pod
   * this unit created may be gone before a handling sees it: deleted by a handling whose
   * snapshot write was lost, so the next one reads the state from before it.
   */
  podsGone?: Record<string, number>;
}

/** An operation a work item named for a volume. */
export interface OperationRef {
  operationId: string;
}

/** The operations this unit has heard of, per volume, by direction. */
export interface VolumeOps {
  plug?: OperationRef;
  unplug?: OperationRef;
  /** The unplug operation whose `unmounted-from-pod` arrived: the volume's pod may go. */
  unmounted?: string;
  /** The operation this unit last sent an unplug down the node stages under (`forwardUnplug`). */
  forwarded?: string;
  /** When it was sent (epoch ms); absent in snapshots written before it was kept. */
  forwardedAt?: number;
}

/** What the unit remembers between runs (persisted in its snapshot). */
export interface UnitState {
  vmi: VmiRef;
  ops: Record<string, VolumeOps>;
  /** The last fact published per volume and type, as a signature (no repeats). */
  published: Record<string, Record<string, string>>;
  /** When the first un-handled change was seen (epoch ms), if pods wait `coalesceMs` after it. */
  changeSince?: number;
  /** The pod this unit created last, until the cache shows it (informer lag). */
  created?: { name: string; at: number };
}

/** A pod effect, run by the `applyEffects` actor. */
export type Effect =
  | { kind: 'createPod'; namespace: string; pod: Pod }
  | { kind: 'deletePod'; namespace: string; name: string; uid?: string; reason: string };

/** Where a unit rests after a run; the waiting ones are re-delivered at `wakeAt`. */
export const Rest = {
  Steady: 'steady',
  Coalescing: 'coalescing',
  AwaitingVolumes: 'awaitingVolumes',
  AwaitingPods: 'awaitingPods',
  AwaitingUnmount: 'awaitingUnmount',
  /**
   * As `awaitingUnmount`, with an unplug this unit sent down the node stages itself: re-delivered
   * at `wakeAt` to send it again should no answer come (see `forwardUnplug`).
   */
  AwaitingNodeStages: 'awaitingNodeStages',
} as const;
export type Rest = (typeof Rest)[keyof typeof Rest];

export interface Decision {
  state: UnitState;
  effects: Effect[];
  /** Facts and work items, published once the effects succeeded. */
  emit: StageEmitted[];
  rest: Rest;
  wakeAt?: number;
}

export interface DecideOptions {
  /**
   * An extra wait before a new pod (default 0: none). Without it, changes still coalesce: a pod
   * is created on the first change when none of ours is starting, and everything requested while
   * one starts goes into one next pod once it settles.
   */
  coalesceMs?: number;
  /** Re-delivery of a waiting unit when no informer nudge comes (default 5000). */
  fallbackMs: number;
  /**
   * How long an unplug this unit sent down the node stages itself may go unanswered before it is
   * sent again (default 15 000; see `forwardUnplug`).
   */
  reaskMs?: number;
  /** The hotplug-disk image; default the launcher's. */
  attachImage?: string | undefined;
  /** Storage classes that bind on first consumer. */
  waitForFirstConsumerClasses: readonly string[];
}

/** Causes of the nudges this service sends itself; they never name an operation. */
export const NudgeCause = {
  Pvc: 'informer-pvc',
  DataVolume: 'informer-datavolume',
  Pod: 'informer-pod',
  Vmi: 'informer-vmi',
  Startup: 'startup',
} as const;
export type NudgeCause = (typeof NudgeCause)[keyof typeof NudgeCause];

export function isNudge(cause: string): boolean {
  return (Object.values(NudgeCause) as string[]).includes(cause);
}

/** How long a pod this unit created may be missing from the cache before it is planned anew. */
const CREATED_GRACE_MS = 5000;
const BINDING_MODE_ANNOTATION = 'sim.plugline.io/binding-mode';
const PAST_BOUND: ReadonlySet<string> = new Set([
  VolumePhase.AttachedToNode,
  VolumePhase.MountedToPod,
  VolumePhase.Ready,
  VolumePhase.UnMountedFromPod,
  VolumePhase.Detaching,
]);
const UNPLUGGED: ReadonlySet<string> = new Set([
  VolumePhase.UnMountedFromPod,
  VolumePhase.Detaching,
]);
const ATTACHED: ReadonlySet<string> = new Set([
  VolumePhase.AttachedToNode,
  VolumePhase.MountedToPod,
  VolumePhase.Ready,
]);

/** How far a status entry has come, as a reconcile tells it apart. */
function progressOf(phase: string | undefined): number {
  if (phase !== undefined && UNPLUGGED.has(phase)) return 3;
  if (phase !== undefined && IN_USE_PHASES.has(phase)) return 2;
  return phase === VolumePhase.AttachedToNode ? 1 : 0;
}

/**
 * Whether a change of one volume's status entry may let a reconcile do something it would not
 * have done before, and so needs a nudge. A plug's forward steps (to `AttachedToNode`, then to
 * `MountedToPod` or `Ready`: the facts of this unit and the node stages) only take actions away:
 * `bound` and `attached-to-node` are out, an in-use volume keeps its pod. The rest nudges: an
 * entry stepping back (a re-add reset it) or gone while a volume is in the spec or on a pod, one
 * entering the unplug phases (its pod may go), one appearing or gaining `hotplugVolume` for a
 * volume out of the spec (it may be released), one that no longer names the pod it named (it
 * may be announced again). A test holds `decide` to this: a change that nudges nothing adds no
 * effect or fact.
 */
export function statusChangeNudges(
  before: VolumeStatus | undefined,
  after: VolumeStatus | undefined,
  volume: { inSpec: boolean; onPod: boolean },
): boolean {
  // The entry of an unplugged volume going (its pods gone) leaves nothing to do.
  if (after === undefined) return before !== undefined && (volume.inSpec || volume.onPod);
  if (before === undefined) return !volume.inSpec;
  const named = before.hotplugVolume?.attachPodUID;
  if (named !== undefined && named !== after.hotplugVolume?.attachPodUID) return true;
  if (!volume.inSpec && before.hotplugVolume === undefined && after.hotplugVolume !== undefined)
    return true;
  const from = progressOf(before.phase);
  const to = progressOf(after.phase);
  return to < from || (to > from && to === progressOf(VolumePhase.Detaching));
}

/** A fresh unit state for a VMI. */
export function initialState(vmi: VmiRef): UnitState {
  return { vmi, ops: {}, published: {} };
}

/**
 * Records what a work item says about its volume's operation. Nudges name none. A work item of
 * another VMI incarnation (same name, new UID) starts the unit afresh.
 */
export function recordWork(state: UnitState, item: WorkItem): UnitState {
  let next: UnitState =
    item.vmiUID === state.vmi.uid
      ? structuredClone(state)
      : initialState({ namespace: item.namespace, name: item.vmi, uid: item.vmiUID });
  if (isNudge(item.cause)) return next;
  const ops: VolumeOps = { ...next.ops[item.volume] };
  // The newest operation of each direction, by its id (issue order), not by when the item was
  // sent: node-mounter reports an unmount under the plug it was asked to mount for when the
  // volume had left the spec meanwhile, and that report can be sent after the unplug's own; taken
  // for the volume's unplug, it left the unplug's `unmounted` unmatched and the pod held for good.
  const known = ops[item.operation];
  if (known === undefined || compareOperationIds(item.operationId, known.operationId) > 0) {
    ops[item.operation] = { operationId: item.operationId };
  }
  // Never back to an older operation either (a redelivery can bring the plug's report after the
  // unplug's own).
  if (
    item.operation === 'unplug' &&
    item.cause === EventType.UnmountedFromPod &&
    (ops.unmounted === undefined || compareOperationIds(item.operationId, ops.unmounted) >= 0)
  ) {
    ops.unmounted = item.operationId;
  }
  next = { ...next, ops: { ...next.ops, [item.volume]: ops } };
  return next;
}

interface SpecVolume {
  name: string;
  claimName: string;
  dataVolume: boolean;
}

function hotplugVolumes(vmi: VirtualMachineInstance): SpecVolume[] {
  return (vmi.spec.volumes ?? []).filter(isHotpluggable).flatMap((v) => {
    const claimName = claimNameOf(v);
    return claimName === undefined
      ? []
      : [{ name: v.name, claimName, dataVolume: v.dataVolume !== undefined }];
  });
}

const terminating = (pod: Pod): boolean => pod.metadata.deletionTimestamp !== undefined;

/** A volume as a live pod carries it (keeps a volume whose PVC flickers on its pod). */
function volumeFromPod(pod: Pod, volume: string): AttachmentVolume | undefined {
  const podVolume = pod.spec?.volumes?.find((v) => v.name === volume);
  const claimName = podVolume?.persistentVolumeClaim?.claimName;
  if (claimName === undefined) return undefined;
  const device = pod.spec?.containers[0]?.volumeDevices?.find((d) => d.name === volume);
  if (device === undefined) return { name: volume, claimName, mode: 'Filesystem' };
  return {
    name: volume,
    claimName,
    mode: 'Block',
    pvcUID: device.devicePath.split('/').pop() ?? claimName,
  };
}

class Run {
  readonly emit: StageEmitted[] = [];
  readonly state: UnitState;
  readonly statusOf: Map<string, VolumeStatus>;
  readonly vmi: VirtualMachineInstance;

  /** The volume whose facts this run reports again even if published (a resync round asked). */
  readonly #reReport: string | undefined;

  constructor(state: UnitState, vmi: VirtualMachineInstance, reReport?: string) {
    this.state = state;
    this.vmi = vmi;
    this.statusOf = new Map((vmi.status?.volumeStatus ?? []).map((s) => [s.name, s]));
    this.#reReport = reReport;
    for (const [volume, status] of this.statusOf) {
      // An in-use entry of an older plug: the volume was removed and put back before any stage
      // moved its entry. Its phase is not the current plug's, which goes down the whole chain
      // (node-mounter and domain-updater confirm the disk and its target under it); a pod
      // replaced under the same plug keeps its phase (#10165).
      if (IN_USE_PHASES.has(status.phase ?? '') && this.#announcedUnderOlderPlug(volume)) {
        const { phase: _older, ...rest } = status;
        this.statusOf.set(volume, rest);
      }
    }
  }

  /** Whether this unit announced the volume attached under a plug older than its current one. */
  #announcedUnderOlderPlug(volume: string): boolean {
    const announced = this.state.published[volume]?.[EventType.AttachedToNode];
    const plug = this.op(volume, 'plug');
    return (
      announced !== undefined && plug !== undefined && !announced.startsWith(`${plug.operationId}|`)
    );
  }

  phaseOf(volume: string): string | undefined {
    return this.statusOf.get(volume)?.phase;
  }

  /**
   * The volume's operation of this kind that facts go out under. A plug the volume's unplug came
   * after is over: when the spec shows the volume again before the re-add's request reaches this
   * unit (another replica holds that item), the old plug's id would send node-mounter work for an
   * operation the later stages rightly take for older than the unplug. The request brings its own.
   */
  op(volume: string, operation: OperationKind): OperationRef | undefined {
    const ops = this.state.ops[volume];
    const op = ops?.[operation];
    if (operation === 'plug' && ops?.unplug !== undefined && !pluggedAgain(op, ops.unplug))
      return undefined;
    return op;
  }

  /** Whether a fact of this type was published for the volume's current operation. */
  published(volume: string, operation: OperationKind, type: EventType): boolean {
    const op = this.op(volume, operation);
    const sig = this.state.published[volume]?.[type];
    return op !== undefined && sig !== undefined && sig.startsWith(`${op.operationId}|`);
  }

  /**
   * Publishes a fact unless the same signature was the last of its type for the volume — or,
   * for the volume a resync round names, again: the status may have lost it (or had an entry
   * written back that the unplug's `released` had removed).
   */
  fact(
    volume: string,
    operation: OperationKind,
    type: EventType,
    data: Omit<EventData, 'operationId' | 'operation' | 'vmiUID' | 'stage'>,
    signature = '',
  ): OperationRef | undefined {
    const op = this.op(volume, operation);
    if (op === undefined) return undefined;
    const sig = `${op.operationId}|${signature}`;
    const published = (this.state.published[volume] ??= {});
    const again = volume === this.#reReport;
    if (published[type] === sig && !again) return undefined;
    published[type] = sig;
    this.emit.push(
      fact({
        namespace: this.state.vmi.namespace,
        vmi: this.state.vmi.name,
        volume,
        type,
        data: { operationId: op.operationId, operation, vmiUID: this.state.vmi.uid, ...data },
      }),
    );
    return op;
  }

  /**
   * Why a volume we attached must keep its pod, if it must: its phase says the launcher uses it
   * (`phase`), or no phase says either way and we announced it (`attached-to-node`) on a pod that
   * still exists (`announced`): node-mounter mounts only what was announced. An announcement on
   * a pod long gone does not hold a later pod that happens to carry the volume (a quick re-add and
   * removal whose entry the status dropped: nothing would ever release it).
   */
  holdOf(volume: string, podUIDs: ReadonlySet<string>): 'phase' | 'announced' | undefined {
    const ops = this.state.ops[volume];
    if (ops?.unmounted !== undefined && ops.unmounted === ops.unplug?.operationId) return undefined;
    const phase = this.phaseOf(volume);
    if (phase !== undefined && UNPLUGGED.has(phase)) return undefined;
    if (phase !== undefined && ATTACHED.has(phase)) return 'phase';
    const announced = this.state.published[volume]?.[EventType.AttachedToNode];
    if (announced === undefined) return undefined;
    return podUIDs.has(podUidOf(announced)) ? 'announced' : undefined;
  }
}

/** The pod UID an `attached-to-node` signature (`<operation>|<pod uid>`) names. */
const podUidOf = (signature: string): string => signature.slice(signature.lastIndexOf('|') + 1);

function claimInfo(readiness: PvcReadiness | undefined): PersistentVolumeClaimInfo | undefined {
  return readiness?.ready === true ? readiness.claimInfo : undefined;
}

function readinessOf(
  v: SpecVolume,
  obs: Observation,
  options: DecideOptions,
): { readiness: PvcReadiness; dv: DataVolume | undefined } {
  const pvc = obs.pvcs[v.claimName];
  const dv = obs.dataVolumes[v.claimName];
  const wffc =
    pvc?.metadata.annotations?.[BINDING_MODE_ANNOTATION] === 'WaitForFirstConsumer' ||
    options.waitForFirstConsumerClasses.includes(pvc?.spec?.storageClassName ?? '');
  const readiness = pvcReadiness({
    claimName: v.claimName,
    pvc,
    ...(dv === undefined ? {} : { dataVolume: dv }),
    ...(wffc ? { bindingMode: 'WaitForFirstConsumer' as const } : {}),
  });
  return { readiness, dv };
}

/** The `pending` / `import-progress` / `bound` facts of the spec's volumes; the ready set. */
function volumeFacts(
  run: Run,
  obs: Observation,
  live: Pod[],
  options: DecideOptions,
): {
  desired: AttachmentVolume[];
  pending: string[];
  info: Map<string, PersistentVolumeClaimInfo>;
} {
  const desired: AttachmentVolume[] = [];
  const pending: string[] = [];
  const info = new Map<string, PersistentVolumeClaimInfo>();
  for (const v of hotplugVolumes(run.vmi)) {
    const { readiness, dv } = readinessOf(v, obs, options);
    const carrier = live.find((p) => volumesOfPod(p).includes(v.name));
    const phase = run.phaseOf(v.name) ?? '';
    const ci = claimInfo(readiness);
    if (ci !== undefined) info.set(v.name, ci);
    if (readiness.ready) {
      const volume: AttachmentVolume = {
        name: v.name,
        claimName: v.claimName,
        mode: readiness.mode,
      };
      if (readiness.pvcUID !== undefined) volume.pvcUID = readiness.pvcUID;
      desired.push(volume);
      // Also when a pod already carries it: the pod may be created (from the spec) before the
      // volume's request reaches this unit; only once attached is `bound` behind the news.
      if (!PAST_BOUND.has(phase) && !run.published(v.name, 'plug', EventType.AttachedToNode))
        run.fact(v.name, 'plug', EventType.Bound, {
          phase: VolumePhase.Bound,
          ...(ci === undefined ? {} : { details: { claimInfo: ci } }),
        });
      continue;
    }
    const kept = carrier === undefined ? undefined : volumeFromPod(carrier, v.name);
    if (kept !== undefined) {
      desired.push(kept);
      continue;
    }
    pending.push(v.name);
    if (!PAST_BOUND.has(phase) || phase === VolumePhase.AttachedToNode)
      run.fact(
        v.name,
        'plug',
        EventType.Pending,
        { phase: VolumePhase.Pending, reason: readiness.reason, message: readiness.message },
        `${readiness.reason}|${readiness.message}`,
      );
    const progress = dv?.status?.progress;
    if (progress !== undefined && dv?.status?.phase !== DataVolumePhase.Succeeded)
      run.fact(
        v.name,
        'plug',
        EventType.ImportProgress,
        { progress: progress.slice(0, 64), message: readiness.message },
        progress,
      );
  }
  return { desired, pending, info };
}

function attachedFact(
  run: Run,
  a: Extract<PlanAction, { type: 'attachedToNode' }>,
  info: Map<string, PersistentVolumeClaimInfo>,
): void {
  const inSpec = hotplugVolumes(run.vmi).some((v) => v.name === a.volume);
  const phase = run.phaseOf(a.volume) ?? '';
  if (!inSpec) return;
  const ci = info.get(a.volume);
  const announce = (): OperationRef | undefined =>
    run.fact(
      a.volume,
      'plug',
      EventType.AttachedToNode,
      {
        phase: VolumePhase.AttachedToNode,
        reason: Reason.SuccessfulCreate,
        message: PhaseMessage.attachmentPodCreated(a.pod.name, a.volume),
        node: a.node,
        attachPod: a.pod,
        ...(ci === undefined ? {} : { details: { claimInfo: ci } }),
      },
      a.pod.uid,
    );
  if (PAST_BOUND.has(phase) && phase !== VolumePhase.AttachedToNode) {
    // A volume the launcher already uses keeps its phase when its pod is replaced (#10165), and
    // stays mounted (no work for node-mounter); its status names the new pod, as KubeVirt's does.
    if (IN_USE_PHASES.has(phase)) announce();
    return;
  }
  const op = announce();
  if (op === undefined) return;
  run.emit.push(
    nextWork({
      stage: Stage.NodeMounter,
      node: a.node,
      namespace: run.state.vmi.namespace,
      vmi: run.state.vmi.name,
      vmiUID: run.state.vmi.uid,
      volume: a.volume,
      operationId: op.operationId,
      operation: 'plug',
      cause: EventType.AttachedToNode,
    }),
  );
}

function detachingFact(run: Run, volume: string, pod: string | undefined): void {
  run.fact(
    volume,
    'unplug',
    EventType.Detaching,
    {
      phase: VolumePhase.Detaching,
      reason: Reason.SuccessfulDelete,
      message: PhaseMessage.attachmentPodDeleted(pod ?? '', volume),
    },
    '',
  );
}

/**
 * How long an unplug sent down the node stages may go unanswered before it is sent again, unless
 * set. Their answer (`unmounted-from-pod`) can be lost to a transient re-add: the volume back in
 * the spec for a moment turns the chain into a mount, and a restarted node-mounter may then undo
 * the mount at start without telling anyone.
 */
const DEFAULT_REASK_MS = 15_000;

/**
 * A removed volume that only our announcement holds: its status entry went (or lost its phase)
 * before any phase said the launcher uses it, so neither the status nor the spec-watcher's resync
 * will ever speak for it. But node-mounter had the plug's work and may have mounted the volume;
 * only the node stages can say it is out of the launcher. So the unplug goes down them from here,
 * under the volume's newest operation this unit knows: its unplug, or the plug whose unplug never
 * reached this unit (it went down the node stages, and a re-add turned their chain into a mount).
 * It goes as a resync round, so a stage that already reported that operation detached or
 * unmounted says so again, and again every `reaskMs` while the pod is held: their
 * `unmounted-from-pod` frees it. Returns when to ask again. Without this the pod stayed forever,
 * its volume out of the spec and the status.
 */
function forwardUnplug(
  run: Run,
  volume: string,
  obs: Observation,
  now: number,
  reaskMs: number,
): number | undefined {
  const ops = run.state.ops[volume];
  if (ops === undefined) return undefined;
  const { plug, unplug } = ops;
  const newest = unplug === undefined || pluggedAgain(plug, unplug) ? plug : unplug;
  if (newest === undefined) return undefined;
  const askedAt = ops.forwarded === newest.operationId ? (ops.forwardedAt ?? 0) : undefined;
  if (askedAt !== undefined && now < askedAt + reaskMs) return askedAt + reaskMs;
  const announced = run.state.published[volume]?.[EventType.AttachedToNode] ?? '';
  const pod = obs.pods.find((p) => p.metadata.uid === podUidOf(announced));
  const node = pod?.spec?.nodeName ?? obs.launcher?.spec?.nodeName;
  if (node === undefined || node === '') return undefined;
  ops.forwarded = newest.operationId;
  ops.forwardedAt = now;
  run.emit.push(
    nextWork({
      stage: Stage.DomainUpdater,
      node,
      namespace: run.state.vmi.namespace,
      vmi: run.state.vmi.name,
      vmiUID: run.state.vmi.uid,
      volume,
      operationId: newest.operationId,
      operation: 'unplug',
      cause: EventType.UnplugRequested,
      resync: new Date(now).toISOString(),
    }),
  );
  return now + reaskMs;
}

/**
 * The removed volumes that keep their pod, and when to ask the node stages again about those only
 * our announcement holds (see `forwardUnplug`).
 */
function removedButHeld(
  run: Run,
  obs: Observation,
  now: number,
  reaskMs: number,
): { held: Set<string>; askAgainAt: number | undefined } {
  const specNames = new Set(hotplugVolumes(run.vmi).map((v) => v.name));
  const podUIDs = new Set(obs.pods.map((p) => p.metadata.uid ?? ''));
  const held = new Set<string>();
  let askAgainAt: number | undefined;
  for (const volume of new Set(obs.pods.flatMap(volumesOfPod))) {
    if (specNames.has(volume)) continue;
    const hold = run.holdOf(volume, podUIDs);
    if (hold !== undefined) held.add(volume);
    if (hold !== 'announced') continue;
    const at = forwardUnplug(run, volume, obs, now, reaskMs);
    if (at !== undefined) askAgainAt = Math.min(at, askAgainAt ?? at);
  }
  return { held, askAgainAt };
}

function releasedFact(run: Run, volume: string): void {
  if (run.op(volume, 'unplug') === undefined) return;
  detachingFact(run, volume, run.statusOf.get(volume)?.hotplugVolume?.attachPodName);
  run.fact(volume, 'unplug', EventType.Released, {});
}

/** Drops what the unit remembers of volumes that are nowhere any more. */
function prune(state: UnitState, vmi: VirtualMachineInstance | undefined, pods: Pod[]): void {
  const alive = new Set<string>([
    ...(vmi === undefined ? [] : hotplugVolumes(vmi).map((v) => v.name)),
    ...(vmi?.status?.volumeStatus ?? []).map((s) => s.name),
    ...pods.flatMap(volumesOfPod),
  ]);
  for (const volume of Object.keys(state.published)) {
    if (!alive.has(volume)) delete state.published[volume];
  }
  for (const [volume, ops] of Object.entries(state.ops)) {
    const released =
      state.published[volume] === undefined &&
      ops.unplug !== undefined &&
      !pluggedAgain(ops.plug, ops.unplug) &&
      !alive.has(volume);
    if (released) delete state.ops[volume];
  }
}

/**
 * Whether a plug came after the volume's unplug: the volume was added again. Its request can
 * reach this unit before the VMI cache shows the volume back in the spec (seen in the guest chain
 * test: remove, then add at once); forgetting its operation then would leave the re-added volume
 * without a single fact once the cache caught up.
 */
function pluggedAgain(plug: VolumeOps['plug'], unplug: NonNullable<VolumeOps['unplug']>): boolean {
  return plug !== undefined && compareOperationIds(plug.operationId, unplug.operationId) > 0;
}

function deleteEffect(namespace: string, a: Extract<PlanAction, { type: 'deletePod' }>): Effect {
  const e: Effect = { kind: 'deletePod', namespace, name: a.name, reason: a.reason };
  if (a.uid !== undefined) e.uid = a.uid;
  return e;
}

/** The VMI is gone: its attachment pods go (the launcher's ownerReference also cascades). */
function vmiGone(state: UnitState, obs: Observation): Decision {
  const effects = obs.pods
    .filter((p) => !terminating(p))
    .map((p): Effect => ({
      kind: 'deletePod',
      namespace: state.vmi.namespace,
      name: p.metadata.name ?? '',
      ...(p.metadata.uid === undefined ? {} : { uid: p.metadata.uid }),
      reason: 'vmiGone',
    }));
  const next = { ...state, published: {}, ops: {} };
  delete next.changeSince;
  delete next.created;
  return { state: next, effects, emit: [], rest: Rest.Steady };
}

/**
 * Whether the pod this unit created (`created`) has not shown in the cache yet, so that no other
 * is planned meanwhile. That is over once the cache shows the pod, or shows it gone since it was
 * created (deleted before a handling saw it), or after `CREATED_GRACE_MS`.
 */
function createdNotSeen(state: UnitState, obs: Observation, now: number): boolean {
  const c = state.created;
  if (c === undefined) return false;
  const shown = obs.pods.some((p) => p.metadata.name === c.name);
  const goneSince = (obs.podsGone?.[c.name] ?? 0) >= c.at;
  if (shown || goneSince || now - c.at > CREATED_GRACE_MS) {
    delete state.created;
    return false;
  }
  return true;
}

/**
 * The pod effect, if the plan creates one. The plan creates a pod only when none of ours is
 * starting (nor created and not yet seen), so the first change acts at once (leading edge) and
 * changes made while a pod starts gather into the next one. A positive `coalesceMs` adds a fixed
 * wait after the first change the pod would carry.
 */
function gateCreate(
  state: UnitState,
  obs: Observation,
  actions: readonly PlanAction[],
  now: number,
  options: DecideOptions,
): { effect?: Effect; deadline?: number } {
  const create = actions.find((a) => a.type === 'createPod');
  if (create === undefined || obs.vmi === undefined || obs.launcher === undefined) {
    delete state.changeSince;
    return {};
  }
  const coalesceMs = options.coalesceMs ?? 0;
  if (coalesceMs > 0) {
    state.changeSince ??= now;
    const deadline = state.changeSince + coalesceMs;
    if (now < deadline) return { deadline };
  }
  const pod = buildAttachmentPod({
    vmi: obs.vmi,
    launcherPod: obs.launcher,
    volumes: create.volumes,
    ...(options.attachImage === undefined ? {} : { image: options.attachImage }),
  });
  state.created = { name: create.name, at: now };
  delete state.changeSince;
  return { effect: { kind: 'createPod', namespace: state.vmi.namespace, pod } };
}

function restOf(
  podsMoving: boolean,
  volumesPending: boolean,
  actions: readonly PlanAction[],
  fallbackAt: number,
  askAgainAt: number | undefined,
): { rest: Rest; wakeAt?: number } {
  if (podsMoving) return { rest: Rest.AwaitingPods, wakeAt: fallbackAt };
  if (volumesPending) return { rest: Rest.AwaitingVolumes, wakeAt: fallbackAt };
  if (actions.some((a) => a.type === 'wait' && a.reason === 'volumeInUse'))
    return askAgainAt === undefined
      ? { rest: Rest.AwaitingUnmount }
      : { rest: Rest.AwaitingNodeStages, wakeAt: askAgainAt };
  return { rest: Rest.Steady };
}

/**
 * Decides one run. `now` is the delivery time of the work item being handled.
 *
 * - Spec volumes whose claim is not ready publish `pending` (and `import-progress`) when that
 *   changes; ready ones publish `bound` once per operation.
 * - {@link planAttachment} decides the pods: a new pod at once when none of ours is starting
 *   (plus `coalesceMs`, if set), else one pod for everything gathered once the starting one
 *   settles.
 * - A volume that left the spec keeps its pod until `unmounted-from-pod` (or its status says
 *   so): `detaching` when its pod is deleted, then `released` once no pod carries it.
 * - Running pods publish `attached-to-node` per newly attached volume, plus the node-mount work.
 */
export function decide(
  prior: UnitState,
  obs: Observation,
  now: number,
  options: DecideOptions,
  /**
   * The volume a resync round names (`resyncRoundOf`): the facts this unit published for it are
   * reported again. A plug's status is short of `AttachedToNode` (resync routes it here only
   * then): `attached-to-node` goes out again with its node-mount work. An unplug's status still
   * has an entry: `detaching` and `released` go out again once no pod carries the volume. A
   * status that lost them (its entry dropped while the stages had moved on, or written back after
   * the unplug removed it) converges instead of waiting forever.
   */
  reReport?: string,
): Decision {
  const state = structuredClone(prior);
  const vmi = obs.vmi;
  if (vmi === undefined || vmi.metadata.uid !== state.vmi.uid) return vmiGone(state, obs);
  const run = new Run(state, vmi, reReport);
  const live = obs.pods.filter((p) => !terminating(p));
  const { desired, pending, info } = volumeFacts(run, obs, live, options);
  const waitingForCache = createdNotSeen(state, obs, now);
  const { held: inUse, askAgainAt } = removedButHeld(
    run,
    obs,
    now,
    options.reaskMs ?? DEFAULT_REASK_MS,
  );
  const actions = waitingForCache
    ? []
    : planAttachment({
        vmi,
        launcherPod: obs.launcher,
        desiredReady: desired,
        pods: obs.pods,
        volumeStatus: [...run.statusOf.values()],
        inUse,
      });
  const effects: Effect[] = [];
  const gate = gateCreate(state, obs, actions, now, options);
  if (gate.effect !== undefined) effects.push(gate.effect);
  for (const a of actions) {
    if (a.type === 'deletePod') effects.push(deleteEffect(state.vmi.namespace, a));
    else if (a.type === 'attachedToNode') attachedFact(run, a, info);
    else if (a.type === 'detaching') detachingFact(run, a.volume, a.pod);
    else if (a.type === 'released') releasedFact(run, a.volume);
  }
  const podsMoving =
    waitingForCache ||
    effects.length > 0 ||
    actions.some((a) => a.type === 'wait' && a.reason !== 'volumeInUse') ||
    obs.pods.some((p) => terminating(p) || !isPodRunningAndReady(p));
  const { rest, wakeAt } =
    gate.deadline !== undefined
      ? { rest: Rest.Coalescing, wakeAt: gate.deadline }
      : restOf(podsMoving, pending.length > 0, actions, now + options.fallbackMs, askAgainAt);
  prune(state, vmi, obs.pods);
  return { state, effects, emit: run.emit, rest, ...(wakeAt === undefined ? {} : { wakeAt }) };
}
