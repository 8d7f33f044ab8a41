// Shared test fixtures: a tiny stage machine and work-item builders.
import { randomUUID } from 'node:crypto';
import { Stage, TerminalError, type VolumeEvent, type WorkItem } from '@plugline/contracts';
import { assign, emit, enqueueActions, fromPromise, setup } from 'xstate';
import {
  fact,
  nextWork,
  type FactSpec,
  type StageContext,
  type StageEmitted,
  type WorkEvent,
} from '../src/index.js';

/**
 * The example stage machine: `idle` → `applying` (invokes the `apply` effect) → `applied`.
 * A work item with cause `wait` first waits 300 ms (a deadline in context, tag `waiting`); with
 * cause `park`, 10 minutes; an item with cause `proceed` ends the wait (what a waited-for change
 * brings).
 * A TerminalError from the effect → `failed` (tag `failed`); any other error → `retrying`.
 * `applied` ignores further nudges, so a finished effect is never repeated.
 */
export const unitMachine = setup({
  types: {
    context: {} as StageContext & { applies: number; item?: WorkItem },
    events: {} as WorkEvent,
    emitted: {} as StageEmitted,
  },
  actors: {
    apply: fromPromise<string, { item: WorkItem }>(() => Promise.resolve('noop')),
  },
  guards: {
    wantsToWait: ({ event }) => event.item.cause === 'wait',
    wantsToPark: ({ event }) => event.item.cause === 'park',
    proceeds: ({ event }) => event.item.cause === 'proceed',
    deadlinePassed: ({ context, event }) => event.receivedAt >= (context.wakeAt ?? 0),
  },
}).createMachine({
  id: 'unit',
  initial: 'idle',
  context: { applies: 0 },
  states: {
    idle: {
      on: {
        work: [
          {
            guard: 'wantsToPark',
            target: 'waiting',
            actions: assign({
              item: ({ event }) => event.item,
              wakeAt: ({ event }) => event.receivedAt + 600_000,
            }),
          },
          {
            guard: 'wantsToWait',
            target: 'waiting',
            actions: assign({
              item: ({ event }) => event.item,
              wakeAt: ({ event }) => event.receivedAt + 300,
            }),
          },
          { target: 'applying', actions: assign({ item: ({ event }) => event.item }) },
        ],
      },
    },
    waiting: {
      tags: ['waiting'],
      on: {
        work: [
          { guard: 'deadlinePassed', target: 'applying' },
          { guard: 'proceeds', target: 'applying' },
        ],
      },
    },
    applying: {
      entry: assign({ wakeAt: undefined }),
      invoke: {
        src: 'apply',
        input: ({ context }) => ({ item: context.item! }),
        onDone: {
          target: 'applied',
          actions: [
            assign({ applies: ({ context }) => context.applies + 1 }),
            emit(({ context }) => fact(readyFact(context.item!))),
          ],
        },
        onError: [
          {
            guard: ({ event }) => event.error instanceof TerminalError,
            target: 'failed',
            actions: assign({
              failure: ({ event }) => ({
                reason: (event.error as TerminalError).reason,
                message: (event.error as TerminalError).message,
              }),
            }),
          },
          {
            target: 'retrying',
            actions: assign({
              wakeAt: () => Date.now() + 100,
              failure: ({ event }) => ({
                reason: 'EffectFailed',
                message: event.error instanceof Error ? event.error.message : String(event.error),
              }),
            }),
          },
        ],
      },
    },
    retrying: { tags: ['retry'], on: { work: 'applying' } },
    applied: { on: { work: {} } },
    failed: { tags: ['failed'], on: { work: {} } },
  },
});

function readyFact(item: WorkItem): FactSpec {
  return {
    namespace: item.namespace,
    vmi: item.vmi,
    volume: item.volume,
    type: 'ready',
    data: {
      operationId: item.operationId,
      operation: item.operation,
      vmiUID: item.vmiUID,
      phase: 'Ready',
      target: 'sda',
    },
  };
}

/** A work item for the spec-watcher stage (cluster-wide) about `volume`. */
export function workItem(volume: string, overrides: Partial<WorkItem> = {}): WorkItem {
  return {
    v: 1,
    stage: Stage.SpecWatcher,
    namespace: 'plugline-test-namespace',
    vmi: 'vm-under-test.example',
    vmiUID: 'uid-0f3c6a2e',
    volume,
    operationId: `op-${randomUUID()}`,
    operation: 'plug',
    cause: 'requested',
    issuedAt: new Date().toISOString(),
    ...overrides,
  };
}

export const unitKey = (item: WorkItem): string => `${item.namespace}/${item.vmi}/${item.volume}`;

export function eventType(e: VolumeEvent): string {
  return e.type.split('.').at(-1)!;
}

/**
 * Models the time a real effect (a mount, a libvirt call) takes; not a wait for a condition. At
 * least `ms` by `performance.now()`: a timer counts from the event loop's cached time, so it can
 * fire a fraction of a millisecond before `ms` have passed (a CI run timed 299.8 ms of 300).
 */
export async function effectTakes(ms: number): Promise<void> {
  const until = performance.now() + ms;
  for (let left = ms; left > 0; left = until - performance.now()) {
    await new Promise((resolve) => setTimeout(resolve, Math.ceil(left)));
  }
}

/**
 * A stage machine that states its fact (`ready`) on every work item it handles, as a stage does
 * that reports again what it finds (the domain-updater in a resync round). Handling a resync's
 * nudge, it also nudges its own stage once more (cause `stated`), as a stage nudges the next.
 */
export const statingMachine = setup({
  types: {
    context: {} satisfies StageContext,
    events: {} as WorkEvent,
    emitted: {} as StageEmitted,
  },
}).createMachine({
  id: 'stating',
  context: {},
  on: {
    work: {
      actions: enqueueActions(({ event, enqueue }) => {
        const { item } = event;
        enqueue.emit(fact(readyFact(item)));
        if (item.cause !== 'resync') return;
        const { v: _v, issuedAt: _issuedAt, resync: _resync, ...next } = item;
        enqueue.emit(nextWork({ ...next, cause: 'stated' }));
      }),
    },
  },
});
