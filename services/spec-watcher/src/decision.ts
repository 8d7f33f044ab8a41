import type { StageEmitted } from '@plugline/bus';
import { fact, nextWork } from '@plugline/bus';
import type { OperationKind, VirtualMachineInstance, WorkItem } from '@plugline/contracts';
import { EventType } from '@plugline/contracts';
import { and, assign, emit, enqueueActions, setup } from 'xstate';
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
    phase: wanted?.status?.phase,
    node: node === undefined || node === '' ? undefined : node,
    generation: vmi?.metadata.generation,
  };
}

/** The cause of a nudge that asks for the next stage's work to be sent again. */
export const RESYNC_CAUSE = 'resync';
/** The cause of a nudge from a VMI change. */
export const SPEC_CAUSE = 'spec';

/** The event the runtime sends the decision machine for each spec-watcher work item. */
export interface DecideEvent {
  type: 'decide';
  view: VolumeView;
  /** What prompted the nudge: `spec` (a VMI change) or `resync`. */
  cause: string;
  /** The id a new operation gets, should the decision issue one (`newOperationId`). */
  newOperationId: string;
  receivedAt: number;
}

export interface DecisionContext {
  /** The operation last issued for the volume, with the VMI it was issued for. */
  book: { operationId: string; operation: OperationKind; vmiUID: string } | undefined;
  wakeAt?: number;
}

/** Maps a spec-watcher work item and its view to the machine's event. */
export function decideEvent(
  item: WorkItem,
  view: VolumeView,
  newOperationId: string,
  receivedAt: number,
): DecideEvent {
  return { type: 'decide', view, cause: item.cause, newOperationId, receivedAt };
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
      context.book.vmiUID === event.view.vmiUID,
    isResync: ({ event }) => event.cause === RESYNC_CAUSE,
    wantsPlug: ({ event }) => event.view.direction === 'plug',
  },
  actions: {
    forget: assign({ book: undefined }),
    issue: assign({
      book: ({ event }) => ({
        operationId: event.newOperationId,
        operation: event.view.direction ?? 'plug',
        vmiUID: event.view.vmiUID ?? '',
      }),
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
    /** The first work of the operation just issued, for the stage that moves it next. */
    dispatch: enqueueActions(({ context, event, enqueue }) => {
      const book = context.book!;
      const cause = book.operation === 'plug' ? EventType.Requested : EventType.UnplugRequested;
      const work = workFor(event.view, book, cause);
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
        guard: and(['sameOperation', 'isResync']),
        actions: 'renudge',
      },
      { guard: 'sameOperation' },
      { guard: 'wantsPlug', target: '.plugging', actions: ['issue', 'announce', 'dispatch'] },
      { target: '.unplugging', actions: ['issue', 'announce', 'dispatch'] },
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
