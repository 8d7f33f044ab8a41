import { isDeepStrictEqual } from 'node:util';

import { describe, expect, it } from 'vitest';
import { createActor, fromPromise } from 'xstate';
import type { AnyEventObject } from 'xstate';

import type { StageEmitted } from '@plugline/bus';
import { EventType, PathEscapeError, Stage, TransientError } from '@plugline/contracts';
import type { WorkItem } from '@plugline/contracts';
import {
  describeModelPath,
  edgePaths,
  replayPaths,
  simplePaths,
  stepCount,
  transitionsOf as graphTransitionsOf,
} from '@plugline/testkit';
import type { ModelPath as GraphPath, ModelTraversal } from '@plugline/testkit';

import { backoffDelay, DecisionKind, mounterStageMachine, waitDelay } from '../src/index.js';
import type {
  Decision,
  MounterStageSnapshot,
  MounterWorkEvent,
  PlugResult,
  UnplugResult,
} from '../src/index.js';

/**
 * Every path through the node-mounter's stage machine (the one the service runs), generated with
 * @xstate/graph from the pure transition function and replayed on a live actor whose `plug` and
 * `unplug` effects are test actors the replay resolves or rejects. After every step the live
 * actor must match the model, run exactly the effect its state names (with the decision's
 * request), and keep the stage's rules on what it emitted, its tags and its deadlines.
 */

const T0 = 1_700_000_000_000;

const item: WorkItem = {
  v: 1,
  stage: Stage.NodeMounter,
  node: 'node-with-a-long-name-a',
  namespace: 'namespace-with-a-rather-long-name',
  vmi: 'vm.with.dots',
  vmiUID: 'uid-vmi-a',
  volume: 'hotplug-data-volume-1',
  operationId: 'op-7',
  operation: 'plug',
  cause: EventType.AttachedToNode,
  issuedAt: new Date(T0).toISOString(),
};

const plugDecision: Decision = {
  kind: DecisionKind.Plug,
  request: {
    vmiUID: 'uid-vmi-a',
    launcherUID: 'uid-launcher',
    attachPodUID: 'uid-attach',
    volume: item.volume,
    pvName: 'pvc-1',
    mode: 'Block',
  },
  attachPod: { name: 'hp-volume-x', uid: 'uid-attach' },
  launcherPod: 'virt-launcher-a',
};
const unplugDecision: Decision = {
  kind: DecisionKind.Unplug,
  request: { vmiUID: 'uid-vmi-a', volume: item.volume },
  why: 'NotInSpec',
};

/** The decisions a work event can carry; `none` is a work event whose truth was not read. */
const DECISIONS: Record<string, Decision | undefined> = {
  plug: plugDecision,
  unplug: unplugDecision,
  wait: { kind: DecisionKind.Wait, reason: 'PVCNotReady', message: 'the PVC is not bound' },
  refuse: { kind: DecisionKind.Refuse, reason: 'PathEscape', message: 'outside the root' },
  skip: { kind: DecisionKind.Skip, reason: 'DomainMayHoldDisk', message: 'still attached' },
  none: undefined,
};
/** Where each decision leads, from any state. */
const DECIDED_STATE: Record<string, string> = {
  plug: 'plugging',
  unplug: 'unplugging',
  wait: 'waiting',
  refuse: 'failed',
  skip: 'skipped',
  none: 'waiting',
};

const plugged: PlugResult = {
  fact: {
    type: EventType.MountedToPod,
    vmiUID: 'uid-vmi-a',
    volume: item.volume,
    mode: 'Block',
    source: '/k/src',
    target: '/k/dst',
    changed: true,
    sourceMismatch: false,
    device: { major: 7, minor: 3 },
  },
  cgroup: 'allowed',
  durationMs: 4,
};
const unplugged: UnplugResult = {
  fact: {
    type: EventType.UnmountedFromPod,
    vmiUID: 'uid-vmi-a',
    volume: item.volume,
    mode: 'Block',
    changed: true,
    unmounted: 1,
    removed: true,
  },
  cgroup: 'denied',
  durationMs: 2,
};

const transient = new TransientError('MountFailed', 'device busy');
const terminal = new PathEscapeError('/etc', '/kubelet');

const STATES = [
  'idle',
  'plugging',
  'unplugging',
  'mounted',
  'unmounted',
  'skipped',
  'waiting',
  'retrying',
  'failed',
];
const INVOKED: Partial<Record<string, string>> = { plugging: 'plug', unplugging: 'unplug' };
const TAG: Partial<Record<string, string>> = {
  waiting: 'waiting',
  retrying: 'retry',
  failed: 'failed',
};

type ModelEvent = MounterWorkEvent | AnyEventObject;
type ModelPath = GraphPath<MounterStageSnapshot, ModelEvent>;

function work(decision: string, receivedAt = T0): MounterWorkEvent {
  const observed = DECISIONS[decision];
  return {
    type: 'work',
    item,
    attempt: 1,
    receivedAt,
    ...(observed === undefined ? {} : { observed }),
  };
}

/** The world's events in a state: any decision; a running effect's outcome. */
function eventsFor(snapshot: MounterStageSnapshot): ModelEvent[] {
  const events: ModelEvent[] = Object.keys(DECISIONS).map((d) => work(d));
  const id = INVOKED[String(snapshot.value)];
  if (id !== undefined) {
    events.push(
      { type: `xstate.done.actor.${id}`, output: id === 'plug' ? plugged : unplugged },
      { type: `xstate.error.actor.${id}`, error: transient },
      { type: `xstate.error.actor.${id}`, error: terminal },
    );
  }
  return events;
}

/** A label of what an event is, for the transition inventory. */
function eventLabel(event: ModelEvent): string {
  if (event.type === 'work') {
    const kind = (event as MounterWorkEvent).observed?.kind;
    return `work:${Object.keys(DECISIONS).find((k) => DECISIONS[k]?.kind === kind) ?? 'none'}`;
  }
  if (event.type.startsWith('xstate.error.')) {
    return (event as { error?: unknown }).error === terminal ? 'error:terminal' : 'error:transient';
  }
  return 'done';
}

/** Every transition the machine defines: each `work` branch from each state, each effect outcome. */
const DEFINED = new Set<string>([
  ...STATES.flatMap((s) =>
    Object.keys(DECISIONS).map((d) => `${s} -work:${d}-> ${DECIDED_STATE[d]}`),
  ),
  'plugging -done-> mounted',
  'plugging -error:transient-> retrying',
  'plugging -error:terminal-> failed',
  'unplugging -done-> unmounted',
  'unplugging -error:transient-> retrying',
  'unplugging -error:terminal-> failed',
]);

/** Coarse: the state only. */
const serializeCoarse = (s: MounterStageSnapshot): string => JSON.stringify(s.value);

/** Fine: everything that drives what comes next (counters capped). */
function serializeFine(s: MounterStageSnapshot): string {
  const c = s.context;
  return JSON.stringify([
    s.value,
    c.decision?.kind ?? null,
    Math.min(c.failures, 2),
    Math.min(c.waits, 2),
    c.lastError?.reason ?? null,
    c.mounted !== null,
    c.unmounted !== null,
    c.failure?.reason ?? null,
  ]);
}

const traversal = (
  serializeState: (s: MounterStageSnapshot) => string,
): ModelTraversal<MounterStageSnapshot, ModelEvent> => ({
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
  return fromPromise<unknown, unknown>(({ input, signal }) => {
    const mine = effects;
    return new Promise((resolve, reject) => {
      mine.active.add(id);
      signal.addEventListener('abort', () => mine.active.delete(id));
      mine.pending.set(id, {
        input,
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

const testMachine = mounterStageMachine.provide({
  actors: { plug: promised('plug') as never, unplug: promised('unplug') as never },
});

function harness() {
  effects = new Effects();
  const fx = effects;
  const emitted: StageEmitted[] = [];
  const actor = createActor(testMachine);
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  return { actor, fx, emitted };
}
type Harness = ReturnType<typeof harness>;

async function deliver(h: Harness, event: ModelEvent): Promise<void> {
  const outcome = /^xstate\.(done|error)\.actor\.(.+)$/.exec(event.type);
  if (outcome === null) {
    h.actor.send(event as MounterWorkEvent);
    return;
  }
  const p = h.fx.pending.get(outcome[2]!);
  if (p === undefined) throw new Error(`no ${outcome[2]} running to deliver ${event.type}`);
  const before = h.actor.getSnapshot();
  if (outcome[1] === 'done') p.resolve((event as { output?: unknown }).output);
  else p.reject((event as { error?: unknown }).error);
  for (let i = 0; i < 100 && h.actor.getSnapshot() === before; i += 1) await Promise.resolve();
}

function invocationOk(h: Harness, s: MounterStageSnapshot): boolean {
  const id = INVOKED[String(s.value)];
  const running = [...h.fx.active];
  if (id === undefined) return running.length === 0;
  const decision = s.context.decision;
  return (
    running.length === 1 &&
    running[0] === id &&
    decision !== null &&
    'request' in decision &&
    isDeepStrictEqual(h.fx.pending.get(id)?.input, decision.request)
  );
}

/** Whether a value survives a JSON round trip (an absent optional may be `undefined`). */
function plainJson(value: unknown): boolean {
  if (value === null || value === undefined) return true;
  if (typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (Array.isArray(value)) return value.every(plainJson);
  if (typeof value !== 'object' || Object.getPrototypeOf(value) !== Object.prototype) return false;
  return Object.values(value).every(plainJson);
}

/** The stage's rules, checked on every step; returns the broken one. */
function brokenRule(
  before: MounterStageSnapshot,
  event: ModelEvent,
  after: MounterStageSnapshot,
  emitted: StageEmitted[],
): string | undefined {
  const from = String(before.value);
  const to = String(after.value);
  const c = after.context;
  if (!STATES.includes(to)) return `rests in ${to}`;
  for (const state of Object.keys(TAG)) {
    if (after.hasTag(TAG[state]!) !== (to === state)) return `tag ${TAG[state]} in ${to}`;
  }
  const types = emitted.map((e) => (e.type === 'plugline.fact' ? e.fact.type : e.work.stage));
  const label = eventLabel(event);
  if (from === 'plugging' && label === 'done') {
    if (!isDeepStrictEqual(types, [EventType.MountedToPod, Stage.DomainUpdater]))
      return `plug done emitted ${JSON.stringify(types)}`;
  } else if (from === 'unplugging' && label === 'done') {
    if (!isDeepStrictEqual(types, [EventType.UnmountedFromPod, Stage.AttachmentOrchestrator]))
      return `unplug done emitted ${JSON.stringify(types)}`;
  } else if (emitted.length > 0) return `emitted ${JSON.stringify(types)} on ${label}`;
  if (to === 'waiting' && !(c.wakeAt !== undefined && c.wakeAt > c.receivedAt))
    return 'waiting without a deadline';
  if (to === 'waiting' && c.wakeAt !== c.receivedAt + waitDelay(c.waits - 1))
    return 'wait deadline off the wait backoff';
  if (to === 'retrying' && (c.failures < 1 || c.wakeAt !== c.receivedAt + backoffDelay(c.failures)))
    return 'retrying without a backoff deadline';
  if ((to === 'retrying' || to === 'failed') && c.failure === undefined)
    return `${to} without a failure`;
  if (!['retrying', 'failed'].includes(to) && c.failure !== undefined)
    return `${to} keeps a failure`;
  if ((to === 'mounted' || to === 'unmounted') && (c.failures !== 0 || c.lastError !== null))
    return 'a success keeps the failure count';
  if (!['waiting', 'retrying', 'failed'].includes(to) && c.wakeAt !== undefined)
    return `${to} keeps a deadline`;
  if (!plainJson(after.context)) return 'context is not plain JSON';
  return undefined;
}

async function replay(path: ModelPath, serialize: (s: MounterStageSnapshot) => string) {
  const h = harness();
  try {
    for (const step of path.steps) {
      if (step.event.type === 'xstate.init') continue;
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

function replayAll(paths: ModelPath[], serialize: (s: MounterStageSnapshot) => string) {
  return replayPaths(
    paths,
    (path) => replay(path, serialize),
    (path) => describeModelPath(path, eventLabel),
  );
}

/** The transitions the paths take, as `from -event-> to`. */
const transitionsOf = (paths: ModelPath[]): Set<string> =>
  graphTransitionsOf(paths, 'idle', eventLabel);

describe('mounterStageMachine over every path', () => {
  it('every simple path through its states, taking every defined transition', async () => {
    const paths = simplePaths(mounterStageMachine, traversal(serializeCoarse));
    expect(new Set(paths.map((p) => String(p.state.value)))).toEqual(new Set(STATES));
    // A simple path never repeats a state, so it takes every transition but those back into a
    // state every path to their source passes: the self-loops, and mounted → plugging,
    // unmounted → unplugging (the fine model below takes those).
    const revisits = new Set([
      'mounted -work:plug-> plugging',
      'unmounted -work:unplug-> unplugging',
    ]);
    const notLoops = [...DEFINED].filter((t) => !/^(\w+) \S+ \1$/.test(t) && !revisits.has(t));
    expect([...transitionsOf(paths)].sort()).toEqual(notLoops.sort());
    console.log(
      `stage machine: ${STATES.length} states, ${DEFINED.size} transitions ` +
        `(${DEFINED.size - notLoops.length} only by revisiting a state), ` +
        `${paths.length} simple paths, ${stepCount(paths)} steps`,
    );
    await replayAll(paths, serializeCoarse);
  }, 30_000);

  it('every transition of the fine model (shortest path to each state, plus each event from it)', async () => {
    const { states: shortest, edges } = edgePaths(mounterStageMachine, traversal(serializeFine));
    expect([...transitionsOf(edges)].sort()).toEqual([...DEFINED].sort());
    console.log(`stage machine fine model: ${shortest.length} states, ${edges.length} edges`);
    await replayAll(edges, serializeFine);
  }, 30_000);

  it('a later wait decision backs off further than the first', () => {
    const h = harness();
    h.actor.send(work('wait', T0));
    const first = h.actor.getSnapshot().context.wakeAt! - T0;
    h.actor.send(work('wait', T0 + 10));
    const second = h.actor.getSnapshot().context.wakeAt! - (T0 + 10);
    expect(second).toBeGreaterThan(first);
    h.actor.send(work('skip', T0 + 20));
    h.actor.send(work('wait', T0 + 30));
    expect(h.actor.getSnapshot().context.wakeAt).toBe(T0 + 30 + waitDelay(0));
    h.actor.stop();
  });
});
