import { isDeepStrictEqual } from 'node:util';

import { describe, expect, it, vi } from 'vitest';
import { createActor, fromCallback, fromPromise } from 'xstate';
import type { AnyEventObject } from 'xstate';

import { PathEscapeError, TerminalError, TransientError } from '@plugline/contracts';
import { edgePaths, replayPaths, simplePaths, stepCount } from '@plugline/testkit';
import type { ModelPath as GraphPath, ModelTraversal } from '@plugline/testkit';

import {
  backoffActor,
  backoffDelay,
  isTerminalError,
  MounterState,
  nodeMounterMachine,
} from '../src/index.js';
import type {
  BackoffInput,
  EffectFacts,
  MounterEvent,
  MountInput,
  NodeMounterSnapshot,
  VolumeIdentity,
} from '../src/index.js';

/**
 * Every path through the node-mounter machine, generated with @xstate/graph from the pure
 * transition function, replayed against a running actor whose effects are test actors that the
 * replay resolves, rejects or drives: after every step the live actor must be in the state the
 * model predicts, with the same context, running exactly the effect that state names.
 */

const volume: VolumeIdentity = {
  vmiUID: '0b7ad3c2-7c2d-4c57-9a39-5a0f6f1bb2a1',
  launcherUID: '5f0e8f4e-2f7e-4a8e-9d0e-1f7a3c1d9e11',
  attachPodUID: '9c4f1a8e-6b0c-4a55-8a8c-2b1f0d7e3a42',
  volume: 'hotplug-data-with-a-long-name',
  pvName: 'pvc-3a1f0e7c-4b2d-4f0a-9e8b-1c2d3e4f5a6b',
  mode: 'Filesystem',
};
const located = {
  source: '/kubelet/pods/a/disk.img',
  target: '/kubelet/pods/l/hotplug-disks/d.img',
};
const facts = { changed: true, target: located.target };

const INVOKED: Partial<Record<string, string>> = {
  [MounterState.LocatingSource]: 'locateSource',
  [MounterState.Mounting]: 'mount',
  [MounterState.Unmounting]: 'unmount',
  [MounterState.Retrying]: 'backoff',
};

type ModelEvent = MounterEvent | AnyEventObject;
type ModelPath = GraphPath<NodeMounterSnapshot, ModelEvent>;

/** The events the world can deliver in a state: requests always; an effect's outcome while it runs. */
function eventsFor(snapshot: NodeMounterSnapshot): ModelEvent[] {
  const events: ModelEvent[] = [
    { type: 'PLUG' },
    { type: 'UNPLUG', domainReleased: false },
    { type: 'UNPLUG', domainReleased: true },
  ];
  const id = INVOKED[snapshot.value];
  if (id === 'backoff') {
    events.push({ type: 'RETRY_SCHEDULED', retryAt: 1_700_000_000_000 }, { type: 'RETRY' });
  } else if (id !== undefined) {
    events.push(
      { type: `xstate.done.actor.${id}`, output: id === 'locateSource' ? located : facts },
      { type: `xstate.error.actor.${id}`, error: new TransientError('MountFailed', 'device busy') },
      {
        type: `xstate.error.actor.${id}`,
        error: new TerminalError('WrongFileKind', 'not a block device'),
      },
    );
  }
  return events;
}

/** Fine: the whole context except the volume (constant) and the attempt count, capped at 2. */
function serializeFine(s: NodeMounterSnapshot): string {
  const { volume: _volume, attempt, ...rest } = s.context;
  return JSON.stringify([s.value, Math.min(attempt, 2), rest]);
}

/** Coarse: the control state only — state, desired direction, whether the domain let go. */
function serializeCoarse(s: NodeMounterSnapshot): string {
  return JSON.stringify([s.value, s.context.desired, s.context.domainReleased]);
}

const traversal = (
  serializeState: (s: NodeMounterSnapshot) => string,
): ModelTraversal<NodeMounterSnapshot, ModelEvent> => ({
  input: { volume },
  events: eventsFor,
  serializeState,
});

interface Pending {
  readonly input: unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** What the test effects of the running actor are doing; the provided actors report into `effects`. */
class Effects {
  readonly pending = new Map<string, Pending>();
  readonly active = new Set<string>();
  backoff: { input: BackoffInput; sendBack: (e: MounterEvent) => void } | undefined;
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

const testMachine = nodeMounterMachine.provide({
  actors: {
    locateSource: promised('locateSource') as never,
    mount: promised('mount') as never,
    unmount: promised('unmount') as never,
    backoff: fromCallback<MounterEvent, BackoffInput>(({ input, sendBack }) => {
      const mine = effects;
      mine.active.add('backoff');
      mine.backoff = { input, sendBack };
      return () => {
        mine.active.delete('backoff');
        mine.backoff = undefined;
      };
    }),
  },
});

/** A live actor with test effects, and what it is running. */
function harness() {
  effects = new Effects();
  const fx = effects;
  const actor = createActor(testMachine, { input: { volume } });
  actor.start();
  return { actor, pending: fx.pending, active: fx.active, backoff: () => fx.backoff };
}

async function deliver(h: ReturnType<typeof harness>, event: ModelEvent): Promise<void> {
  const outcome = /^xstate\.(done|error)\.actor\.(.+)$/.exec(event.type);
  if (outcome !== null) {
    const p = h.pending.get(outcome[2]!);
    if (p === undefined) throw new Error(`no ${outcome[2]} running to deliver ${event.type}`);
    const before = h.actor.getSnapshot();
    if (outcome[1] === 'done') p.resolve((event as { output?: unknown }).output);
    else p.reject((event as { error?: unknown }).error);
    // The outcome reaches the machine a few promise jobs later; every outcome changes the snapshot.
    for (let i = 0; i < 100 && h.actor.getSnapshot() === before; i += 1) await Promise.resolve();
    return;
  }
  if (event.type === 'RETRY_SCHEDULED' || event.type === 'RETRY') {
    const b = h.backoff();
    if (b === undefined) throw new Error('backoff is not running');
    b.sendBack(event as MounterEvent);
    return;
  }
  h.actor.send(event as MounterEvent);
}

function expectedInput(id: string, c: NodeMounterSnapshot['context']): unknown {
  if (id === 'mount') return { volume, located: c.located };
  if (id === 'backoff') return { attempt: c.attempt, retryAt: c.retryAt };
  return { volume };
}

function invocationMatches(h: ReturnType<typeof harness>, snapshot: NodeMounterSnapshot): boolean {
  const id = INVOKED[snapshot.value];
  const running = [...h.active];
  if (id === undefined) return running.length === 0;
  const input = id === 'backoff' ? h.backoff()?.input : h.pending.get(id)?.input;
  return (
    running.length === 1 &&
    running[0] === id &&
    isDeepStrictEqual(input, expectedInput(id, snapshot.context))
  );
}

function expectInvocation(h: ReturnType<typeof harness>, snapshot: NodeMounterSnapshot): void {
  const id = INVOKED[snapshot.value];
  expect([...h.active]).toEqual(id === undefined ? [] : [id]);
  if (id === undefined) return;
  const input = id === 'backoff' ? h.backoff()?.input : h.pending.get(id)?.input;
  expect(input).toEqual(expectedInput(id, snapshot.context));
}

/** The state graph as specified (issue 6): which state may follow which. */
const ALLOWED: Record<string, readonly string[]> = {
  unmounted: ['unmounted', 'locatingSource'],
  locatingSource: ['locatingSource', 'mounting', 'retrying', 'failed', 'unmounting'],
  mounting: ['mounting', 'mounted', 'unmounting', 'retrying', 'failed'],
  mounted: ['mounted', 'locatingSource', 'unmounting'],
  unmounting: ['unmounting', 'unmounted', 'locatingSource', 'retrying', 'failed'],
  retrying: ['retrying', 'locatingSource', 'unmounting'],
  failed: ['failed', 'locatingSource', 'unmounting'],
};

/** Invariants every step of every path must keep; returns the broken one. */
function brokenInvariant(
  before: NodeMounterSnapshot,
  event: ModelEvent,
  after: NodeMounterSnapshot,
): string | undefined {
  const from = String(before.value);
  const to = String(after.value);
  if (!(ALLOWED[from] ?? []).includes(to)) return `${from} → ${to} is not in the state graph`;
  if (to === 'unmounting' && from !== 'unmounting' && !after.context.domainReleased) {
    return 'unmounting before the domain released the disk';
  }
  if (event.type === 'PLUG' && after.context.desired !== 'mounted')
    return 'PLUG did not set desired=mounted';
  if (event.type === 'UNPLUG' && after.context.desired !== 'unmounted')
    return 'UNPLUG did not set desired=unmounted';
  if (event.type === 'UNPLUG' && (event as { domainReleased?: boolean }).domainReleased === false) {
    if (from === 'mounted' && to !== 'mounted' && !before.context.domainReleased)
      return 'left mounted without a release';
  }
  if (to === 'mounted' && after.context.located === null) return 'mounted without a located source';
  return undefined;
}

/**
 * Replays a path's events on the live actor. After each step the live snapshot must serialize
 * exactly like the model's (fine: the whole context but the attempt count beyond 2) and run exactly
 * the effect its state names, with the input the context implies.
 */
async function replay(
  path: ModelPath,
  serialize: (s: NodeMounterSnapshot) => string,
): Promise<void> {
  const h = harness();
  try {
    for (const step of path.steps) {
      const before = h.actor.getSnapshot();
      if (step.event.type !== 'xstate.init') await deliver(h, step.event);
      const live = h.actor.getSnapshot();
      if (step.event.type !== 'xstate.init') {
        expect(brokenInvariant(before, step.event, live)).toBeUndefined();
      }
      // Cheap checks first; `expect` only to explain a mismatch (tens of thousands of steps).
      if (serialize(live) !== serialize(step.state) || !invocationMatches(h, live)) {
        expect(serialize(live)).toBe(serialize(step.state));
        expectInvocation(h, live);
      }
    }
  } finally {
    h.actor.stop();
  }
}

function describePath(path: ModelPath): string {
  return path.steps
    .map(
      (s) =>
        `${s.event.type}${'domainReleased' in s.event ? `(${String(s.event.domainReleased)})` : ''} → ${String(s.state.value)}`,
    )
    .join(', ');
}

function replayAll(
  paths: ModelPath[],
  serialize: (s: NodeMounterSnapshot) => string,
): Promise<void> {
  return replayPaths(paths, (path) => replay(path, serialize), describePath);
}

describe('nodeMounterMachine over every path', () => {
  it('every simple path through the control states (state × desired × domain released)', async () => {
    const paths = simplePaths(nodeMounterMachine, traversal(serializeCoarse));
    expect(paths.length).toBeGreaterThan(1000);
    console.log(`simple paths: ${paths.length}, steps: ${stepCount(paths)}`);
    const reached = new Set(paths.map((p) => String(p.state.value)));
    expect([...reached].sort()).toEqual(Object.values(MounterState).sort());
    await replayAll(paths, serializeCoarse);
  }, 60_000);

  it('every transition of the full model (shortest path to each state, plus each event from it)', async () => {
    const { states: shortest, edges } = edgePaths(nodeMounterMachine, traversal(serializeFine));
    expect(edges.length).toBeGreaterThan(1000);
    console.log(`states: ${shortest.length}, transitions: ${edges.length}`);
    await replayAll(edges, serializeFine);
  }, 60_000);
});

describe('nodeMounterMachine rules', () => {
  const start = () => {
    const h = harness();
    h.actor.send({ type: 'PLUG' });
    return h;
  };

  it('UNPLUG before the domain released the disk leaves it mounted; the release then unmounts', async () => {
    const h = start();
    await deliver(h, { type: 'xstate.done.actor.locateSource', output: located });
    await deliver(h, { type: 'xstate.done.actor.mount', output: facts });
    h.actor.send({ type: 'UNPLUG' });
    expect(h.actor.getSnapshot().value).toBe('mounted');
    h.actor.send({ type: 'UNPLUG', domainReleased: true });
    expect(h.actor.getSnapshot().value).toBe('unmounting');
    h.actor.stop();
  });

  it('a restored retrying snapshot keeps its deadline (no timer is lost)', async () => {
    const h = start();
    await deliver(h, {
      type: 'xstate.error.actor.locateSource',
      error: new TransientError('NotFound', 'not yet'),
    });
    await deliver(h, { type: 'RETRY_SCHEDULED', retryAt: 12_345 });
    const persisted = h.actor.getPersistedSnapshot();
    h.actor.stop();

    const inputs: BackoffInput[] = [];
    const restored = createActor(
      nodeMounterMachine.provide({
        actors: {
          backoff: fromCallback<MounterEvent, BackoffInput>(({ input }) => {
            inputs.push(input);
          }),
        },
      }),
      { input: { volume }, snapshot: persisted },
    );
    restored.start();
    expect(restored.getSnapshot().value).toBe('retrying');
    expect(inputs).toEqual([{ attempt: 1, retryAt: 12_345 }]);
    restored.stop();
  });

  it('a restored mounting snapshot runs the (idempotent) mount again', async () => {
    const h = start();
    await deliver(h, { type: 'xstate.done.actor.locateSource', output: located });
    expect(h.actor.getSnapshot().value).toBe('mounting');
    const persisted = h.actor.getPersistedSnapshot();
    h.actor.stop();

    const inputs: MountInput[] = [];
    const restored = createActor(
      nodeMounterMachine.provide({
        actors: {
          mount: fromPromise<EffectFacts, MountInput>(({ input }) => {
            inputs.push(input);
            return Promise.resolve(facts);
          }),
        },
      }),
      { input: { volume }, snapshot: persisted },
    );
    restored.start();
    await vi.waitFor(() => expect(restored.getSnapshot().value).toBe('mounted'));
    expect(inputs).toEqual([{ volume, located }]);
    restored.stop();
  });

  it('the backoff actor reports its deadline once and fires RETRY when it has passed', async () => {
    let now = 1_000;
    const h = harness();
    const machine = nodeMounterMachine.provide({
      actors: {
        locateSource: fromPromise(() => Promise.reject(new TransientError('NotFound', 'not yet'))),
        backoff: backoffActor({ baseMs: 5, now: () => now }),
      },
    });
    h.actor.stop();
    const actor = createActor(machine, { input: { volume } });
    const seen: string[] = [];
    actor.subscribe((s) =>
      seen.push(`${String(s.value)}:${s.context.attempt}:${s.context.retryAt}`),
    );
    actor.start();
    actor.send({ type: 'PLUG' });
    await vi.waitFor(() => expect(actor.getSnapshot().context.attempt).toBeGreaterThanOrEqual(2), {
      timeout: 5_000,
    });
    actor.stop();
    now = 0;
    expect(seen).toContain('retrying:1:1005');
    expect(seen).toContain('retrying:2:1010');
  });

  it('backoff doubles and is capped; terminal errors are recognised', () => {
    expect([1, 2, 3, 4].map((a) => backoffDelay(a, 100, 500))).toEqual([100, 200, 400, 500]);
    expect(backoffDelay(1_000)).toBe(30_000);
    expect(isTerminalError(new PathEscapeError('..', '/root'))).toBe(true);
    expect(isTerminalError(new TransientError('Busy', 'busy'))).toBe(false);
  });
});
