import { assign, emit, fromPromise, setup } from 'xstate';
import type { SnapshotFrom } from 'xstate';

import { fact, nextWork } from '@plugline/bus';
import type { FactSpec, StageContext, StageEmitted, WorkEvent, WorkSpec } from '@plugline/bus';
import { EventType, PhaseMessage, Reason, Stage, VolumePhase } from '@plugline/contracts';
import type { WorkItem } from '@plugline/contracts';

import { DecisionKind } from './decide.js';
import type { Decision } from './decide.js';
import { SourceNotFoundError } from './errors.js';
import { backoffDelay, isTerminalError, summarizeError } from './machine.js';
import type { ErrorSummary } from './machine.js';
import type { MountedFact, PlugRequest, UnmountedFact, UnplugRequest } from './node-mounter.js';

/**
 * The node-mounter's machine on the stage runtime (`@plugline/bus` `runStage`), one per
 * `ns/vmi/volume` on a node. Every work event carries the decision made from the truth
 * (`observed`, see `decide`); the machine runs the matching effect as a named actor and emits
 * the facts and the next stage's work:
 *
 * - plug → `plugging` (actor `plug`) → `mounted`: fact `mounted-to-pod`, work for the
 *   domain-updater on this node;
 * - unplug → `unplugging` (actor `unplug`) → `unmounted`: fact `unmounted-from-pod`, work for the
 *   attachment-orchestrator;
 * - wait → `waiting` (tag `waiting`, re-delivered at `wakeAt`); skip → `skipped` (acked);
 *   refuse or a terminal error → `failed` (tag `failed`: term + `failed` event);
 *   another error → `retrying` (tag `retry`, `wakeAt` from a backoff on consecutive failures).
 *
 * Every resting state takes the next work event: the direction is always the latest decision.
 * Effects are idempotent, so a repeated decision re-verifies and re-emits (deduplicated by
 * `Nats-Msg-Id` within the window; later duplicates are harmless to the projector).
 */

/** How the launcher's device cgroup was handled. */
export const CgroupState = {
  /** Filesystem volume: no cgroup rule involved. */
  None: 'none',
  Allowed: 'allowed',
  Denied: 'denied',
  /** `PLUGLINE_DEVICE_CGROUP_ROOT` is set but the launcher's cgroup folder does not exist. */
  Absent: 'absent',
  /** No `PLUGLINE_DEVICE_CGROUP_ROOT`: cgroup rules are not managed (embedded default). */
  Disabled: 'disabled',
  /** cgroup v2 (no devices files; eBPF, out of scope) or no device number known. */
  Skipped: 'skipped',
} as const;
export type CgroupState = (typeof CgroupState)[keyof typeof CgroupState];

export interface PlugResult {
  readonly fact: MountedFact;
  readonly cgroup: CgroupState;
  readonly durationMs: number;
}

export interface UnplugResult {
  readonly fact: UnmountedFact;
  readonly cgroup: CgroupState;
  readonly durationMs: number;
}

export interface MounterStageContext extends StageContext {
  readonly item: WorkItem | null;
  readonly decision: Decision | null;
  readonly receivedAt: number;
  /** Effect failures since the last success (drives the retry backoff). */
  readonly failures: number;
  /** Consecutive `wait` decisions (drives the wait delay). */
  readonly waits: number;
  readonly lastError: ErrorSummary | null;
  readonly mounted: PlugResult | null;
  readonly unmounted: UnplugResult | null;
}

/** The work event with its decision (`load` returns a {@link Decision}). */
export type MounterWorkEvent = WorkEvent & { observed?: Decision };

/**
 * The first wait is short: the usual one is this node's pod cache a few milliseconds behind the
 * orchestrator's, which announced `attached-to-node` from its own (`AttachmentPodNotRunning`).
 * The service's `load` waits out that lag in the handling first (up to 100 ms, on the cache's
 * next change: `POD_CACHE_CATCH_UP_MS`); a unit rests only when the pod is still not ready. With
 * a busy loop beside the bench, a 250 ms first wait made the one-volume plug's p99 282 ms in one
 * run of two, 50 ms made it 76-85 ms, and the wait in the handling 37 ms (issue 10). The waits
 * double from there, as virt-handler's rate-limited requeues do, so a long wait costs a few more
 * handlings, no more.
 */
const WAIT_BASE_MS = 50;
const WAIT_MAX_MS = 5000;

/** Pure: the delay of the n-th consecutive wait (0-based). */
export function waitDelay(waits: number): number {
  return Math.min(WAIT_BASE_MS * 2 ** Math.min(waits, 16), WAIT_MAX_MS);
}

/**
 * Pure: when a unit whose effect failed `failures` times in a row (1-based) is delivered again.
 * A plug whose attachment pod's disk is gone from under it (`SourceNotFoundError`) looked at a
 * pod that is no longer the volume's: the orchestrator deletes the pod it attached a volume
 * through once the pod for the VMI's whole set runs (issue 10's throughput run: 3 plugs of 1,000,
 * each waiting out the 500 ms backoff, 520–600 ms in this stage). The truth has moved on, so the
 * next look comes as soon as a wait's would, and doubles as waits do: a disk missing for good
 * still costs a handling every 5 s at most. Any other failure backs off from 500 ms.
 */
export function retryDelay(failures: number, error: unknown): number {
  return error instanceof SourceNotFoundError ? waitDelay(failures - 1) : backoffDelay(failures);
}

function decisionOf(event: MounterWorkEvent): Decision {
  return (
    event.observed ?? {
      kind: DecisionKind.Wait,
      reason: 'NotObserved',
      message: 'the truth was not read for this work item',
    }
  );
}

function itemOf(context: MounterStageContext): WorkItem {
  if (context.item === null) throw new Error('node-mounter machine has no work item');
  return context.item;
}

function deviceOf(result: PlugResult): string | undefined {
  const device = result.fact.device;
  return device === undefined ? undefined : `${device.major}:${device.minor}`;
}

/** Pure: the `mounted-to-pod` fact of a finished plug. */
export function mountedFact(item: WorkItem, decision: Decision, result: PlugResult): FactSpec {
  const device = deviceOf(result);
  return {
    namespace: item.namespace,
    vmi: item.vmi,
    volume: item.volume,
    type: EventType.MountedToPod,
    data: {
      operationId: item.operationId,
      operation: 'plug',
      vmiUID: item.vmiUID,
      node: item.node ?? '',
      phase: VolumePhase.MountedToPod,
      reason: Reason.VolumeMountedToPod,
      message: PhaseMessage.mountedToPod(item.volume),
      ...(decision.kind === DecisionKind.Plug ? { attachPod: decision.attachPod } : {}),
      durationMs: result.durationMs,
      details: {
        mode: result.fact.mode,
        changed: result.fact.changed,
        cgroup: result.cgroup,
        ...(device === undefined ? {} : { device }),
        ...(result.fact.sourceMismatch ? { sourceMismatch: true } : {}),
        ...(decision.kind === DecisionKind.Plug ? { launcherPod: decision.launcherPod } : {}),
      },
    },
  };
}

/** Pure: the `unmounted-from-pod` fact of a finished unplug. */
export function unmountedFact(item: WorkItem, decision: Decision, result: UnplugResult): FactSpec {
  return {
    namespace: item.namespace,
    vmi: item.vmi,
    volume: item.volume,
    type: EventType.UnmountedFromPod,
    data: {
      operationId: item.operationId,
      operation: 'unplug',
      vmiUID: item.vmiUID,
      node: item.node ?? '',
      phase: VolumePhase.UnMountedFromPod,
      reason: Reason.VolumeUnMountedFromPod,
      message: PhaseMessage.unmountedFromPod(item.volume),
      durationMs: result.durationMs,
      details: {
        ...(result.fact.mode === undefined ? {} : { mode: result.fact.mode }),
        changed: result.fact.changed,
        unmounted: result.fact.unmounted,
        removed: result.fact.removed,
        cgroup: result.cgroup,
        ...(decision.kind === DecisionKind.Unplug ? { why: decision.why } : {}),
      },
    },
  };
}

function followUp(
  item: WorkItem,
): Pick<
  WorkSpec,
  'namespace' | 'vmi' | 'vmiUID' | 'volume' | 'operationId' | 'observedGeneration'
> {
  return {
    namespace: item.namespace,
    vmi: item.vmi,
    vmiUID: item.vmiUID,
    volume: item.volume,
    operationId: item.operationId,
    ...(item.observedGeneration === undefined
      ? {}
      : { observedGeneration: item.observedGeneration }),
  };
}

/** Pure: the domain-updater's nudge after a plug (on this node). */
export function domainUpdaterWork(item: WorkItem): WorkSpec {
  return {
    ...followUp(item),
    stage: Stage.DomainUpdater,
    ...(item.node === undefined ? {} : { node: item.node }),
    operation: 'plug',
    cause: EventType.MountedToPod,
  };
}

/** Pure: the attachment-orchestrator's nudge after an unplug (cluster-wide stage). */
export function orchestratorWork(item: WorkItem): WorkSpec {
  return {
    ...followUp(item),
    stage: Stage.AttachmentOrchestrator,
    operation: 'unplug',
    cause: EventType.UnmountedFromPod,
  };
}

function notProvided(name: string): never {
  throw new Error(`node-mounter stage actor ${name} is not provided`);
}

function errorOf(event: unknown): unknown {
  return (event as { error?: unknown }).error;
}

export const mounterStageMachine = setup({
  types: {
    context: {} as MounterStageContext,
    events: {} as MounterWorkEvent,
    emitted: {} as StageEmitted,
  },
  actors: {
    plug: fromPromise<PlugResult, PlugRequest>(() => notProvided('plug')),
    unplug: fromPromise<UnplugResult, UnplugRequest>(() => notProvided('unplug')),
  },
  guards: {
    decided: ({ event }, params: { kind: DecisionKind }) => decisionOf(event).kind === params.kind,
    terminal: ({ event }) => isTerminalError(errorOf(event)),
  },
  actions: {
    accept: assign(({ event, context }) => ({
      item: event.item,
      decision: decisionOf(event),
      receivedAt: event.receivedAt,
      wakeAt: undefined,
      failure: undefined,
      waits: decisionOf(event).kind === DecisionKind.Wait ? context.waits : 0,
    })),
    scheduleWait: assign(({ context }) => ({
      wakeAt: context.receivedAt + waitDelay(context.waits),
      waits: context.waits + 1,
    })),
    refuse: assign(({ context }) => {
      const d = context.decision;
      return {
        failure:
          d !== null && 'reason' in d
            ? { reason: d.reason, message: d.message }
            : { reason: 'Refused', message: 'refused' },
      };
    }),
    recordFailure: assign(({ context, event }) => {
      const error = summarizeError(errorOf(event));
      const failures = context.failures + 1;
      return {
        failures,
        lastError: error,
        wakeAt: context.receivedAt + retryDelay(failures, errorOf(event)),
        failure: { reason: error.reason, message: error.message },
      };
    }),
    succeeded: assign({ failures: 0, lastError: null }),
  },
}).createMachine({
  id: 'nodeMounterStage',
  initial: 'idle',
  context: {
    item: null,
    decision: null,
    receivedAt: 0,
    failures: 0,
    waits: 0,
    lastError: null,
    mounted: null,
    unmounted: null,
  },
  on: {
    work: [
      {
        guard: { type: 'decided', params: { kind: DecisionKind.Plug } },
        target: '.plugging',
        actions: 'accept',
      },
      {
        guard: { type: 'decided', params: { kind: DecisionKind.Unplug } },
        target: '.unplugging',
        actions: 'accept',
      },
      {
        guard: { type: 'decided', params: { kind: DecisionKind.Wait } },
        target: '.waiting',
        actions: ['accept', 'scheduleWait'],
      },
      {
        guard: { type: 'decided', params: { kind: DecisionKind.Refuse } },
        target: '.failed',
        actions: ['accept', 'refuse'],
      },
      { target: '.skipped', actions: 'accept' },
    ],
  },
  states: {
    idle: {},
    plugging: {
      invoke: {
        id: 'plug',
        src: 'plug',
        input: ({ context }) => {
          const d = context.decision;
          if (d?.kind !== DecisionKind.Plug) throw new Error('plugging without a plug decision');
          return d.request;
        },
        onDone: {
          target: 'mounted',
          actions: [
            assign({ mounted: ({ event }) => event.output }),
            'succeeded',
            emit(({ context, event }) =>
              fact(mountedFact(itemOf(context), context.decision!, event.output)),
            ),
            emit(({ context }) => nextWork(domainUpdaterWork(itemOf(context)))),
          ],
        },
        onError: [
          { guard: 'terminal', target: 'failed', actions: 'recordFailure' },
          { target: 'retrying', actions: 'recordFailure' },
        ],
      },
    },
    unplugging: {
      invoke: {
        id: 'unplug',
        src: 'unplug',
        input: ({ context }) => {
          const d = context.decision;
          if (d?.kind !== DecisionKind.Unplug)
            throw new Error('unplugging without an unplug decision');
          return d.request;
        },
        onDone: {
          target: 'unmounted',
          actions: [
            assign({ unmounted: ({ event }) => event.output }),
            'succeeded',
            emit(({ context, event }) =>
              fact(unmountedFact(itemOf(context), context.decision!, event.output)),
            ),
            emit(({ context }) => nextWork(orchestratorWork(itemOf(context)))),
          ],
        },
        onError: [
          { guard: 'terminal', target: 'failed', actions: 'recordFailure' },
          { target: 'retrying', actions: 'recordFailure' },
        ],
      },
    },
    mounted: {},
    unmounted: {},
    skipped: {},
    waiting: { tags: ['waiting'] },
    retrying: { tags: ['retry'] },
    failed: { tags: ['failed'] },
  },
});

export type MounterStageMachine = typeof mounterStageMachine;
export type MounterStageSnapshot = SnapshotFrom<MounterStageMachine>;

/** The effects the stage machine's actors call (the service implements them with a NodeMounter). */
export interface MounterEffects {
  plug(request: PlugRequest): Promise<PlugResult>;
  unplug(request: UnplugRequest): Promise<UnplugResult>;
}

/** The machine's actors, for `mounterStageMachine.provide({ actors })`. */
export function mounterStageActors(effects: MounterEffects) {
  return {
    plug: fromPromise<PlugResult, PlugRequest>(({ input }) => effects.plug(input)),
    unplug: fromPromise<UnplugResult, UnplugRequest>(({ input }) => effects.unplug(input)),
  };
}
