import { isDeepStrictEqual } from 'node:util';

import { describe, expect, it } from 'vitest';
import { createActor, fromPromise } from 'xstate';
import type { AnyEventObject, SnapshotFrom } from 'xstate';

import type { StageEmitted, WorkEvent } from '@plugline/bus';
import { EventType, VolumePhase } from '@plugline/contracts';
import type { WorkItem } from '@plugline/contracts';
import {
  describeModelPath,
  edgePaths,
  replayPaths,
  stepCount,
  transitionsOf as graphTransitionsOf,
} from '@plugline/testkit';
import type { ModelPath as GraphPath, ModelTraversal } from '@plugline/testkit';

import {
  createOrchestratorMachine,
  decide,
  NudgeCause,
  orchestratorDisposition,
  Rest,
} from '../src/index.js';
import type { DecideOptions, Observation } from '../src/index.js';
import {
  attachmentPod,
  boundPvc,
  fsVolume,
  launcher,
  NS,
  vmi,
  withHotplugPVC,
  withVolumeStatus,
} from './fixtures.js';

/**
 * Every path through the attachment-orchestrator's machine (the one the service runs on the
 * stage runtime), generated with @xstate/graph from the pure transition function and replayed
 * on a live actor whose `observe` and `applyEffects` are test actors the replay resolves or
 * rejects. After every step the live actor must match the model, run exactly the effect its
 * state names (with the decided effects), emit exactly the decision's facts and work once its
 * effects succeeded, and rest where the decision says, with the runtime disposition that goes
 * with it.
 */

const OPTIONS: DecideOptions = {
  coalesceMs: 50,
  fallbackMs: 5000,
  waitForFirstConsumerClasses: [],
};
const T0 = 1_700_000_000_000;
/** Past the coalescing window and the created-pod grace. */
const LATE = T0 + 10_000;

const machine = createOrchestratorMachine(OPTIONS);
type Snapshot = SnapshotFrom<typeof machine>;
type ModelEvent = WorkEvent | AnyEventObject;
type ModelPath = GraphPath<Snapshot, ModelEvent>;

const base = vmi();
const ref = { namespace: NS, name: base.metadata.name!, uid: base.metadata.uid! };
const input = { vmi: ref };

const inSpec = vmi(withHotplugPVC('a'));
const leftSpec = vmi(
  withVolumeStatus({
    name: 'a',
    target: 'sda',
    phase: VolumePhase.Ready,
    hotplugVolume: { attachPodName: 'hp-volume-a', attachPodUID: 'uid-a' },
  }),
);
const running = attachmentPod(inSpec, [fsVolume('a')], 'Running', 'uid-a');
const pending = attachmentPod(inSpec, [fsVolume('a')], 'Pending', 'uid-a');
const claims = { 'claim-a': boundPvc('claim-a') };
const none = { launcher: undefined, pods: [], pvcs: {}, dataVolumes: {} };

/** What the caches can show, each leading somewhere else. */
const OBSERVATIONS: Record<string, Observation> = {
  /** The VMI is gone and nothing is left: steady, no effect. */
  gone: { vmi: undefined, ...none },
  /** The VMI is gone, its pod is not: delete it. */
  goneWithPod: { vmi: undefined, ...none, pods: [running] },
  /** The claim does not exist yet: pending, awaiting volumes. */
  claimMissing: { vmi: inSpec, ...none, launcher: launcher() },
  /** Ready, no pod: coalesce, then create one. */
  ready: { vmi: inSpec, ...none, launcher: launcher(), pvcs: claims },
  /** Our pod is not running yet: awaiting pods. */
  podPending: { vmi: inSpec, ...none, launcher: launcher(), pvcs: claims, pods: [pending] },
  /** Our pod runs: attached, steady. */
  podRunning: { vmi: inSpec, ...none, launcher: launcher(), pvcs: claims, pods: [running] },
  /** The volume left the spec, the launcher may still use it: awaiting the unmount (or delete). */
  leftSpec: { vmi: leftSpec, ...none, launcher: launcher(), pods: [running] },
  /**
   * The volume left the spec and the status lost its entry: only our announcement (if made)
   * holds the pod, and the unplug goes down the node stages from here (awaiting their answer).
   */
  leftSpecUnlisted: { vmi: base, ...none, launcher: launcher(), pods: [running] },
};

function item(fields: Partial<WorkItem>): WorkItem {
  return {
    v: 1,
    stage: 'attachment-orchestrator',
    namespace: NS,
    vmi: ref.name,
    vmiUID: ref.uid,
    volume: 'a',
    operationId: 'op-plug',
    operation: 'plug',
    cause: EventType.Requested,
    issuedAt: new Date(T0).toISOString(),
    ...fields,
  };
}

/** The work the stage is handed: nudges, the plug request, the unmount of the unplug. */
const WORK: Record<string, WorkEvent> = {
  nudge: { type: 'work', item: item({ cause: NudgeCause.Pod }), attempt: 1, receivedAt: T0 },
  plug: { type: 'work', item: item({}), attempt: 1, receivedAt: T0 },
  lateNudge: { type: 'work', item: item({ cause: NudgeCause.Pvc }), attempt: 1, receivedAt: LATE },
  unmounted: {
    type: 'work',
    item: item({
      operation: 'unplug',
      operationId: 'op-unplug',
      cause: EventType.UnmountedFromPod,
    }),
    attempt: 1,
    receivedAt: T0,
  },
};

const STATES = [
  'idle',
  'observing',
  'applying',
  'steady',
  'coalescing',
  'awaitingVolumes',
  'awaitingPods',
  'awaitingUnmount',
  'awaitingNodeStages',
  'retrying',
];
const RESTS: readonly string[] = Object.values(Rest);
const INVOKED: Partial<Record<string, string>> = {
  observing: 'observe',
  applying: 'applyEffects',
};
const failure = new Error('the API server said no');

function eventsFor(s: Snapshot): ModelEvent[] {
  const events: ModelEvent[] = Object.values(WORK);
  if (s.value === 'observing') {
    for (const output of Object.values(OBSERVATIONS))
      events.push({ type: 'xstate.done.actor.0.attachmentOrchestrator.observing', output });
    events.push({ type: 'xstate.error.actor.0.attachmentOrchestrator.observing', error: failure });
  }
  if (s.value === 'applying') {
    events.push(
      { type: 'xstate.done.actor.0.attachmentOrchestrator.applying', output: undefined },
      { type: 'xstate.error.actor.0.attachmentOrchestrator.applying', error: failure },
    );
  }
  return events;
}

function eventLabel(event: ModelEvent): string {
  if (event.type === 'work') {
    const name = Object.keys(WORK).find((k) => WORK[k] === event);
    return `work:${name ?? '?'}`;
  }
  if (event.type.startsWith('xstate.error.')) return 'error';
  const output = (event as { output?: unknown }).output;
  const obs = Object.keys(OBSERVATIONS).find((k) => OBSERVATIONS[k] === output);
  return obs === undefined ? 'done' : `done:${obs}`;
}

/** The kind of transition a step took, by the machine's own transitions (`from -kind-> to`). */
function transitionKind(event: ModelEvent): string {
  return event.type === 'work' ? 'work' : event.type.includes('.error.') ? 'error' : 'done';
}

/** Every transition the machine defines between the states a settled actor can be in. */
const DEFINED = new Set<string>([
  ...STATES.map((s) => `${s} -work-> observing`),
  // observing: done → deciding → applying (effects) | routing → a rest; error → retrying.
  'observing -done-> applying',
  ...RESTS.map((r) => `observing -done-> ${r}`),
  'observing -error-> retrying',
  // applying: done → routing → a rest; error → retrying. A decision with a pod effect rests in
  // awaitingPods (its pods move) or steady (the VMI is gone): never awaitingVolumes or
  // awaitingUnmount, and never coalescing (pods are deleted only once no pod is to be created).
  'applying -done-> steady',
  'applying -done-> awaitingPods',
  'applying -error-> retrying',
]);

/**
 * Fine: what the next decision reads, abstracted: the time (early or late), the rest, which
 * operations the unit knows, which facts it published, whether it is coalescing since early or
 * late, whether a pod it created is still unseen.
 */
function serializeFine(s: Snapshot): string {
  const c = s.context;
  const u = c.unit;
  const when = (t: number | undefined) => (t === undefined ? null : t >= LATE ? 'late' : 'early');
  return JSON.stringify([
    s.value,
    c.decision?.rest ?? null,
    when(c.now),
    c.rest,
    Object.entries(u.ops).map(([v, o]) => [
      v,
      o.plug?.operationId,
      o.unplug?.operationId,
      o.unmounted,
      // Asked again only after 15 s, past the model's times: when does not matter.
      o.forwarded,
      // What holds a removed volume's pod when no phase does.
      u.published[v]?.[EventType.AttachedToNode] !== undefined,
    ]),
    when(u.changeSince),
    when(u.created?.at),
    c.failure !== undefined,
  ]);
}

const traversal = (
  serializeState: (s: Snapshot) => string,
): ModelTraversal<Snapshot, ModelEvent> => ({
  input,
  events: eventsFor,
  serializeState,
});

interface Pending {
  readonly input: unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

class Effects {
  readonly pending = new Map<string, Pending>();
  readonly active = new Set<string>();
}
let effects = new Effects();

function promised(id: string) {
  return fromPromise<unknown, unknown>(({ input: actorInput, signal }) => {
    const mine = effects;
    return new Promise((resolve, reject) => {
      mine.active.add(id);
      signal.addEventListener('abort', () => mine.active.delete(id));
      mine.pending.set(id, {
        input: actorInput,
        resolve: (v) => {
          mine.active.delete(id);
          resolve(v);
        },
        reject: (e) => {
          mine.active.delete(id);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      });
    });
  });
}

const testMachine = machine.provide({
  actors: {
    observe: promised('observe') as never,
    applyEffects: promised('applyEffects') as never,
  },
});

function harness() {
  effects = new Effects();
  const fx = effects;
  const emitted: StageEmitted[] = [];
  const actor = createActor(testMachine, { input });
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  return { actor, fx, emitted };
}
type Harness = ReturnType<typeof harness>;

async function deliver(h: Harness, event: ModelEvent): Promise<void> {
  if (event.type === 'work') {
    h.actor.send(event as WorkEvent);
    return;
  }
  const id = event.type.endsWith('.observing') ? 'observe' : 'applyEffects';
  const p = h.fx.pending.get(id);
  if (p === undefined || !h.fx.active.has(id))
    throw new Error(`no ${id} running to deliver ${event.type}`);
  const before = h.actor.getSnapshot();
  if (event.type.includes('.done.')) p.resolve((event as { output?: unknown }).output);
  else p.reject((event as { error?: unknown }).error);
  for (let i = 0; i < 100 && h.actor.getSnapshot() === before; i += 1) await Promise.resolve();
}

function invocationOk(h: Harness, s: Snapshot): boolean {
  const id = INVOKED[String(s.value)];
  const running = [...h.fx.active];
  if (id === undefined) return running.length === 0;
  if (running.length !== 1 || running[0] !== id) return false;
  const expected =
    id === 'observe' ? { vmi: s.context.unit.vmi } : { effects: s.context.decision?.effects };
  return isDeepStrictEqual(h.fx.pending.get(id)?.input, expected);
}

const isNudgeWork = (e: ModelEvent): boolean =>
  e.type === 'work' && (e as WorkEvent).item.cause.startsWith('informer-');

/** The last work event the replay delivered (its cause decides the disposition). */
let lastWork: ModelEvent | undefined;

/** The stage's rules, checked on every step; returns the broken one. */
function brokenRule(
  before: Snapshot,
  event: ModelEvent,
  after: Snapshot,
  emitted: StageEmitted[],
): string | undefined {
  const from = String(before.value);
  const to = String(after.value);
  const c = after.context;
  if (!STATES.includes(to)) return `settles in ${to}`;
  if (to === 'applying' && (c.decision?.effects.length ?? 0) === 0) return 'applying nothing';
  // Facts and work go out exactly as decided, and only once the effects succeeded.
  let expected: StageEmitted[] = [];
  if (RESTS.includes(to) && event.type.includes('.done.')) {
    if (from === 'applying') expected = before.context.decision!.emit;
    if (from === 'observing') {
      const obs = (event as unknown as { output: Observation }).output;
      const d = decide(before.context.unit, obs, before.context.now, OPTIONS);
      if (d.effects.length > 0) return 'rested with effects not applied';
      expected = d.emit;
    }
  }
  if (!isDeepStrictEqual(emitted, expected))
    return `emitted ${JSON.stringify(emitted.map((e) => e.type))} on ${from} → ${to}`;
  if (to === 'applying' && from === 'observing') {
    const obs = (event as unknown as { output: Observation }).output;
    const d = decide(before.context.unit, obs, before.context.now, OPTIONS);
    if (!isDeepStrictEqual(c.decision, d)) return 'applying another decision than decide()';
  }
  if (RESTS.includes(to)) {
    if (c.rest !== to) return `rests in ${to} but decided ${c.rest}`;
    if (c.decision !== undefined) return 'an applied decision is kept';
  }
  const waiting = ['coalescing', 'awaitingVolumes', 'awaitingPods', 'awaitingNodeStages'].includes(
    to,
  );
  if (after.hasTag('waiting') !== waiting) return `waiting tag wrong in ${to}`;
  if (after.hasTag('retry') !== (to === 'retrying')) return `retry tag wrong in ${to}`;
  if (waiting && (c.wakeAt === undefined || c.wakeAt <= c.now - 1)) return `${to} without wakeAt`;
  if (to === 'retrying' && (c.failure === undefined || c.wakeAt !== c.now + 1000))
    return 'retrying without a failure and a deadline';
  if (event.type === 'work' && c.failure !== undefined) return 'new work keeps the failure';
  if (to === 'coalescing' && c.unit.changeSince === undefined) return 'coalescing without a start';
  // The runtime acks a handled nudge unless coalescing (the deadline creates the pod) or
  // awaiting the node stages (the deadline asks them again).
  const d = orchestratorDisposition(after, c.now);
  const nudgeKept = to === 'coalescing' || to === 'awaitingNodeStages';
  const want =
    to === 'retrying'
      ? 'retry'
      : waiting && !(isNudgeWork(lastWork ?? event) && !nudgeKept)
        ? 'waiting'
        : 'done';
  if (RESTS.includes(to) || to === 'retrying') {
    if (d.kind !== want) return `disposition ${d.kind} in ${to}, want ${want}`;
  }
  return undefined;
}

async function replay(path: ModelPath, serialize: (s: Snapshot) => string) {
  const h = harness();
  lastWork = undefined;
  try {
    for (const step of path.steps) {
      if (step.event.type === 'xstate.init') continue;
      if (step.event.type === 'work') lastWork = step.event;
      const before = h.actor.getSnapshot();
      h.emitted.length = 0;
      await deliver(h, step.event);
      const live = h.actor.getSnapshot();
      const broken = brokenRule(before, step.event, live, h.emitted);
      if (broken !== undefined) expect.fail(broken);
      if (serialize(live) !== serialize(step.state) || !invocationOk(h, live)) {
        expect(serialize(live)).toBe(serialize(step.state));
        expect(invocationOk(h, live)).toBe(true);
      }
    }
  } finally {
    h.actor.stop();
  }
}

function replayAll(paths: ModelPath[], serialize: (s: Snapshot) => string) {
  return replayPaths(
    paths,
    (path) => replay(path, serialize),
    (path) => describeModelPath(path, eventLabel),
  );
}

const transitionsOf = (paths: ModelPath[]): Set<string> =>
  graphTransitionsOf(paths, 'idle', transitionKind);

describe('orchestrator machine over every path', () => {
  it('every transition of the fine model (shortest path to each state, plus each event from it)', async () => {
    const { states: shortest, edges } = edgePaths(machine, traversal(serializeFine));
    // Outcomes depend on the unit, so a model by control state alone would not replay: the fine
    // model reaches every state and takes every transition the machine defines.
    expect(new Set(shortest.map((p) => String(p.state.value)))).toEqual(new Set(STATES));
    expect([...transitionsOf(edges)].sort()).toEqual([...DEFINED].sort());
    console.log(
      `orchestrator fine model: ${shortest.length} states, ${edges.length} edges, ` +
        `${stepCount(edges)} steps`,
    );
    await replayAll(edges, serializeFine);
  }, 15_000);
});
