import type { EventType } from '@plugline/contracts';
import { createActor, fromPromise } from 'xstate';
import { describe, expect, it } from 'vitest';
import type { FailureInput, PhaseEvent, RenderInput } from '../src/index.js';
import { projectAll, volumePhaseMachine } from '../src/index.js';
import { event as volumeEvent } from './fixtures.js';
import { coverage } from '@plugline/testkit';

const TYPES: EventType[] = [
  'requested',
  'unplug-requested',
  'pending',
  'bound',
  'attached-to-node',
  'mounted-to-pod',
  'ready',
  'detached-from-domain',
  'unmounted-from-pod',
  'detaching',
  'released',
  'removed',
  'failed',
  'import-progress',
];
// op-0 is stale, op-1 the operation the machine starts in, op-2 a newer one.
const OPS = ['op-0', 'op-1', 'op-2'];
const events = (): PhaseEvent[] =>
  TYPES.flatMap((type) =>
    OPS.map((operationId) => ({
      type,
      operationId,
      ...(type === 'ready' ? { target: 'sda' } : {}),
    })),
  );
const serializeState = (s: { value: unknown; context: unknown; status: string }) => {
  const c = s.context as { operationId: string; operation: string; undoes?: string };
  return JSON.stringify([s.value, c.operationId, c.operation, c.undoes, s.status]);
};
const input = { volume: 'd1', operationId: 'op-1' };

const topPhase = (value: unknown): string =>
  typeof value === 'string' ? value : Object.keys(value as object)[0]!;

describe('volumePhaseMachine over every path (@xstate/graph)', () => {
  const cov = coverage(volumePhaseMachine, {
    events: () => events(),
    serializeState: serializeState,
    input,
  });

  it('reaches every state and takes every transition', () => {
    expect(cov.unreachedStates).toEqual([]);
    expect(cov.untakenTransitions).toEqual([]);
    expect(cov.edges.length).toBeGreaterThan(100);
  });

  it(
    'replayed with test actors, renders each phase it enters and reports each failure',
    { timeout: 60_000 },
    () => {
      // Edges no transition takes (stale or meaningless facts) are proven inert by the coverage walk.
      for (const { steps } of cov.edges.filter((e) => e.taken)) {
        const renders: RenderInput[] = [];
        const failures: FailureInput[] = [];
        const actor = createActor(
          volumePhaseMachine.provide({
            actors: {
              renderStatus: fromPromise<void, RenderInput>(({ input: i }) => {
                renders.push(i);
                return Promise.resolve();
              }),
              reportFailure: fromPromise<void, FailureInput>(({ input: i }) => {
                failures.push(i);
                return Promise.resolve();
              }),
            },
          }),
          { input },
        ).start();
        for (const step of steps) {
          const failuresBefore = failures.length;
          const before = actor.getSnapshot().value;
          actor.send(step.event);
          const snap = actor.getSnapshot();
          expect(snap.value).toEqual(step.state.value);
          if (snap.status === 'done') continue;
          const phase = topPhase(snap.value);
          expect(renders.at(-1)?.phase).toBe(phase);
          const failedNow =
            typeof snap.value === 'object' && Object.values(snap.value)[0] === 'failed';
          const enteredFailed = failedNow && JSON.stringify(before) !== JSON.stringify(snap.value);
          if (enteredFailed) expect(failures.at(-1)).toMatchObject({ phase, volume: 'd1' });
          else if (step.event.type !== 'failed') expect(failures.length).toBe(failuresBefore);
        }
        actor.stop();
      }
    },
  );

  it('agrees with the status reducer on every path without an early unplug', () => {
    for (const { steps } of cov.edges) {
      const path = steps.map((s) => s.event);
      // The reducer drops a never-attached entry on unplug-requested; the machine waits for `released`.
      if (path.some((e) => e.type === 'unplug-requested')) continue;
      const final = steps.at(-1)!.state;
      const projected = projectAll(
        [{ name: 'd1', target: '', hotplugVolume: {} }],
        [
          volumeEvent('requested', 'd1', 'op-1'),
          ...path.map((e) =>
            volumeEvent(e.type, 'd1', e.operationId, e.target ? { target: e.target } : {}),
          ),
        ],
      ).next;
      if (final.status === 'done') {
        expect(projected).toEqual([]);
        continue;
      }
      const machinePhase = topPhase(final.value);
      const reducerPhase = projected[0]?.phase ?? 'Pending';
      // The reducer drops an entry that never reached a pod on unplug; the machine waits for `released`.
      if (projected.length === 0) continue;
      expect({ path: path.map((e) => `${e.type}@${e.operationId}`), phase: reducerPhase }).toEqual({
        path: path.map((e) => `${e.type}@${e.operationId}`),
        phase: machinePhase,
      });
    }
  });
});
