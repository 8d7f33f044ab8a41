import type { StageEmitted } from '@plugline/bus';
import { fact, nextWork } from '@plugline/bus';
import type {
  OperationKind,
  VirtualMachineInstance,
  VolumeStatus,
  WorkItem,
} from '@plugline/contracts';
import { EventType, RESYNC_CAUSE, Stage, VolumePhase } from '@plugline/contracts';
import { and, assign, emit, enqueueActions, setup } from 'xstate';
import { UNPLUG_PHASE_SET } from './phase-sets.js';
import { desiredDirections, routeFor } from './plan.js';

/**
 * The spec-watcher's decision, per volume (unit `ns/vmi/volume`): which direction the volume
 * should go (from the VMI as it is now), and whether that needs a new operation. The operation
 * book — the operation last issued for the volume — is the machine's context, persisted by the
 * stage runtime in the `plugline-spec-watcher` KV bucket, so a restarted or resyncing watcher
 * re-uses the operation id instead of issuing a new one per nudge.
 */

/** What the decision reads: one volume of the VMI as the cache (or the API server) shows it now. */
export interface VolumeView {
  namespace: string;
  vmi: string;
  volume: string;
  /** The VMI's uid; undefined when the VMI does not exist. */
  vmiUID: string | undefined;
  /** Where the volume should go; undefined when neither the spec nor the status has it. */
  direction: OperationKind | undefined;
  /** Its `status.volumeStatus` phase, when it has an entry with one. */
  phase: string | undefined;
  /** `status.nodeName`. */
  node: string | undefined;
  generation: number | undefined;
}

/**
 * The phase a volume is routed by: its entry's, except that a `Ready` entry without a target
 * counts as `AttachedToNode`: its disk left the domain (an unplug began and the volume came
 * back), and how far the unplug went is not known (its later facts may have been ignored as
 * older than the re-add, or still be on their way), so the node stages confirm the mount, then
 * the disk, again.
 */
export function routingPhaseOf(status: VolumeStatus | undefined): string | undefined {
  const phase = status?.phase;
  return phase === VolumePhase.Ready && status?.target === '' ? VolumePhase.AttachedToNode : phase;
}

/** The view of `volume` in `vmi` (undefined: the VMI is gone). Pure. */
export function viewOf(
  key: { namespace: string; vmi: string; volume: string },
  vmi: VirtualMachineInstance | undefined,
): VolumeView {
  const wanted = vmi === undefined ? undefined : desiredDirections(vmi).get(key.volume);
  const node = vmi?.status?.nodeName;
  return {
    ...key,
    vmiUID: vmi?.metadata.uid,
    direction: wanted?.operation,
    phase: routingPhaseOf(wanted?.status),
    node: node === undefined || node === '' ? undefined : node,
    generation: vmi?.metadata.generation,
  };
}

/** The cause of a nudge that asks for the next stage's work to be sent again. */
export { RESYNC_CAUSE };
/** The cause of a nudge from a VMI change. */
export const SPEC_CAUSE = 'spec';
/**
 * The cause of a nudge from a VMI change that dropped the plug entry of a volume the spec still
 * wants (another writer of the status removed it): the stages state their facts again.
 */
export const ENTRY_REMOVED_CAUSE = 'entry-removed';
/**
 * The cause of a nudge from a VMI change that wrote back the entry of a volume its unplug had
 * removed (a restore): the stages state their facts again, and the entry goes.
 */
export const ENTRY_RETURNED_CAUSE = 'entry-returned';
/** The cause of the projector's nudge: a stage unplugged the volume while the spec wants it. */
export const REVERSED_CAUSE = 'reversed';

/** The id of the projector's nudge saying operation `operationId` was unplugged (reversed). */
export const reversedNudgeId = (operationId: string): string => `reversed-${operationId}`;

/** The event the runtime sends the decision machine for each spec-watcher work item. */
export interface DecideEvent {
  type: 'decide';
  view: VolumeView;
  /**
   * What prompted the nudge: `spec` (a VMI change), `entry-removed`, `entry-returned`, `resync`
   * or `reversed`.
   */
  cause: string;
  /** The nudge's own id (its work item's `operationId`). */
  nudgeId: string;
  /** The id a new operation gets, should the decision issue one (`newOperationId`). */
  newOperationId: string;
  receivedAt: number;
}

/** The spec-watcher's own work item: a nudge to decide one volume (the id names the nudge). */
export function decisionNudge(
  vmi: VirtualMachineInstance,
  nudge: {
    volume: string;
    operation: OperationKind;
    /** `spec` or `resync`. */
    cause: string;
    /** Names the nudge (`rv-<resourceVersion>`, `resync-<round>`): its `Nats-Msg-Id` dedups repeats. */
    id: string;
    now?: Date;
  },
): WorkItem {
  const { volume, operation, cause, id: nudgeId, now = new Date() } = nudge;
  const item: WorkItem = {
    v: 1,
    stage: Stage.SpecWatcher,
    namespace: vmi.metadata.namespace ?? 'default',
    vmi: vmi.metadata.name ?? '',
    vmiUID: vmi.metadata.uid ?? '',
    volume,
    operationId: nudgeId,
    operation,
    cause,
    issuedAt: now.toISOString(),
  };
  if (vmi.metadata.generation !== undefined) item.observedGeneration = vmi.metadata.generation;
  return item;
}

export interface DecisionContext {
  /**
   * The operation last issued for the volume, with the VMI it was issued for and that VMI's
   * generation then (absent in books written before it was kept); for an unplug, the plug it
   * undoes (the newest plug issued before it, as the status projector counts it).
   */
  book:
    | {
        operationId: string;
        operation: OperationKind;
        vmiUID: string;
        generation?: number;
        undoes?: string;
      }
    | undefined;
  wakeAt?: number;
}

/** The decision unit of a volume: one per VMI name and volume name. */
export function decisionUnit(ref: { namespace: string; vmi: string; volume: string }): string {
  return `${ref.namespace}/${ref.vmi}/${ref.volume}`;
}

/**
 * The operation a decision unit's persisted context (see `readUnitContext`) last issued for a
 * volume of the VMI `vmiUID`; undefined when there is none, it was for another VMI of the same
 * name, or the context is not a decision book.
 */
export function bookedOperation(
  context: unknown,
  vmiUID: string,
): { operationId: string; operation: OperationKind; undoes?: string } | undefined {
  const book = (context as Partial<DecisionContext> | undefined)?.book as
    Record<string, unknown> | undefined;
  if (typeof book !== 'object' || book === null || book.vmiUID !== vmiUID) return undefined;
  const { operationId, operation, undoes } = book;
  if (typeof operationId !== 'string' || (operation !== 'plug' && operation !== 'unplug')) {
    return undefined;
  }
  return typeof undoes === 'string' && operation === 'unplug'
    ? { operationId, operation, undoes }
    : { operationId, operation };
}

/** Maps a spec-watcher work item and its view to the machine's event. */
export function decideEvent(
  item: WorkItem,
  view: VolumeView,
  newOperationId: string,
  receivedAt: number,
): DecideEvent {
  return {
    type: 'decide',
    view,
    cause: item.cause,
    nudgeId: item.operationId,
    newOperationId,
    receivedAt,
  };
}

function workFor(
  view: VolumeView,
  ref: { operationId: string; operation: OperationKind; vmiUID: string },
  cause: string,
): StageEmitted | undefined {
  const route = routeFor(ref.operation, view.phase, view.node);
  if (route === undefined) return undefined;
  return nextWork({
    stage: route.stage,
    ...(route.node === undefined ? {} : { node: route.node }),
    namespace: view.namespace,
    vmi: view.vmi,
    vmiUID: ref.vmiUID,
    volume: view.volume,
    operationId: ref.operationId,
    operation: ref.operation,
    cause,
    ...(view.generation === undefined ? {} : { observedGeneration: view.generation }),
  });
}

/**
 * Whether the stages unplugged the volume under a plug operation after it was issued: the spec
 * changed since (a newer generation) and the status shows an unplug phase, so the volume left the
 * spec and came back while this watcher did not see it (it was down, or its informer skipped
 * the versions in between). The other stages act on the spec itself, so they detached it under
 * the old operation; only a new one (its `requested` resets the entry) carries the re-add, since
 * the old operation's facts are in the past (the status ignores plug facts in an unplug phase,
 * and the stream drops a repeated fact of one operation).
 */
function unpluggedSince(book: NonNullable<DecisionContext['book']>, view: VolumeView): boolean {
  return (
    book.operation === 'plug' &&
    view.phase !== undefined &&
    UNPLUG_PHASE_SET.has(view.phase) &&
    book.generation !== undefined &&
    view.generation !== undefined &&
    view.generation > book.generation
  );
}

/**
 * Whether the projector reported that the stages unplugged the volume under the book's plug
 * operation (an unplug fact of it, while the spec wants the volume). That happens when the volume
 * left the spec and came back while this watcher was down: the stages undid and redid the plug
 * under the one operation, and the stream dropped the redo's facts as repeats, so the status
 * shows the undo (no entry, or a `Ready` entry without a target). Only a new operation carries
 * the re-add, as in {@link unpluggedSince}.
 */
function reversedUnder(book: NonNullable<DecisionContext['book']>, event: DecideEvent): boolean {
  return (
    event.cause === REVERSED_CAUSE &&
    book.operation === 'plug' &&
    event.nudgeId === reversedNudgeId(book.operationId)
  );
}

export const decisionMachine = setup({
  types: {
    context: {} as DecisionContext,
    events: {} as DecideEvent,
    emitted: {} as StageEmitted,
  },
  guards: {
    /** Nothing wants the volume to move (gone from spec and status, or the VMI is gone). */
    noDirection: ({ event }) =>
      event.view.direction === undefined || event.view.vmiUID === undefined,
    /** The book already holds an operation in the wanted direction, for this VMI. */
    sameOperation: ({ context, event }) =>
      context.book !== undefined &&
      context.book.operation === event.view.direction &&
      context.book.vmiUID === event.view.vmiUID &&
      !unpluggedSince(context.book, event.view) &&
      !reversedUnder(context.book, event),
    /**
     * The nudge asks for the current operation's work again: a resync; the projector's report of
     * an unplug fact of another operation while the spec wants the volume (it may have taken the
     * disk out of the domain under the current plug's feet); or a VMI change that dropped the
     * volume's plug entry, or wrote back the entry its unplug removed. The work goes out as a
     * resync's, so the stages state their facts again and the status is rebuilt now, not at the
     * next periodic resync.
     */
    resends: ({ event }) =>
      event.cause === RESYNC_CAUSE ||
      ((event.cause === REVERSED_CAUSE || event.cause === ENTRY_REMOVED_CAUSE) &&
        event.view.direction === 'plug') ||
      (event.cause === ENTRY_RETURNED_CAUSE && event.view.direction === 'unplug'),
    wantsPlug: ({ event }) => event.view.direction === 'plug',
    /**
     * The book holds an unplug of this VMI: the volume comes back while it may be on its way out,
     * and the status may still show where it was before (the unplug's facts, now older than the
     * re-add, are ignored when they arrive).
     */
    afterUnplug: ({ context, event }) =>
      context.book?.operation === 'unplug' && context.book.vmiUID === event.view.vmiUID,
  },
  actions: {
    forget: assign({ book: undefined }),
    issue: assign({
      book: ({ context, event }) => {
        const operation = event.view.direction ?? 'plug';
        const vmiUID = event.view.vmiUID ?? '';
        const before = context.book?.vmiUID === vmiUID ? context.book : undefined;
        const undoes =
          operation !== 'unplug'
            ? undefined
            : before?.operation === 'plug'
              ? before.operationId
              : before?.undoes;
        return {
          operationId: event.newOperationId,
          operation,
          vmiUID,
          ...(event.view.generation === undefined ? {} : { generation: event.view.generation }),
          ...(undoes === undefined ? {} : { undoes }),
        };
      },
    }),
    /** The request fact of the operation just issued. */
    announce: emit(({ context, event }) => {
      const book = context.book!;
      return fact({
        namespace: event.view.namespace,
        vmi: event.view.vmi,
        volume: event.view.volume,
        type: book.operation === 'plug' ? EventType.Requested : EventType.UnplugRequested,
        data: {
          operationId: book.operationId,
          operation: book.operation,
          vmiUID: book.vmiUID,
          ...(event.view.node === undefined ? {} : { node: event.view.node }),
        },
      });
    }),
    /**
     * The first work of the operation just issued, for the stage that moves it next; with
     * `wholeChain`, for the first stage whatever the status shows.
     */
    dispatch: enqueueActions(({ context, event, enqueue }, params: { wholeChain: boolean }) => {
      const book = context.book!;
      const cause = book.operation === 'plug' ? EventType.Requested : EventType.UnplugRequested;
      // After a reversal the status shows what the undo left (a `Ready` without a target, say),
      // and after an unplug maybe what was there before it, not where the volume is: the whole
      // chain confirms it again under the new operation.
      const view =
        event.cause === REVERSED_CAUSE || params.wholeChain
          ? { ...event.view, phase: undefined }
          : event.view;
      const work = workFor(view, book, cause);
      if (work !== undefined) enqueue.emit(work);
    }),
    /** Resync: the current operation's work, again, for the stage that moves it next. */
    renudge: enqueueActions(({ context, event, enqueue }) => {
      const work = workFor(event.view, context.book!, RESYNC_CAUSE);
      if (work !== undefined) enqueue.emit(work);
    }),
  },
}).createMachine({
  id: 'specWatcherDecision',
  context: { book: undefined },
  initial: 'idle',
  on: {
    decide: [
      { guard: 'noDirection', target: '.idle', actions: 'forget' },
      {
        guard: and(['sameOperation', 'resends']),
        actions: 'renudge',
      },
      { guard: 'sameOperation' },
      {
        guard: and(['wantsPlug', 'afterUnplug']),
        target: '.plugging',
        actions: ['issue', 'announce', { type: 'dispatch', params: { wholeChain: true } }],
      },
      {
        guard: 'wantsPlug',
        target: '.plugging',
        actions: ['issue', 'announce', { type: 'dispatch', params: { wholeChain: false } }],
      },
      {
        target: '.unplugging',
        actions: ['issue', 'announce', { type: 'dispatch', params: { wholeChain: false } }],
      },
    ],
  },
  states: {
    /** No operation: the volume is in neither the spec nor the status. */
    idle: {},
    /** A plug operation was issued; its stages carry it to `Ready`. */
    plugging: {},
    /** An unplug operation was issued; its stages carry it until the entry is removed. */
    unplugging: {},
  },
});
