import {
  defaultDisposition,
  StageTag,
  type Disposition,
  type StageContext,
  type StageEmitted,
  type WorkEvent,
} from '@plugline/bus';
import { asError, resyncRoundOf } from '@plugline/contracts';
import { assign, enqueueActions, fromPromise, setup, type AnyMachineSnapshot } from 'xstate';
import {
  decide,
  initialState,
  isNudge,
  recordWork,
  Rest,
  type DecideOptions,
  type Decision,
  type Effect,
  type Observation,
  type UnitState,
  type VmiRef,
} from './reconcile.js';

/**
 * The per-VMI orchestrator machine on the stage runtime. Each work item (a nudge from spec-watcher,
 * node-mounter or this service's own informers) runs one level-triggered reconcile:
 * `observing` (re-read the caches) → decide (pure) → `applying` (create / delete pods) → rest in
 * `steady`, `coalescing`, `awaitingVolumes`, `awaitingPods`, `awaitingNodeStages` (waiting:
 * re-delivered at `wakeAt`) or `awaitingUnmount` (the chain nudges it). Facts and work items are
 * emitted only once the effects succeeded. Effects are the named actors `observe` and
 * `applyEffects`.
 */
export interface OrchestratorContext extends StageContext {
  unit: UnitState;
  /** The cause of the work item being handled: nudges are acked unless coalescing. */
  cause: string;
  /** Delivery time of the work item being handled. */
  now: number;
  /** The volume a resync of a plug names (see `decide`); undefined for other work. */
  reReport: string | undefined;
  rest: Rest;
  /** The decision being applied (cleared once committed). */
  decision: Decision | undefined;
}

export interface OrchestratorInput {
  vmi: VmiRef;
}

const notProvided = <I, O>(name: string) =>
  fromPromise<O, I>(() => Promise.reject(new Error(`actor ${name} was not provided`)));

const RETRY_MS = 1000;

/** Builds the machine for a service's {@link DecideOptions} (coalescing, fallback, image). */
export function createOrchestratorMachine(options: DecideOptions) {
  return setup({
    types: {
      context: {} as OrchestratorContext,
      events: {} as WorkEvent,
      input: {} as OrchestratorInput,
      emitted: {} as StageEmitted,
    },
    actors: {
      observe: notProvided<{ vmi: VmiRef }, Observation>('observe'),
      applyEffects: notProvided<{ effects: Effect[] }, void>('applyEffects'),
    },
    guards: {
      hasEffects: ({ context }) => (context.decision?.effects.length ?? 0) > 0,
      restsIn: ({ context }, rest: Rest) => context.rest === rest,
    },
    actions: {
      recordWork: assign(({ context, event }) => ({
        unit: recordWork(context.unit, event.item),
        cause: event.item.cause,
        now: event.receivedAt,
        reReport: resyncRoundOf(event.item) === undefined ? undefined : event.item.volume,
        failure: undefined,
      })),
      decide: assign(({ context, event }) => ({
        decision: decide(
          context.unit,
          (event as unknown as { output: Observation }).output,
          context.now,
          options,
          context.reReport,
        ),
      })),
      commit: enqueueActions(({ context, enqueue }) => {
        const d = context.decision;
        if (d === undefined) return;
        for (const e of d.emit) enqueue.emit(e);
        enqueue.assign({ unit: d.state, rest: d.rest, wakeAt: d.wakeAt, decision: undefined });
      }),
      failed: assign(({ context, event }) => {
        const err = asError((event as unknown as { error: unknown }).error);
        return {
          decision: undefined,
          wakeAt: context.now + RETRY_MS,
          failure: { reason: 'ReconcileFailed', message: err.message.slice(0, 1024) },
        };
      }),
    },
  }).createMachine({
    id: 'attachmentOrchestrator',
    context: ({ input }) => ({
      unit: initialState(input.vmi),
      cause: '',
      now: 0,
      reReport: undefined,
      rest: Rest.Steady,
      decision: undefined,
    }),
    initial: 'idle',
    on: { work: { target: '.observing', actions: 'recordWork' } },
    states: {
      idle: {},
      observing: {
        invoke: {
          src: 'observe',
          input: ({ context }) => ({ vmi: context.unit.vmi }),
          onDone: { target: 'deciding', actions: 'decide' },
          onError: { target: 'retrying', actions: 'failed' },
        },
      },
      deciding: {
        always: [
          { guard: 'hasEffects', target: 'applying' },
          { target: 'routing', actions: 'commit' },
        ],
      },
      applying: {
        invoke: {
          src: 'applyEffects',
          input: ({ context }) => ({ effects: context.decision?.effects ?? [] }),
          onDone: { target: 'routing', actions: 'commit' },
          onError: { target: 'retrying', actions: 'failed' },
        },
      },
      routing: {
        always: [
          { guard: { type: 'restsIn', params: Rest.Coalescing }, target: 'coalescing' },
          { guard: { type: 'restsIn', params: Rest.AwaitingVolumes }, target: 'awaitingVolumes' },
          { guard: { type: 'restsIn', params: Rest.AwaitingPods }, target: 'awaitingPods' },
          { guard: { type: 'restsIn', params: Rest.AwaitingUnmount }, target: 'awaitingUnmount' },
          {
            guard: { type: 'restsIn', params: Rest.AwaitingNodeStages },
            target: 'awaitingNodeStages',
          },
          { target: 'steady' },
        ],
      },
      steady: {},
      coalescing: { tags: [StageTag.Waiting] },
      awaitingVolumes: { tags: [StageTag.Waiting] },
      awaitingPods: { tags: [StageTag.Waiting] },
      awaitingUnmount: {},
      awaitingNodeStages: { tags: [StageTag.Waiting] },
      retrying: { tags: [StageTag.Retry] },
    },
  });
}

export type OrchestratorMachine = ReturnType<typeof createOrchestratorMachine>;

/** The rests whose deadline only the item being handled can bring back. */
const NUDGE_KEPT_IN: ReadonlySet<Rest> = new Set([Rest.Coalescing, Rest.AwaitingNodeStages]);

/**
 * The runtime's disposition for this stage: a nudge from the informers is acked once handled
 * (the durable work items and the next nudge carry the waiting), except where nothing else would
 * come back at the deadline: while coalescing (to create the pod) and while an unplug this unit
 * sent down the node stages waits for its answer (to send it again). Everything else as
 * {@link defaultDisposition}.
 */
export function orchestratorDisposition(snapshot: AnyMachineSnapshot, now: number): Disposition {
  const context = snapshot.context as Partial<OrchestratorContext>;
  const d = defaultDisposition(snapshot, now);
  if (
    d.kind === 'waiting' &&
    isNudge(context.cause ?? '') &&
    !NUDGE_KEPT_IN.has(context.rest ?? Rest.Steady)
  )
    return { kind: 'done' };
  return d;
}
