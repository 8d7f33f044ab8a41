import { fact, nextWork, StageTag, type StageEmitted, type WorkEvent } from '@plugline/bus';
import {
  compareOperationIds,
  EventType,
  PhaseMessage,
  PluglineError,
  Reason,
  RESYNC_CAUSE,
  resyncRoundOf,
  Stage,
  VolumePhase,
  type OperationKind,
  type VolumeKey,
  type WorkItem,
} from '@plugline/contracts';
import type { AnyMachineSnapshot, SnapshotFrom } from 'xstate';
import { assign, enqueueActions, fromPromise, setup } from 'xstate';
import { asObservation, type Observation, type Problem } from './observation.js';

/**
 * The domain-updater's machine, one per volume on a node (unit `ns/vmi/volume`):
 *
 * `detached → attaching → confirming → attached → detaching → awaitingRemoval → detached`, with
 * `removalStuck` when the guest has not let go within the detach timeout (a visible `failed`
 * fact; the volume stays mounted; the detach is asked again once per timeout),
 * `awaitingSource` (wanted, not mounted yet), `retrying` (transient failures) and `failed`
 * (a disk the hypervisor refuses).
 *
 * Every work item carries a fresh observation (`load`); `deciding` routes on it, so the direction
 * comes from the spec, never from the message. Resting states only: a snapshot is persisted when
 * no effect runs. A requested detach is recorded (`detachRequestedAt`) before the machine rests,
 * so it is never sent again while in flight, across restarts too, until the detach timeout has
 * passed: then it is sent again, once per timeout, as virt-launcher's sync asks on every pass for
 * a disk the spec no longer has. A guest that missed the request (an ACPI unplug it was not ready
 * for), or a record older than the domain (a snapshot write lost to a crash, after which no
 * device event this process saw can end it), would otherwise hold the volume for good. A volume
 * added back meanwhile waits for the guest up to {@link REPLUG_GRACE_MS}, then the disk still in
 * the domain is its. Deadlines live in context.
 */

/** Causes of work items that are only nudges from this stage (device events, start reconcile). */
export const NudgeCause = {
  DeviceAdded: 'device-added',
  DeviceRemoved: 'device-removed',
  Reconcile: 'reconcile',
} as const;
export type NudgeCause = (typeof NudgeCause)[keyof typeof NudgeCause];
const NUDGES: readonly string[] = Object.values(NudgeCause);

/** The cause that makes a stage re-report what it already reported (a lost fact is repaired). */
export { RESYNC_CAUSE };

/** The cause of the node-mounter work item sent once the domain let go of the disk. */
export const DETACHED_CAUSE = EventType.DetachedFromDomain;

export const DETACH_TIMEOUT_REASON = Reason.DetachTimeout;

/**
 * A volume added back while its detach is in flight waits this long from the detach request for
 * the guest to let go (then attaches it afresh); past it, the disk the domain still has is the
 * volume's. The guest may never let go (KubeVirt, too, takes a disk in the domain and in the spec
 * as attached), or the record of the detach may be older than the domain: a crash between an
 * attach and the snapshot write that would have cleared it leaves the unit a snapshot from before
 * the re-add, which no observation would ever correct. Guests let go in milliseconds to a second.
 */
export const REPLUG_GRACE_MS = 5_000;

export interface DomainUpdaterInput {
  readonly key: VolumeKey;
  readonly node: string;
  /**
   * How long the guest may take to release a disk before the unplug is reported failed; the
   * detach is then asked again once per this period.
   */
  readonly detachTimeoutMs: number;
}

export interface DomainUpdaterContext {
  readonly key: VolumeKey;
  readonly node: string;
  readonly detachTimeoutMs: number;
  readonly vmiUID: string;
  /** The operation of the last work item from the chain (nudges keep it). */
  readonly operationId: string;
  /** What `operationId` asked for (absent in snapshots written before it was kept). */
  readonly operation?: 'plug' | 'unplug' | undefined;
  /** The item being handled is a nudge or an older operation's: it did not set `operationId`. */
  readonly kept?: boolean | undefined;
  readonly cause: string;
  /**
   * The item being handled is part of a resync round (`resyncRoundOf`): the facts already
   * reported are reported again (absent in snapshots written before it was kept).
   */
  readonly restating?: boolean | undefined;
  /** `receivedAt` of the work item being handled (the machine's clock). */
  readonly now: number;
  readonly obs: Observation | null;
  readonly domain: string | null;
  /** The disk's target while attached (or being detached). */
  readonly target: string | null;
  readonly attachRequestedAt: number | null;
  /**
   * When the last detach was sent; cleared once the disk is gone. Not sent again while set, until
   * the detach timeout has passed since.
   */
  readonly detachRequestedAt: number | null;
  /** Failures since the last success. */
  readonly attempt: number;
  readonly wakeAt: number | undefined;
  readonly failure: Problem | undefined;
  /** Facts already reported (`<type>:<operation>`), so a duplicate delivery reports nothing new. */
  readonly reported: readonly string[];
}

export type DomainUpdaterEvent = WorkEvent;

export interface AttachInput {
  readonly domain: string;
  readonly volume: string;
  readonly diskXml: string;
  readonly target: string;
}
export interface AttachOutput {
  /** Epoch ms just before the attach call (events older than it are not ours). */
  readonly requestedAt: number;
}
export interface ConfirmInput {
  readonly domain: string;
  readonly volume: string;
  readonly since: number;
}
export interface ConfirmOutput {
  /** The target the domain XML shows. */
  readonly target: string;
  readonly confirmedAt: number;
}
export interface DetachInput {
  readonly domain: string;
  readonly target: string;
}
export interface DetachOutput {
  readonly requestedAt: number;
}

/** Pure: exponential backoff for `retrying`, `base · 2^(attempt-1)`, capped. */
export function retryDelay(attempt: number, baseMs = 250, maxMs = 30_000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(20, Math.max(0, attempt - 1)));
}

/** Pure: what an effect error means. Rejections retrying cannot fix make the unit `failed`. */
export function isRejection(error: unknown): boolean {
  if (!(error instanceof PluglineError) && !hasReason(error)) return false;
  const { reason, message } = error as { reason: string; message: string };
  if (reason === 'ImageLocked' || reason === 'InvalidDiskSpec') return true;
  // A duplicate alias means the disk is there already: observe again.
  return reason === 'InvalidDisk' && !/alias/i.test(message);
}

function hasReason(error: unknown): boolean {
  return typeof (error as { reason?: unknown } | null)?.reason === 'string';
}

export function problemOf(error: unknown): Problem {
  if (hasReason(error)) {
    const e = error as { reason: string; message?: unknown };
    return { reason: e.reason, message: typeof e.message === 'string' ? e.message : e.reason };
  }
  return {
    reason: 'HypervisorFailed',
    message: error instanceof Error ? error.message : String(error),
  };
}

function errorOf(event: unknown): unknown {
  return (event as { error?: unknown }).error;
}

function notProvided(name: string): never {
  throw new Error(`domain-updater actor ${name} is not provided`);
}

function observed(context: DomainUpdaterContext): Extract<Observation, { kind: 'observed' }> {
  const obs = context.obs;
  if (obs?.kind !== 'observed') throw new Error('deciding without an observation');
  return obs;
}

const isObserved = (c: DomainUpdaterContext): boolean => c.obs?.kind === 'observed';
/**
 * A detach was sent and its disk not seen removed since. The record alone can be older than the
 * domain (a snapshot write lost to a crash, or a store rolled back after one, while the disk was
 * removed and attached again): the removal this process saw after the request ends it.
 */
const detachInFlight = (c: DomainUpdaterContext): boolean =>
  c.detachRequestedAt !== null && !(removedAtOf(c) >= c.detachRequestedAt);
const removedAtOf = (c: DomainUpdaterContext): number =>
  (isObserved(c) ? observed(c).removedAt : undefined) ?? Number.NEGATIVE_INFINITY;
/** The unit's operation is a plug (a re-add took it over) and the spec wants the volume. */
const replugging = (c: DomainUpdaterContext): boolean =>
  c.operation === 'plug' && desired(c) === 'plug';
/** The re-add's wait, never past the detach's own bound. */
const replugGrace = (c: DomainUpdaterContext): number =>
  Math.min(REPLUG_GRACE_MS, c.detachTimeoutMs);
const present = (c: DomainUpdaterContext): boolean => isObserved(c) && observed(c).present !== null;
const desired = (c: DomainUpdaterContext): 'plug' | 'unplug' | undefined =>
  isObserved(c) ? observed(c).desired : undefined;

/** Whether a fact of this type for this operation should go out (again). */
function shouldReport(c: DomainUpdaterContext, type: string): boolean {
  return c.restating === true || !c.reported.includes(`${type}:${c.operationId}`);
}

function markReported(c: DomainUpdaterContext, type: string): readonly string[] {
  return markedOnce(c.reported, `${type}:${c.operationId}`);
}

/** `key` added last, once: only the last few matter (one operation at a time per volume). */
function markedOnce(reported: readonly string[], key: string): readonly string[] {
  return [...reported.filter((k) => k !== key), key].slice(-8);
}

function common(c: DomainUpdaterContext, operation: OperationKind) {
  return {
    operationId: c.operationId,
    operation,
    vmiUID: c.vmiUID,
    node: c.node,
  };
}

function readyFact(c: DomainUpdaterContext, target: string, durationMs?: number): StageEmitted {
  return fact({
    ...c.key,
    type: EventType.Ready,
    data: {
      ...common(c, 'plug'),
      phase: VolumePhase.Ready,
      reason: Reason.VolumeReady,
      message: PhaseMessage.ready(c.key.volume),
      target,
      ...(durationMs === undefined ? {} : { durationMs: Math.max(0, durationMs) }),
    },
  });
}

function detachedFact(c: DomainUpdaterContext): StageEmitted {
  const domain = c.domain ?? '';
  const durationMs =
    c.detachRequestedAt === null ? undefined : Math.max(0, c.now - c.detachRequestedAt);
  return fact({
    ...c.key,
    type: EventType.DetachedFromDomain,
    data: {
      ...common(c, 'unplug'),
      message: `Volume ${c.key.volume} has been detached from domain ${domain}`,
      ...(c.target === null ? {} : { target: c.target }),
      ...(durationMs === undefined ? {} : { durationMs }),
    },
  });
}

function failedFact(c: DomainUpdaterContext, operation: OperationKind, p: Problem): StageEmitted {
  return fact({
    ...c.key,
    type: EventType.Failed,
    data: {
      ...common(c, operation),
      reason: p.reason.slice(0, 64),
      message: p.message.slice(0, 4096),
      attempt: c.attempt,
      ...(c.target === null ? {} : { target: c.target }),
    },
  });
}

function detachTimeoutProblem(c: DomainUpdaterContext): Problem {
  const seconds = Math.round(c.detachTimeoutMs / 100) / 10;
  return {
    reason: DETACH_TIMEOUT_REASON,
    message:
      `the guest of domain ${c.domain ?? '?'} did not release volume ${c.key.volume}` +
      `${c.target === null ? '' : ` (target ${c.target})`} within ${seconds} s of the detach ` +
      `request; it is asked again every ${seconds} s, the volume stays mounted, and the unplug ` +
      'goes on once the guest lets go',
  };
}

export const domainUpdaterMachine = setup({
  types: {
    context: {} as DomainUpdaterContext,
    events: {} as DomainUpdaterEvent,
    input: {} as DomainUpdaterInput,
    emitted: {} as StageEmitted,
  },
  actors: {
    attach: fromPromise<AttachOutput, AttachInput>(() => notProvided('attach')),
    confirm: fromPromise<ConfirmOutput, ConfirmInput>(() => notProvided('confirm')),
    detach: fromPromise<DetachOutput, DetachInput>(() => notProvided('detach')),
  },
  guards: {
    gone: ({ context }) => context.obs?.kind === 'gone',
    unavailable: ({ context }) => context.obs?.kind === 'unavailable',
    /**
     * Added back, with a detach recorded and the disk still in the domain past the grace: the
     * disk is the volume's. Only for the re-add's own items (and nudges after it took the unit):
     * a nudge or late item read from a lagging copy keeps an unplug waiting (see `staleWant`).
     */
    keptByGuest: ({ context }) => {
      const requestedAt = context.detachRequestedAt;
      return (
        requestedAt !== null &&
        detachInFlight(context) &&
        present(context) &&
        replugging(context) &&
        context.now >= requestedAt + replugGrace(context)
      );
    },
    /** A detach was sent and the guest still has the disk. */
    removalPending: ({ context }) => detachInFlight(context) && present(context),
    removalOverdue: ({ context }) =>
      context.detachRequestedAt !== null &&
      context.now >= context.detachRequestedAt + context.detachTimeoutMs,
    /** This unplug's detach has timed out before (reported; the request asked again since). */
    removalStuck: ({ context }) => context.failure?.reason === DETACH_TIMEOUT_REASON,
    unplugDone: ({ context }) => desired(context) === 'unplug' && !present(context),
    wantsDetach: ({ context }) => desired(context) === 'unplug' && present(context),
    alreadyAttached: ({ context }) => desired(context) === 'plug' && present(context),
    /**
     * The VMI read says the volume is wanted, but the newest operation this unit knows removes it
     * and the item is a nudge or an older operation's: the read lags (an informer copy from
     * before the removal; seen in the kill chaos as a redelivered plug item re-attaching a
     * removed volume and reporting it `Ready` under the unplug's id). A re-add is a newer
     * operation that comes with its own item, so this one changes nothing.
     */
    staleWant: ({ context }) =>
      desired(context) === 'plug' && context.kept === true && context.operation === 'unplug',
    planRejected: ({ context }) => isObserved(context) && observed(context).planError !== null,
    sourceMissing: ({ context }) => isObserved(context) && !observed(context).sourceReady,
    canAttach: ({ context }) => isObserved(context) && observed(context).plan !== null,
    rejected: ({ event }) => isRejection(errorOf(event)),
    deviceGone: ({ event }) => problemOf(errorOf(event)).reason === 'DeviceNotFound',
  },
  actions: {
    observe: assign(({ context, event }) => {
      const obs = asObservation(event.observed);
      const nudge = NUDGES.includes(event.item.cause);
      const vmiUID = obs.kind === 'observed' ? obs.vmiUID : event.item.vmiUID;
      const newIncarnation = context.vmiUID !== '' && vmiUID !== context.vmiUID;
      // A nudge, or a late item of an older operation (a delayed wake-up, a redelivery), does
      // not take the unit over: the facts it reports stay the current operation's.
      const keep =
        context.operationId !== '' &&
        !newIncarnation &&
        (nudge || compareOperationIds(event.item.operationId, context.operationId) < 0);
      const operationId = keep ? context.operationId : event.item.operationId;
      return {
        operation: keep ? context.operation : event.item.operation,
        kept: keep,
        obs,
        now: event.receivedAt,
        cause: event.item.cause,
        restating: resyncRoundOf(event.item) !== undefined,
        vmiUID,
        operationId,
        domain: obs.kind === 'observed' ? obs.domain : context.domain,
        ...(newIncarnation ? { detachRequestedAt: null, target: null, reported: [] } : {}),
      };
    }),
    /**
     * The disk is gone while the unit's operation is an unplug it will not report here: a detach
     * it sent is over. Kept, the record outlived the disk: a crash after the re-add attached the
     * disk again (its snapshot write lost) left the next unplug waiting a minute for a detach
     * never sent, then stuck (the repeated NATS-restart chaos).
     */
    detachOverIfGone: assign(({ context }) =>
      present(context) ? {} : { detachRequestedAt: null, target: null },
    ),
    /** The VMI left this node: nothing of it is ours any more. */
    forget: assign({ detachRequestedAt: null, target: null, attempt: 0, failure: undefined }),
    scheduleRetry: assign(({ context, event }) => {
      const attempt = context.attempt + 1;
      const error = errorOf(event);
      const failure =
        error !== undefined
          ? problemOf(error)
          : context.obs?.kind === 'unavailable'
            ? { reason: context.obs.reason, message: context.obs.message }
            : context.failure;
      return { attempt, failure, wakeAt: context.now + retryDelay(attempt) };
    }),
    awaitRemoval: assign(({ context }) => ({
      wakeAt:
        (context.detachRequestedAt ?? context.now) +
        (replugging(context) ? replugGrace(context) : context.detachTimeoutMs),
      target: present(context) ? observed(context).present!.target : context.target,
    })),
    /**
     * The guest has held the disk past the bound: report it once per unplug (a resync repeats
     * it), however often the detach is asked again.
     */
    reportStuck: enqueueActions(({ context, enqueue }) => {
      const problem = detachTimeoutProblem(context);
      enqueue.assign({
        failure: problem,
        target: present(context) ? observed(context).present!.target : context.target,
      });
      if (shouldReport(context, DETACH_TIMEOUT_REASON)) {
        enqueue.emit(failedFact(context, 'unplug', problem));
        enqueue.assign({ reported: markReported(context, DETACH_TIMEOUT_REASON) });
      }
    }),
    /** The disk is gone: report it, and for an unplug hand the volume to node-mounter. */
    reportDetached: enqueueActions(({ context, enqueue }) => {
      const unplug = desired(context) === 'unplug';
      const wasOurs = context.detachRequestedAt !== null || context.target !== null;
      if ((unplug || wasOurs) && shouldReport(context, EventType.DetachedFromDomain)) {
        enqueue.emit(detachedFact(context));
        if (unplug) {
          enqueue.emit(
            nextWork({
              stage: Stage.NodeMounter,
              node: context.node,
              ...context.key,
              vmiUID: context.vmiUID,
              operationId: context.operationId,
              operation: 'unplug',
              cause: DETACHED_CAUSE,
            }),
          );
        }
        enqueue.assign({ reported: markReported(context, EventType.DetachedFromDomain) });
      }
      enqueue.assign({ detachRequestedAt: null, target: null, attempt: 0, failure: undefined });
    }),
    /**
     * The disk is there: `ready` once per operation, and again when the disk is not the one this
     * unit last knew (attached afresh under another target while its report was lost, say to a
     * crash or a store rolled back): a status naming a target the domain no longer has would
     * stay so, as nothing else moves a `Ready` volume.
     */
    reportAttached: enqueueActions(({ context, enqueue }) => {
      const target = observed(context).present!.target;
      if (shouldReport(context, EventType.Ready) || target !== context.target) {
        enqueue.emit(readyFact(context, target));
        enqueue.assign({ reported: markReported(context, EventType.Ready) });
      }
      enqueue.assign({ target, attempt: 0, failure: undefined, detachRequestedAt: null });
    }),
    rejectPlan: enqueueActions(({ context, enqueue }) => {
      const problem = observed(context).planError!;
      enqueue.assign({ failure: problem, attempt: context.attempt + 1 });
      enqueue.emit(failedFact({ ...context, attempt: context.attempt + 1 }, 'plug', problem));
    }),
    rejectAttach: enqueueActions(({ context, event, enqueue }) => {
      const problem = problemOf(errorOf(event));
      enqueue.assign({ failure: problem, attempt: context.attempt + 1 });
      enqueue.emit(failedFact({ ...context, attempt: context.attempt + 1 }, 'plug', problem));
    }),
  },
}).createMachine({
  id: 'domainUpdater',
  context: ({ input }) => ({
    key: input.key,
    node: input.node,
    detachTimeoutMs: input.detachTimeoutMs,
    vmiUID: '',
    operationId: '',
    cause: '',
    now: 0,
    obs: null,
    domain: null,
    target: null,
    attachRequestedAt: null,
    detachRequestedAt: null,
    attempt: 0,
    wakeAt: undefined,
    failure: undefined,
    reported: [],
  }),
  initial: 'detached',
  states: {
    detached: { on: { work: { target: 'deciding', actions: 'observe' } } },
    awaitingSource: { on: { work: { target: 'deciding', actions: 'observe' } } },
    deciding: {
      always: [
        { guard: 'gone', target: 'detached', actions: 'forget' },
        { guard: 'unavailable', target: 'retrying', actions: 'scheduleRetry' },
        { guard: 'keptByGuest', target: 'attached', actions: 'reportAttached' },
        // A detach is in flight: never send it again; wait, or report the guest stuck.
        { guard: 'removalPending', target: 'checkingDeadline' },
        { guard: 'unplugDone', target: 'detached', actions: 'reportDetached' },
        { guard: 'wantsDetach', target: 'detaching' },
        { guard: 'staleWant', target: 'detached', actions: 'detachOverIfGone' },
        { guard: 'alreadyAttached', target: 'attached', actions: 'reportAttached' },
        // Wanted and absent. A completed earlier unplug is reported first.
        { target: 'planning', actions: 'reportDetached' },
      ],
    },
    checkingDeadline: {
      always: [
        // Past the bound: report the guest stuck and ask again (once per timeout).
        { guard: 'removalOverdue', target: 'detaching', actions: 'reportStuck' },
        { guard: 'removalStuck', target: 'removalStuck', actions: ['reportStuck', 'awaitRemoval'] },
        { target: 'awaitingRemoval', actions: 'awaitRemoval' },
      ],
    },
    planning: {
      always: [
        { guard: 'planRejected', target: 'failed', actions: 'rejectPlan' },
        { guard: 'sourceMissing', target: 'awaitingSource' },
        { guard: 'canAttach', target: 'attaching' },
        { target: 'retrying', actions: 'scheduleRetry' },
      ],
    },
    attaching: {
      invoke: {
        id: 'attach',
        src: 'attach',
        input: ({ context }) => {
          const plan = observed(context).plan!;
          return {
            domain: observed(context).domain,
            volume: context.key.volume,
            diskXml: plan.diskXml,
            target: plan.target,
          };
        },
        onDone: {
          target: 'confirming',
          actions: assign({
            attachRequestedAt: ({ event }) => event.output.requestedAt,
            target: ({ context }) => observed(context).plan!.target,
          }),
        },
        onError: [
          { guard: 'rejected', target: 'failed', actions: 'rejectAttach' },
          { target: 'retrying', actions: 'scheduleRetry' },
        ],
      },
    },
    confirming: {
      invoke: {
        id: 'confirm',
        src: 'confirm',
        input: ({ context }) => ({
          domain: observed(context).domain,
          volume: context.key.volume,
          since: context.attachRequestedAt ?? context.now,
        }),
        onDone: {
          target: 'attached',
          actions: enqueueActions(({ context, event, enqueue }) => {
            const { target, confirmedAt } = event.output;
            enqueue.emit(
              readyFact(context, target, confirmedAt - (context.attachRequestedAt ?? confirmedAt)),
            );
            enqueue.assign({
              target,
              attempt: 0,
              failure: undefined,
              reported: markReported(context, EventType.Ready),
            });
          }),
        },
        onError: { target: 'retrying', actions: 'scheduleRetry' },
      },
    },
    attached: { on: { work: { target: 'deciding', actions: 'observe' } } },
    detaching: {
      invoke: {
        id: 'detach',
        src: 'detach',
        input: ({ context }) => ({
          domain: observed(context).domain,
          target: observed(context).present!.target,
        }),
        onDone: [
          {
            guard: 'removalStuck',
            target: 'removalStuck',
            actions: [
              assign({ detachRequestedAt: ({ event }) => event.output.requestedAt }),
              'awaitRemoval',
            ],
          },
          {
            target: 'awaitingRemoval',
            actions: [
              assign({
                detachRequestedAt: ({ event }) => event.output.requestedAt,
                attempt: 0,
                failure: undefined,
              }),
              'awaitRemoval',
            ],
          },
        ],
        onError: [
          { guard: 'deviceGone', target: 'detached', actions: 'reportDetached' },
          { target: 'retrying', actions: 'scheduleRetry' },
        ],
      },
    },
    awaitingRemoval: {
      tags: [StageTag.Waiting],
      on: { work: { target: 'deciding', actions: 'observe' } },
    },
    removalStuck: {
      tags: [StageTag.Waiting],
      on: { work: { target: 'deciding', actions: 'observe' } },
    },
    retrying: {
      tags: [StageTag.Retry],
      on: { work: { target: 'deciding', actions: 'observe' } },
    },
    failed: {
      tags: [StageTag.Failed],
      on: { work: { target: 'deciding', actions: 'observe' } },
    },
  },
});

export type DomainUpdaterMachine = typeof domainUpdaterMachine;
export type DomainUpdaterSnapshot = SnapshotFrom<DomainUpdaterMachine>;

/**
 * Whether the unit has reported the detach of `waiting`'s unplug: the item, left waiting for the
 * guest to let the disk go, is served then. Not merely the unit at rest: a nudge read against a
 * lagging VMI cache changes nothing (the stale-want rule) and leaves the unit untagged, and only
 * the unplug's own item reads the VMI fresh enough to finish the detach.
 */
export function detachReported(snapshot: AnyMachineSnapshot, waiting: WorkItem): boolean {
  const reported = (snapshot.context as Partial<DomainUpdaterContext> | undefined)?.reported;
  return (
    waiting.operation === 'unplug' &&
    (reported ?? []).includes(`${EventType.DetachedFromDomain}:${waiting.operationId}`)
  );
}

/** The resting states (a persisted snapshot is always in one of these). */
export const UpdaterState = {
  Detached: 'detached',
  AwaitingSource: 'awaitingSource',
  Attaching: 'attaching',
  Confirming: 'confirming',
  Attached: 'attached',
  Detaching: 'detaching',
  AwaitingRemoval: 'awaitingRemoval',
  RemovalStuck: 'removalStuck',
  Retrying: 'retrying',
  Failed: 'failed',
} as const;
export type UpdaterState = (typeof UpdaterState)[keyof typeof UpdaterState];
