import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createActor, fromPromise } from 'xstate';
import type { AnyEventObject } from 'xstate';
import type { StageEmitted, WorkEvent } from '@plugline/bus';
import {
  HypervisorError,
  newOperationId,
  TransientError,
  type WorkItem,
} from '@plugline/contracts';
import {
  edgePaths,
  replayPaths,
  simplePaths,
  stepCount,
  type ModelPath as GraphPath,
  type ModelTraversal,
} from '@plugline/testkit';
import {
  DETACH_TIMEOUT_REASON,
  domainUpdaterMachine,
  NudgeCause,
  REPLUG_GRACE_MS,
  UpdaterState,
  type DomainUpdaterSnapshot,
  type Observation,
} from '../src/index.js';

/**
 * Every path through the domain-updater machine, generated with @xstate/graph from the pure
 * transition function and replayed on a live actor whose effects are test actors the replay
 * resolves or rejects. After every step the live actor must match the model, run exactly the
 * effect its state names, and keep the rules (checked on what it emitted).
 */

const key = {
  namespace: 'ns-with-a-rather-long-name',
  vmi: 'vm.with.dots',
  volume: 'hotplug-data-volume-1',
};
const NODE = 'node-a';
const TIMEOUT = 60_000;
const T0 = 1_700_000_000_000;
const LATE = T0 + 2 * TIMEOUT;
const DOMAIN = `${key.namespace}_${key.vmi}`;
const input = { key, node: NODE, detachTimeoutMs: TIMEOUT };

function item(cause: string): WorkItem {
  return {
    v: 1,
    stage: 'domain-updater',
    ...key,
    node: NODE,
    vmiUID: 'vmi-uid-1',
    operationId: 'op-1',
    operation: 'plug',
    cause,
    issuedAt: new Date(T0).toISOString(),
  };
}

const plan = { diskXml: '<disk/>', target: 'sda', sourcePath: '/hp/d.img', bus: 'scsi' };
const observed = (o: Partial<Extract<Observation, { kind: 'observed' }>>): Observation => ({
  kind: 'observed',
  domain: DOMAIN,
  vmiUID: 'vmi-uid-1',
  desired: 'plug',
  present: null,
  sourceReady: false,
  plan: null,
  planError: null,
  ...o,
});

const OBSERVATIONS: Record<string, Observation> = {
  gone: { kind: 'gone', why: 'not running here' },
  unavailable: { kind: 'unavailable', reason: 'Unavailable', message: 'libvirtd is down' },
  waitSource: observed({}),
  plan: observed({ sourceReady: true, plan }),
  badSpec: observed({
    sourceReady: true,
    planError: { reason: 'InvalidDiskSpec', message: 'a lun needs a block volume' },
  }),
  plugPresent: observed({ present: { target: 'sda' }, sourceReady: true }),
  unplugPresent: observed({ desired: 'unplug', present: { target: 'sda' } }),
  unplugAbsent: observed({ desired: 'unplug' }),
};

function work(obs: string, at = T0, cause = 'mounted-to-pod', operationId = 'op-1'): WorkEvent {
  return {
    type: 'work',
    item: { ...item(cause), operationId },
    attempt: 1,
    receivedAt: at,
    observed: OBSERVATIONS[obs],
  };
}

const INVOKED: Partial<Record<string, string>> = {
  [UpdaterState.Attaching]: 'attach',
  [UpdaterState.Confirming]: 'confirm',
  [UpdaterState.Detaching]: 'detach',
};

type ModelEvent = WorkEvent | AnyEventObject;
type ModelPath = GraphPath<DomainUpdaterSnapshot, ModelEvent>;

const transient = new TransientError('DuplicateTarget', "target 'sda' duplicated");
const locked = new HypervisorError('ImageLocked', 'Failed to get "write" lock');
const notFound = new HypervisorError('DeviceNotFound', 'device not found: disk sda not found');

function eventsFor(snapshot: DomainUpdaterSnapshot, nudges = true): ModelEvent[] {
  const id = INVOKED[String(snapshot.value)];
  if (id === 'attach') {
    return [
      { type: 'xstate.done.actor.attach', output: { requestedAt: T0 } },
      { type: 'xstate.error.actor.attach', error: transient },
      { type: 'xstate.error.actor.attach', error: locked },
    ];
  }
  if (id === 'confirm') {
    return [
      { type: 'xstate.done.actor.confirm', output: { target: 'sda', confirmedAt: T0 + 5 } },
      { type: 'xstate.error.actor.confirm', error: transient },
    ];
  }
  if (id === 'detach') {
    return [
      { type: 'xstate.done.actor.detach', output: { requestedAt: T0 } },
      { type: 'xstate.error.actor.detach', error: notFound },
      { type: 'xstate.error.actor.detach', error: transient },
    ];
  }
  return [
    ...Object.keys(OBSERVATIONS).map((o) => work(o)),
    work('unplugPresent', LATE),
    work('plugPresent', LATE),
    ...(nudges
      ? [work('unplugAbsent', T0, 'device-removed'), work('plugPresent', T0, 'device-added')]
      : []),
  ];
}

/** Coarse: the control state — the state, and whether a detach is in flight. */
function serializeCoarse(s: DomainUpdaterSnapshot): string {
  return JSON.stringify([s.value, s.context.detachRequestedAt !== null]);
}

/** Fine: everything that drives decisions (not the observation of the last work item). */
function serializeFine(s: DomainUpdaterSnapshot): string {
  const c = s.context;
  return JSON.stringify([
    s.value,
    c.detachRequestedAt,
    c.target,
    Math.min(c.attempt, 1),
    [...new Set(c.reported)].sort(),
    c.failure?.reason,
  ]);
}

/** The coarse traversal leaves out the nudge variants (the fine one has them). */
const traversal = (
  serializeState: (s: DomainUpdaterSnapshot) => string,
  nudges = true,
): ModelTraversal<DomainUpdaterSnapshot, ModelEvent> => ({
  input,
  events: (s) => eventsFor(s, nudges),
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
  readonly calls: string[] = [];
}
let effects = new Effects();

function promised(id: string) {
  return fromPromise<unknown, unknown>(({ input: actorInput, signal }) => {
    const mine = effects;
    mine.calls.push(id);
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

const testMachine = domainUpdaterMachine.provide({
  actors: {
    attach: promised('attach') as never,
    confirm: promised('confirm') as never,
    detach: promised('detach') as never,
  },
});

function harness(snapshot?: unknown) {
  effects = new Effects();
  const fx = effects;
  const emitted: StageEmitted[] = [];
  const actor = createActor(testMachine, {
    input,
    ...(snapshot === undefined ? {} : { snapshot: snapshot as never }),
  });
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  return { actor, fx, emitted };
}
type Harness = ReturnType<typeof harness>;

async function deliver(h: Harness, event: ModelEvent): Promise<void> {
  const outcome = /^xstate\.(done|error)\.actor\.(.+)$/.exec(event.type);
  if (outcome === null) {
    h.actor.send(event as WorkEvent);
    return;
  }
  const p = h.fx.pending.get(outcome[2]!);
  if (p === undefined) throw new Error(`no ${outcome[2]} running to deliver ${event.type}`);
  const before = h.actor.getSnapshot();
  if (outcome[1] === 'done') p.resolve((event as { output?: unknown }).output);
  else p.reject((event as { error?: unknown }).error);
  for (let i = 0; i < 100 && h.actor.getSnapshot() === before; i += 1) await Promise.resolve();
}

function expectedInput(id: string, s: DomainUpdaterSnapshot): unknown {
  const c = s.context;
  if (id === 'attach') {
    return { domain: DOMAIN, volume: key.volume, diskXml: plan.diskXml, target: plan.target };
  }
  if (id === 'confirm') {
    return { domain: DOMAIN, volume: key.volume, since: c.attachRequestedAt ?? c.now };
  }
  return { domain: DOMAIN, target: 'sda' };
}

function invocationOk(h: Harness, s: DomainUpdaterSnapshot): boolean {
  const id = INVOKED[String(s.value)];
  const running = [...h.fx.active];
  if (id === undefined) return running.length === 0;
  return (
    running.length === 1 &&
    running[0] === id &&
    isDeepStrictEqual(h.fx.pending.get(id)?.input, expectedInput(id, s))
  );
}

const STATES = new Set<string>(Object.values(UpdaterState));

/** The rules, checked on every step; returns the broken one. */
function brokenRule(
  before: DomainUpdaterSnapshot,
  event: ModelEvent,
  after: DomainUpdaterSnapshot,
  emitted: StageEmitted[],
): string | undefined {
  const to = String(after.value);
  if (!STATES.has(to)) return `rests in ${to}, which is not a resting or effect state`;
  const facts = emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
  const works = emitted.flatMap((e) => (e.type === 'plugline.work' ? [e.work] : []));
  const obs = (event as Partial<WorkEvent>).observed as Observation | undefined;
  const present = obs?.kind === 'observed' && obs.present !== null;
  const requestedAt = before.context.detachRequestedAt;
  const removedSince =
    obs?.kind === 'observed' && requestedAt !== null && (obs.removedAt ?? -Infinity) >= requestedAt;
  const receivedAt = (event as Partial<WorkEvent>).receivedAt;
  const overdue =
    requestedAt !== null && receivedAt !== undefined && receivedAt >= requestedAt + TIMEOUT;
  if (to === 'detaching' && requestedAt !== null && !removedSince && !overdue)
    return 'a detach was sent again within the timeout of the one in flight';
  for (const f of facts) {
    if (f.type === 'ready' && (to !== 'attached' || !f.data.target))
      return 'ready without attached';
    if (f.type === 'failed' && (!f.data.reason || !f.data.message)) return 'failed without reason';
  }
  for (const w of works) {
    if (w.stage !== 'node-mounter' || w.cause !== 'detached-from-domain' || w.node !== NODE)
      return `unexpected work ${JSON.stringify(w)}`;
    if (present) return 'node-mounter asked to unmount while the domain still has the disk';
    if (!facts.some((f) => f.type === 'detached-from-domain'))
      return 'node-mounter work without detached-from-domain';
  }
  const stuckReports = facts.filter((f) => f.data.reason === DETACH_TIMEOUT_REASON);
  if (stuckReports.length > 0 && !(to === 'detaching' && overdue))
    return 'DetachTimeout reported other than when the detach timed out';
  if (stuckReports.length > 0 && before.context.failure?.reason === DETACH_TIMEOUT_REASON)
    return 'DetachTimeout reported twice for one unplug';
  if (to === 'removalStuck' && works.length > 0) return 'a stuck removal unmounted';
  return undefined;
}

async function replay(path: ModelPath, serialize: (s: DomainUpdaterSnapshot) => string) {
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

function describePath(path: ModelPath): string {
  return path.steps
    .map((s) => {
      const obs = (s.event as Partial<WorkEvent>).observed;
      const tag = obs === undefined ? '' : `(${JSON.stringify(obs).slice(0, 60)})`;
      return `${s.event.type}${tag} → ${String(s.state.value)}`;
    })
    .join(', ');
}

function replayAll(paths: ModelPath[], serialize: (s: DomainUpdaterSnapshot) => string) {
  return replayPaths(paths, (path) => replay(path, serialize), describePath);
}

describe('domainUpdaterMachine over every path', () => {
  it('every simple path through the control states (state × detach in flight)', async () => {
    const paths = simplePaths(domainUpdaterMachine, traversal(serializeCoarse, false));
    const reached = new Set(paths.map((p) => String(p.state.value)));
    expect([...reached].sort()).toEqual([...STATES].sort());
    expect(paths.length).toBeGreaterThan(500);
    console.log(`simple paths: ${paths.length}, steps: ${stepCount(paths)}`);
    await replayAll(paths, serializeCoarse);
  }, 120_000);

  it('every transition of the fine model (shortest path to each state, plus each event from it)', async () => {
    const { states: shortest, edges } = edgePaths(domainUpdaterMachine, traversal(serializeFine));
    console.log(`states: ${shortest.length}, transitions: ${edges.length}`);
    expect(edges.length).toBeGreaterThan(200);
    await replayAll(edges, serializeFine);
  }, 120_000);
});

async function attached(first: WorkEvent = work('plan')): Promise<Harness> {
  const h = harness();
  h.actor.send(first);
  await deliver(h, { type: 'xstate.done.actor.attach', output: { requestedAt: T0 } });
  await deliver(h, {
    type: 'xstate.done.actor.confirm',
    output: { target: 'sda', confirmedAt: T0 + 7 },
  });
  return h;
}

/** A work event of an unplug operation. */
const asUnplug = (w: WorkEvent): WorkEvent => ({ ...w, item: { ...w.item, operation: 'unplug' } });

/** Plugged under op-1, then unplugged under op-2, its detach sent at T0 + 1 and not done yet. */
async function detachSent(): Promise<Harness> {
  const h = await attached();
  h.actor.send(asUnplug(work('unplugPresent', T0 + 1, 'unplug-requested', 'op-2')));
  await deliver(h, { type: 'xstate.done.actor.detach', output: { requestedAt: T0 + 1 } });
  return h;
}

describe('domainUpdaterMachine rules', () => {
  it('plug: attach, confirm, then ready with the target and the time it took', async () => {
    const h = await attached();
    expect(h.actor.getSnapshot().value).toBe('attached');
    expect(h.fx.calls).toEqual(['attach', 'confirm']);
    expect(h.emitted).toHaveLength(1);
    expect(h.emitted[0]).toMatchObject({
      type: 'plugline.fact',
      fact: { type: 'ready', data: { target: 'sda', durationMs: 7, operationId: 'op-1' } },
    });
    h.actor.stop();
  });

  it('a duplicate delivery of the plug finds the disk and neither attaches nor reports again', async () => {
    const h = await attached();
    h.emitted.length = 0;
    h.actor.send(work('plugPresent'));
    expect(h.actor.getSnapshot().value).toBe('attached');
    expect(h.fx.calls).toEqual(['attach', 'confirm']);
    expect(h.emitted).toEqual([]);
    // A resync repeats the fact (a lost event is repaired), still without an attach.
    h.actor.send(work('plugPresent', T0, 'resync'));
    expect(h.emitted.map((e) => e.type === 'plugline.fact' && e.fact.type)).toEqual(['ready']);
    expect(h.fx.calls).toEqual(['attach', 'confirm']);
    // So does node-mounter's nudge sent on in the resync's round, and a nudge after it does not.
    h.emitted.length = 0;
    const inRound = work('plugPresent', T0 + 1);
    h.actor.send({ ...inRound, item: { ...inRound.item, resync: new Date(T0).toISOString() } });
    h.actor.send(work('plugPresent', T0 + 2));
    expect(h.emitted.map((e) => e.type === 'plugline.fact' && e.fact.type)).toEqual(['ready']);
    expect(h.fx.calls).toEqual(['attach', 'confirm']);
    h.actor.stop();
  });

  it('a restored awaitingRemoval never detaches again within the timeout; overdue → one DetachTimeout and the detach asked again, once per timeout; release → unmount', async () => {
    const h = await attached();
    h.actor.send(work('unplugPresent'));
    await deliver(h, { type: 'xstate.done.actor.detach', output: { requestedAt: T0 } });
    expect(h.actor.getSnapshot().value).toBe('awaitingRemoval');
    expect(h.actor.getSnapshot().context.wakeAt).toBe(T0 + TIMEOUT);
    const persisted = h.actor.getPersistedSnapshot();
    h.actor.stop();

    const r = harness(persisted);
    r.actor.send(work('unplugPresent', T0 + 10));
    expect(r.actor.getSnapshot().value).toBe('awaitingRemoval');
    expect(r.fx.calls).toEqual([]);
    r.actor.send(work('unplugPresent', LATE));
    expect(r.actor.getSnapshot().value).toBe('detaching');
    expect(r.fx.calls).toEqual(['detach']);
    await deliver(r, { type: 'xstate.done.actor.detach', output: { requestedAt: LATE } });
    expect(r.actor.getSnapshot().value).toBe('removalStuck');
    expect(r.actor.getSnapshot().context.wakeAt).toBe(LATE + TIMEOUT);
    // Within the new request's timeout nothing is sent again, whatever wakes the unit.
    r.actor.send(work('unplugPresent', LATE + 1, 'device-removed'));
    r.actor.send(work('unplugPresent', LATE + TIMEOUT - 1));
    expect(r.actor.getSnapshot().value).toBe('removalStuck');
    expect(r.fx.calls).toEqual(['detach']);
    const failed = r.emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({
      type: 'failed',
      data: { reason: 'DetachTimeout', target: 'sda', operation: 'unplug' },
    });
    expect(failed[0]!.data.message).toContain(key.volume);
    expect(failed[0]!.data.message).toContain(DOMAIN);
    expect(r.emitted.some((e) => e.type === 'plugline.work')).toBe(false);
    // Resyncs repeat the report (a lost fact is repaired) but record it once.
    r.emitted.length = 0;
    r.actor.send(work('unplugPresent', LATE + 2, 'resync'));
    r.actor.send(work('unplugPresent', LATE + 3, 'resync'));
    expect(r.emitted.map((e) => e.type === 'plugline.fact' && e.fact.data.reason)).toEqual([
      'DetachTimeout',
      'DetachTimeout',
    ]);
    const stuckKeys = r.actor
      .getSnapshot()
      .context.reported.filter((k) => k.startsWith('DetachTimeout'));
    expect(stuckKeys).toHaveLength(1);
    // The next timeout asks again, and reports nothing new.
    r.emitted.length = 0;
    r.actor.send(work('unplugPresent', LATE + TIMEOUT));
    expect(r.fx.calls).toEqual(['detach', 'detach']);
    await deliver(r, {
      type: 'xstate.done.actor.detach',
      output: { requestedAt: LATE + TIMEOUT },
    });
    expect(r.actor.getSnapshot().value).toBe('removalStuck');
    expect(r.emitted).toEqual([]);

    r.actor.send(work('unplugAbsent', LATE + TIMEOUT + 5, 'device-removed'));
    expect(r.actor.getSnapshot().value).toBe('detached');
    expect(r.emitted.map((e) => (e.type === 'plugline.fact' ? e.fact.type : e.work.stage))).toEqual(
      ['detached-from-domain', 'node-mounter'],
    );
    r.actor.stop();
  });

  it('after a finished unplug, an older plug item read from a lagging copy neither attaches nor reports; a re-add does', async () => {
    const unplugItem = (obs: string, at: number, cause: string, operationId: string) => {
      const w = work(obs, at, cause, operationId);
      return { ...w, item: { ...w.item, operation: 'unplug' as const } };
    };
    const h = await attached();
    h.actor.send(unplugItem('unplugPresent', T0 + 1, 'unplug-requested', 'op-2'));
    await deliver(h, { type: 'xstate.done.actor.detach', output: { requestedAt: T0 + 1 } });
    h.actor.send(unplugItem('unplugAbsent', T0 + 2, 'device-removed', 'device-removed-1'));
    expect(h.actor.getSnapshot().value).toBe('detached');
    h.emitted.length = 0;
    // op-1's plug item again (a redelivery after a crash), with a VMI copy still listing the
    // volume: wanted, absent, a plan ready.
    h.actor.send(work('plan', T0 + 3, 'mounted-to-pod', 'op-1'));
    expect(h.actor.getSnapshot().value).toBe('detached');
    expect(h.fx.calls).toEqual(['attach', 'confirm', 'detach']);
    expect(h.emitted).toEqual([]);
    // The same with the disk still there: no `ready` under the unplug's id.
    h.actor.send(work('plugPresent', T0 + 4, 'device-added', 'device-added-1'));
    expect(h.emitted).toEqual([]);
    // Added again: a newer operation, with its own item, attaches.
    h.actor.send(work('plan', T0 + 5, 'mounted-to-pod', 'op-3'));
    expect(h.actor.getSnapshot().value).toBe('attaching');
    expect(h.fx.calls).toEqual(['attach', 'confirm', 'detach', 'attach']);
    h.actor.stop();
  });

  it("a reconcile nudge that attached a fresh unit's disk first does not keep the volume: the plug, its unplug and a re-add report under their own ids", async () => {
    // Seen in the bench (2 replicas, a re-add): the periodic reconcile reached the mounted disk
    // before the plug's item; its made-up id kept the unit and every later operation was older.
    const [plugOp, unplugOp, replugOp] = [1, 2, 3].map((s) => newOperationId(new Date(T0 + s)));
    const h = await attached(work('plan', T0, NudgeCause.Reconcile, 'reconcile-17a0287a'));
    const facts = () => h.emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
    const reported = () => facts().map((f) => [f.type, f.data.operationId]);
    h.emitted.length = 0;
    h.actor.send(work('plugPresent', T0 + 1, 'mounted-to-pod', plugOp));
    expect(reported()).toEqual([['ready', plugOp]]);
    h.emitted.length = 0;
    const unplug = work('unplugPresent', T0 + 2, 'unplug-requested', unplugOp);
    h.actor.send({ ...unplug, item: { ...unplug.item, operation: 'unplug' } });
    await deliver(h, { type: 'xstate.done.actor.detach', output: { requestedAt: T0 + 2 } });
    h.actor.send(work('unplugAbsent', T0 + 3, NudgeCause.DeviceRemoved, 'device-removed-1'));
    expect(reported()).toEqual([['detached-from-domain', unplugOp]]);
    h.emitted.length = 0;
    h.actor.send(work('plan', T0 + 4, 'mounted-to-pod', replugOp));
    expect(h.actor.getSnapshot().value).toBe('attaching');
    h.actor.stop();
  });

  it('a volume added back while the guest holds its detached disk waits the grace, then the disk is its own: ready under the re-add, no second attach', async () => {
    const h = await detachSent();
    h.emitted.length = 0;
    // The re-add's item while the guest may still let go: it waits for the guest, and comes back
    // at the grace, not at the detach's minute.
    h.actor.send(work('plugPresent', T0 + 2, 'mounted-to-pod', 'op-3'));
    expect(h.actor.getSnapshot().value).toBe('awaitingRemoval');
    expect(h.actor.getSnapshot().context.wakeAt).toBe(T0 + 1 + REPLUG_GRACE_MS);
    h.actor.send(work('plugPresent', T0 + REPLUG_GRACE_MS, 'mounted-to-pod', 'op-3'));
    expect(h.actor.getSnapshot().value).toBe('awaitingRemoval');
    expect(h.emitted).toEqual([]);
    // Any look at the grace ends it, a nudge too once the re-add took the unit.
    h.actor.send(work('plugPresent', T0 + 1 + REPLUG_GRACE_MS, 'device-added', 'device-added-1'));
    expect(h.actor.getSnapshot().value).toBe('attached');
    const facts = h.emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
    expect(facts.map((f) => [f.type, f.data.operationId, f.data.target])).toEqual([
      ['ready', 'op-3', 'sda'],
    ]);
    expect(h.fx.calls).toEqual(['attach', 'confirm', 'detach']);
    // The detach is over: the next unplug sends its own.
    const next = work('unplugPresent', T0 + 2 * REPLUG_GRACE_MS, 'unplug-requested', 'op-4');
    h.actor.send({ ...next, item: { ...next.item, operation: 'unplug' } });
    expect(h.actor.getSnapshot().value).toBe('detaching');
    h.actor.stop();
  });

  it('a snapshot from before a re-add the crash kept from it (detach recorded, disk attached again) ends ready, not stuck waiting for the guest', async () => {
    // The repeated NATS-restart chaos: unplugged, then added back and attached, and the snapshot
    // writes after the detach lost; every look found the disk and waited on the old detach.
    const h = await detachSent();
    const beforeReAdd = h.actor.getPersistedSnapshot();
    h.actor.stop();

    const r = harness(beforeReAdd);
    // A nudge is no re-add: it may read a copy from before the unplug (see staleWant).
    r.actor.send(work('plugPresent', T0 + 1 + REPLUG_GRACE_MS, 'device-added', 'device-added-1'));
    expect(r.actor.getSnapshot().value).toBe('awaitingRemoval');
    expect(r.emitted).toEqual([]);
    r.actor.send(work('plugPresent', LATE, 'mounted-to-pod', 'op-3'));
    expect(r.actor.getSnapshot().value).toBe('attached');
    const facts = r.emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
    expect(facts.map((f) => [f.type, f.data.operationId])).toEqual([['ready', 'op-3']]);
    expect(r.fx.calls).toEqual([]);
    r.actor.stop();
  });

  it('a detach seen done by a nudge that reads the volume wanted again leaves no detach in flight: the next unplug sends its own, even from that snapshot', async () => {
    // The repeated NATS-restart chaos: unplugged (op-2) and added back (op-3) at once; the
    // device-removed nudge read the re-add and changed nothing (staleWant) but kept the detach
    // as in flight; op-3 attached the disk again and its snapshot write was lost; the next
    // unplug (op-4) found the disk and waited for the old detach, then reported it stuck.
    const h = await detachSent();
    h.actor.send(work('plan', T0 + 2, NudgeCause.DeviceRemoved, 'device-removed-1'));
    expect(h.actor.getSnapshot().value).toBe('detached');
    expect(h.actor.getSnapshot().context.detachRequestedAt).toBeNull();
    const beforeReAttach = h.actor.getPersistedSnapshot();
    h.actor.stop();

    const r = harness(beforeReAttach);
    r.actor.send(asUnplug(work('unplugPresent', T0 + 3, 'unplug-requested', 'op-4')));
    expect(r.actor.getSnapshot().value).toBe('detaching');
    expect(r.fx.calls).toEqual(['detach']);
    r.actor.stop();
  });

  it('a detach recorded in flight whose disk this process saw removed since is over: a re-add finds the disk attached again and reports ready at once', async () => {
    const h = await detachSent();
    const inFlight = h.actor.getPersistedSnapshot();
    h.actor.stop();

    // The snapshot came back from before the removal (T0 + 2) and the re-add's attach.
    const r = harness(inFlight);
    const plugPresent = OBSERVATIONS.plugPresent as Extract<Observation, { kind: 'observed' }>;
    r.actor.send({
      ...work('plugPresent', T0 + 3, 'mounted-to-pod', 'op-3'),
      observed: { ...plugPresent, removedAt: T0 + 2 },
    });
    expect(r.actor.getSnapshot().value).toBe('attached');
    const facts = r.emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
    expect(facts.map((f) => [f.type, f.data.operationId])).toEqual([['ready', 'op-3']]);
    expect(r.actor.getSnapshot().context.detachRequestedAt).toBeNull();
    r.actor.stop();
  });

  it('a disk found under another target than the one the unit reported is reported again, once: the status follows the domain', async () => {
    // The NATS-restart chaos: a re-add was Ready on the disk the guest had kept (vdb), the disk
    // was attached afresh (sda) and that report lost; the status named vdb for good.
    const h = await attached();
    const reported = h.actor.getPersistedSnapshot();
    h.actor.stop();

    const r = harness(reported);
    const plugPresent = OBSERVATIONS.plugPresent as Extract<Observation, { kind: 'observed' }>;
    const onSdb = (at: number) => ({
      ...work('plugPresent', at, NudgeCause.DeviceAdded, `device-added-${at}`),
      observed: { ...plugPresent, present: { target: 'sdb' } },
    });
    r.actor.send(onSdb(T0 + 10));
    const facts = () => r.emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
    expect(facts().map((f) => [f.type, f.data.operationId, f.data.target])).toEqual([
      ['ready', 'op-1', 'sdb'],
    ]);
    r.actor.send(onSdb(T0 + 11));
    expect(facts()).toHaveLength(1);
    expect(r.fx.calls).toEqual([]);
    r.actor.stop();
  });

  it("a late wake-up of an older operation does not take over: the unplug's facts stay its own", async () => {
    // Plugged under op-1, then unplugged under op-2 (its detach in flight) after op-1's own
    // unplug was reported once before: op-1's delayed item must not make op-2's detach a repeat.
    const h = await attached();
    h.actor.send(work('unplugPresent', T0 + 1, 'unplug-requested', 'op-2'));
    await deliver(h, { type: 'xstate.done.actor.detach', output: { requestedAt: T0 + 1 } });
    expect(h.actor.getSnapshot().value).toBe('awaitingRemoval');
    h.actor.send(work('unplugPresent', T0 + 2, 'unplug-requested', 'op-0'));
    h.emitted.length = 0;
    h.actor.send(work('unplugAbsent', T0 + 3, 'device-removed', 'device-removed-1'));
    expect(h.actor.getSnapshot().value).toBe('detached');
    const facts = h.emitted.flatMap((e) => (e.type === 'plugline.fact' ? [e.fact] : []));
    expect(facts.map((f) => [f.type, f.data.operationId])).toEqual([
      ['detached-from-domain', 'op-2'],
    ]);
    h.actor.stop();
  });
});
