import type { EventType } from '@plugline/contracts';
import { assign, fromPromise, setup } from 'xstate';
import { compareOperationIds } from '@plugline/contracts';
import type { VolumePhase } from '@plugline/contracts';

/**
 * The per-volume KubeVirt phase machine: what the status projector renders. States are the
 * phases; each phase has an `ok` and a `failed` substate, so a failure keeps the last good phase.
 * Events are the chain's facts; a fact of an operation older than the volume's current one is
 * ignored. Effects (writing the status, recording a Warning) are the named actors `renderStatus`
 * and `reportFailure`, provided by the adapters.
 */

export interface PhaseEvent {
  type: EventType;
  operationId: string;
  target?: string;
  reason?: string;
  message?: string;
}

export interface VolumeMachineContext {
  volume: string;
  operationId: string;
  operation: 'plug' | 'unplug';
  /** For an unplug: the newest plug operation before it, whose unplug facts still count. */
  undoes?: string;
  target: string;
  failure?: { reason: string; message: string };
}

export interface VolumeMachineInput {
  volume: string;
  operationId: string;
}

export interface RenderInput {
  volume: string;
  phase: VolumePhase;
  operationId: string;
  operation: 'plug' | 'unplug';
  target: string;
}

export interface FailureInput {
  volume: string;
  phase: VolumePhase;
  operationId: string;
  reason: string;
  message: string;
}

const notProvided = (name: string) =>
  fromPromise<void, unknown>(() => Promise.reject(new Error(`actor ${name} was not provided`)));

type PhaseName = VolumePhase;

type Transition = {
  guard: 'isCurrent' | 'isNewer' | 'isOfThisUnplug';
  target?: string;
  actions: Array<
    | 'adoptOperation'
    | 'startPlug'
    | 'startUnplug'
    | 'setTarget'
    | 'clearTarget'
    | 'recordFailure'
    | 'clearFailure'
  >;
};

function to(target: PhaseName): Transition {
  const actions: Transition['actions'] = ['adoptOperation', 'clearFailure'];
  if (target === 'Ready') actions.push('setTarget');
  if (target === 'UnMountedFromPod' || target === 'Detaching') actions.push('clearTarget');
  const unplugging = target === 'UnMountedFromPod' || target === 'Detaching';
  return { guard: unplugging ? 'isOfThisUnplug' : 'isCurrent', target, actions };
}

/** The unplug facts: what a stage reports of a volume on its way out. */
const UNPLUG_FACTS: ReadonlySet<string> = new Set([
  'detached-from-domain',
  'unmounted-from-pod',
  'detaching',
  'released',
]);

/** The direction an event drives, when it says (a `failed` keeps the current one). */
function directionOf(type: EventType): 'plug' | 'unplug' | undefined {
  if (type === 'unplug-requested' || UNPLUG_FACTS.has(type)) return 'unplug';
  return type === 'failed' || type === 'removed' || type === 'import-progress' ? undefined : 'plug';
}

const FACT_OF: Partial<Record<PhaseName, EventType>> = {
  AttachedToNode: 'attached-to-node',
  MountedToPod: 'mounted-to-pod',
  Ready: 'ready',
};

/** Plug facts may skip phases (facts arrive coalesced), never go back. */
function forwardFrom(targets: PhaseName[]): Partial<Record<EventType, Transition>> {
  const on: Partial<Record<EventType, Transition>> = {};
  for (const target of targets) on[FACT_OF[target] as EventType] = to(target);
  return on;
}

function phase(name: PhaseName, on: Partial<Record<EventType, Transition>>) {
  return {
    initial: 'ok' as const,
    invoke: {
      src: 'renderStatus' as const,
      input: ({ context }: { context: VolumeMachineContext }): RenderInput => ({
        volume: context.volume,
        phase: name,
        operationId: context.operationId,
        operation: context.operation,
        target: context.target,
      }),
    },
    on: {
      ...on,
      'unplug-requested': {
        guard: 'isNewer' as const,
        actions: ['adoptOperation' as const, 'startUnplug' as const],
      },
      failed: {
        guard: 'isCurrent' as const,
        target: `.failed`,
        actions: ['adoptOperation' as const, 'recordFailure' as const],
      },
    },
    states: {
      ok: {},
      failed: {
        invoke: {
          src: 'reportFailure' as const,
          input: ({ context }: { context: VolumeMachineContext }): FailureInput => ({
            volume: context.volume,
            phase: name,
            operationId: context.operationId,
            reason: context.failure?.reason ?? 'HotplugFailed',
            message: context.failure?.message ?? '',
          }),
        },
      },
    },
  };
}

export const volumePhaseMachine = setup({
  types: {
    context: {} as VolumeMachineContext,
    events: {} as PhaseEvent,
    input: {} as VolumeMachineInput,
    output: {} as { volume: string; operationId: string },
  },
  actors: {
    renderStatus: notProvided('renderStatus') as ReturnType<typeof fromPromise<void, RenderInput>>,
    reportFailure: notProvided('reportFailure') as ReturnType<
      typeof fromPromise<void, FailureInput>
    >,
  },
  guards: {
    /** The event belongs to the current operation or a newer one. */
    isCurrent: ({ context, event }) =>
      compareOperationIds(event.operationId, context.operationId) >= 0,
    /** The event starts a newer operation. */
    isNewer: ({ context, event }) =>
      compareOperationIds(event.operationId, context.operationId) > 0,
    /**
     * An unplug fact that counts: of the current operation or a newer one, or, while the
     * current one is an unplug, of any operation since the plug it undoes (the stages unplugged
     * under that plug's id what left the spec while the watcher was not looking).
     */
    isOfThisUnplug: ({ context, event }) =>
      compareOperationIds(event.operationId, context.operationId) >= 0 ||
      (context.operation === 'unplug' &&
        (context.undoes === undefined ||
          compareOperationIds(event.operationId, context.undoes) >= 0)),
  },
  actions: {
    adoptOperation: assign(({ context, event }) => {
      if (compareOperationIds(event.operationId, context.operationId) <= 0) return {};
      const operation = directionOf(event.type) ?? context.operation;
      const undoes =
        operation === 'plug'
          ? undefined
          : context.operation === 'plug'
            ? context.operationId
            : context.undoes;
      return { operationId: event.operationId, operation, undoes };
    }),
    startPlug: assign({ operation: 'plug' as const, failure: undefined }),
    startUnplug: assign({ operation: 'unplug' as const }),
    setTarget: assign({ target: ({ event }) => event.target ?? '' }),
    clearTarget: assign({ target: '' }),
    recordFailure: assign({
      failure: ({ event }) => ({
        reason: event.reason ?? 'HotplugFailed',
        message: event.message ?? 'hotplug failed',
      }),
    }),
    clearFailure: assign({ failure: undefined }),
  },
}).createMachine({
  id: 'volumePhase',
  context: ({ input }) => ({
    volume: input.volume,
    operationId: input.operationId,
    operation: 'plug',
    target: '',
  }),
  initial: 'Pending',
  output: ({ context }) => ({ volume: context.volume, operationId: context.operationId }),
  on: {
    released: { guard: 'isOfThisUnplug', target: '.gone', actions: 'adoptOperation' },
    removed: { guard: 'isCurrent', target: '.gone', actions: 'adoptOperation' },
  },
  states: {
    Pending: phase('Pending', {
      pending: to('Pending'),
      bound: to('Bound'),
      ...forwardFrom(['AttachedToNode', 'MountedToPod', 'Ready']),
      detaching: to('Detaching'),
      requested: { guard: 'isNewer', actions: ['adoptOperation', 'startPlug'] },
    }),
    Bound: phase('Bound', {
      pending: to('Pending'),
      bound: to('Bound'),
      ...forwardFrom(['AttachedToNode', 'MountedToPod', 'Ready']),
      detaching: to('Detaching'),
      requested: { guard: 'isNewer', actions: ['adoptOperation', 'startPlug'] },
    }),
    AttachedToNode: phase('AttachedToNode', {
      pending: to('Pending'),
      bound: to('Bound'),
      ...forwardFrom(['AttachedToNode', 'MountedToPod', 'Ready']),
      'unmounted-from-pod': to('UnMountedFromPod'),
      detaching: to('Detaching'),
      requested: { guard: 'isNewer', actions: ['adoptOperation', 'startPlug'] },
    }),
    MountedToPod: phase('MountedToPod', {
      ...forwardFrom(['MountedToPod', 'Ready']),
      'detached-from-domain': {
        guard: 'isOfThisUnplug',
        actions: ['adoptOperation', 'clearTarget'],
      },
      'unmounted-from-pod': to('UnMountedFromPod'),
      requested: { guard: 'isNewer', actions: ['adoptOperation', 'startPlug'] },
    }),
    Ready: phase('Ready', {
      ready: to('Ready'),
      'detached-from-domain': {
        guard: 'isOfThisUnplug',
        actions: ['adoptOperation', 'clearTarget'],
      },
      'unmounted-from-pod': to('UnMountedFromPod'),
      requested: { guard: 'isNewer', actions: ['adoptOperation', 'startPlug'] },
    }),
    UnMountedFromPod: phase('UnMountedFromPod', {
      'unmounted-from-pod': to('UnMountedFromPod'),
      detaching: to('Detaching'),
      // A re-add while the volume is on its way out starts over (KubeVirt #16159).
      requested: { guard: 'isNewer', target: 'Pending', actions: ['adoptOperation', 'startPlug'] },
    }),
    Detaching: phase('Detaching', {
      detaching: to('Detaching'),
      requested: { guard: 'isNewer', target: 'Pending', actions: ['adoptOperation', 'startPlug'] },
    }),
    gone: { type: 'final' },
  },
});
