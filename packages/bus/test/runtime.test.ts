import {
  buildEvent,
  decodeWorkItem,
  MAX_MESSAGE_BYTES,
  TerminalError,
  workSubject,
  type WorkItem,
} from '@plugline/contracts';
import { startNats, waitFor, type NatsServer } from '@plugline/testkit';
import { createLogger, type PluglineMetrics } from '@plugline/telemetry';
import { fromPromise } from 'xstate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectBus,
  defaultDisposition,
  ensureStageBuckets,
  provision,
  kvKey,
  LeaseManager,
  Publisher,
  readUnitState,
  runStage,
  snapshotBucket,
  StreamName,
  waitsOnNothing,
  type Bus,
  type StageOptions,
} from '../src/index.js';
import {
  backlog,
  metricValue,
  newMetrics,
  persistedState,
  provisionedBus,
  publishRaw,
  readDeadLetters,
  readEvents,
  sendWork,
  streamBehindItsConsumer,
} from './helpers.js';
import {
  effectTakes,
  eventType,
  statingMachine,
  unitKey,
  unitMachine,
  workItem,
} from './support.js';

let nats: NatsServer;
let bus: Bus;

/** pino's numeric levels, as its JSON lines carry them. */
const PINO_WARN = 40;
const PINO_DEBUG = 20;
const PINO_INFO = 30;

/** The unit machine whose `apply` effect takes `ms` (and calls `onCall` as it starts). */
function applyTaking(ms: number, onCall?: () => void) {
  return unitMachine.provide({
    actors: {
      apply: fromPromise(async () => {
        onCall?.();
        await effectTakes(ms);
        return 'ok';
      }),
    },
  });
}

/**
 * Runs `body` against a server of its own, with the example stage running there (the work
 * consumer's default settings: the shared one's helpers set their own bound, and an item parked
 * there would stay for later tests).
 */
async function onOwnStage(
  name: string,
  options: Pick<
    StageOptions<typeof unitMachine>,
    'concurrency' | 'waitingRecheckMs' | 'servedWaiting'
  >,
  body: (ownBus: Bus, metrics: PluglineMetrics) => Promise<void>,
): Promise<void> {
  const own = await startNats();
  const ownBus = await connectBus({ servers: own.url, name });
  try {
    await provision(ownBus, { consumers: [{ stage: 'spec-watcher' }] });
    const metrics = newMetrics();
    await using _stage = await runStage({
      bus: ownBus,
      stage: 'spec-watcher',
      machine: unitMachine,
      keyOf: unitKey,
      metrics,
      ...options,
    });
    await body(ownBus, metrics);
  } finally {
    await ownBus.close();
    await own.stop();
  }
}

beforeAll(async () => {
  nats = await startNats();
  bus = await provisionedBus(nats.url);
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

describe('runStage', () => {
  it('runs the effect once, persists the snapshot, publishes the fact, acks', async () => {
    const applied: string[] = [];
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(({ input }: { input: { item: WorkItem } }) => {
          applied.push(input.item.volume);
          return Promise.resolve('ok');
        }),
      },
    });
    const metrics = newMetrics();
    await using stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      metrics,
    });
    const item = workItem('vol-basic');
    await sendWork(bus, item);
    await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'applied');
    // a second nudge for the same unit does not repeat the effect
    await sendWork(bus, { ...item, cause: 'resync' });
    await waitFor(
      async () => (await metricValue(metrics, 'messagesHandled', { outcome: 'done' })) === 2,
    );
    await waitFor(async () => (await backlog(bus)) === 0);
    expect(applied).toEqual(['vol-basic']);
    // nor publish its fact again: the lease handed over that it was published
    expect(await metricValue(metrics, 'published', { kind: 'event' })).toBe(1);
    const state = await persistedState(bus, unitKey(item));
    expect(state).toMatchObject({ value: 'applied', context: { applies: 1 } });
    const ready = (await readEvents(bus)).filter((e) => e.subject.endsWith('/vol-basic'));
    expect(ready.map(eventType)).toEqual(['ready']);
    expect(ready[0]!.data).toMatchObject({
      operationId: item.operationId,
      stage: 'spec-watcher',
      phase: 'Ready',
    });
    expect(stage.bound()).toBe(true);
  });

  it('lets the facts of a resync round into the event stream inside its duplicate window, and carries the round on', async () => {
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine: statingMachine,
      keyOf: unitKey,
    });
    const item = workItem('vol-restated');
    const stated = async () =>
      (await readEvents(bus)).filter((e) => e.subject.endsWith('/vol-restated'));
    const sentOn: WorkItem[] = [];
    const watch = bus.nc.subscribe(workSubject(item), {
      callback: (_err, msg) => {
        const decoded = decodeWorkItem(msg.data);
        if (decoded.ok && decoded.value.cause === 'stated') sentOn.push(decoded.value);
      },
    });
    await bus.nc.flush();
    await sendWork(bus, item);
    await waitFor(async () => (await stated()).length === 1);
    // Stated again by another nudge of the operation: the same fact, dropped as a duplicate.
    await sendWork(bus, { ...item, cause: 'spec' });
    await waitFor(async () => (await backlog(bus)) === 0);
    // A status that lost the fact to a crash would wait out the window (2 minutes) for it.
    const resync = { ...item, cause: 'resync', issuedAt: new Date().toISOString() };
    await sendWork(bus, resync);
    const [first, again] = await waitFor(async () => {
      const events = await stated();
      return events.length === 2 && events;
    });
    expect(first!.data.resync).toBeUndefined();
    expect(again!.data).toMatchObject({ operationId: item.operationId, resync: resync.issuedAt });
    // The nudge sent on carries the round; what it states there is that round's fact again.
    await waitFor(() => sentOn.length === 1);
    expect(sentOn[0]).toMatchObject({ operationId: item.operationId, resync: resync.issuedAt });
    // The restatement published again (an outbox its writer may not have published) is one message.
    await new Publisher(bus).publishEvent({ ...again!, id: 'a-retried-publish' });
    await sendWork(bus, { ...item, cause: 'spec-again' });
    await waitFor(async () => (await backlog(bus)) === 0);
    expect((await stated()).map((e) => e.data.resync)).toEqual([undefined, resync.issuedAt]);
    watch.unsubscribe();
  });

  it('publishes an outbox its writer left unpublished before running the unit again', async () => {
    const machine = unitMachine.provide({
      actors: { apply: fromPromise(() => Promise.resolve('ok')) },
    });
    await using stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      busyDelayMs: 50,
    });
    const item = workItem('vol-left');
    await sendWork(bus, item);
    await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'applied');
    await waitFor(async () => (await backlog(bus)) === 0);
    const buckets = await ensureStageBuckets(bus, 'spec-watcher');
    // What a reader beside the stage sees: the fact the handling emitted went out.
    expect((await readUnitState(buckets, unitKey(item)))?.outboxUnpublished).toBe(false);
    // Another worker took the unit, wrote its next snapshot with a fact in its outbox, and
    // crashed; its lease runs out.
    const { leases } = buckets;
    const crashed = await new LeaseManager(leases, 'worker-crashed', 300).acquire(unitKey(item));
    expect(crashed.ok).toBe(true);
    const left = buildEvent({
      namespace: item.namespace,
      vmi: item.vmi,
      volume: item.volume,
      type: 'removed',
      stage: 'spec-watcher',
      id: 'id-left-behind',
      data: { operationId: 'op-left', operation: 'unplug', vmiUID: item.vmiUID },
    });
    const kv = await bus.kvm.open(snapshotBucket('spec-watcher'));
    const entry = (await kv.get(kvKey(unitKey(item))))!;
    const record = entry.json<{ snapshot: { context: unknown } }>();
    const withOutbox = { ...record, outbox: [{ kind: 'event', event: left }] };
    await kv.update(kvKey(unitKey(item)), JSON.stringify(withOutbox), entry.revision);
    expect(await readUnitState(buckets, unitKey(item))).toMatchObject({
      context: record.snapshot.context,
      outboxUnpublished: true,
    });

    await sendWork(bus, { ...item, cause: 'resync' });
    await waitFor(async () => (await readEvents(bus)).some((e) => e.id === 'id-left-behind'));
    await waitFor(async () => (await backlog(bus)) === 0);
    expect((await readUnitState(buckets, unitKey(item)))?.outboxUnpublished).toBe(false);
    expect(stage.bound()).toBe(true);
  });

  it('does not publish an outbox again after a later holder of the unit crashed', async () => {
    const metrics = newMetrics();
    const machine = unitMachine.provide({
      actors: { apply: fromPromise(() => Promise.resolve('ok')) },
    });
    await using stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      metrics,
      busyDelayMs: 50,
    });
    const item = workItem('vol-crashed');
    await sendWork(bus, item);
    const done = (): Promise<number> =>
      metricValue(metrics, 'messagesHandled', { outcome: 'done' });
    await waitFor(async () => (await done()) === 1);
    // Another worker takes the unit and dies holding it; its lease runs out.
    const { leases } = await ensureStageBuckets(bus, 'spec-watcher');
    const crashed = await new LeaseManager(leases, 'worker-crashed', 300).acquire(unitKey(item));
    expect(crashed.ok).toBe(true);
    await sendWork(bus, { ...item, cause: 'resync' });
    await waitFor(async () => (await done()) === 2);
    expect(await metricValue(metrics, 'published', { kind: 'event' })).toBe(1);
    expect(stage.bound()).toBe(true);
  });

  it('dead-letters malformed, oversized, unknown-type and misrouted messages and keeps going', async () => {
    const applied: string[] = [];
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(({ input }: { input: { item: WorkItem } }) => {
          applied.push(input.item.volume);
          return Promise.resolve('ok');
        }),
      },
    });
    const metrics = newMetrics();
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      metrics,
    });
    const good = workItem('vol-after-bad');
    const subject = workSubject(good);
    await publishRaw(bus, subject, '{not json');
    await publishRaw(bus, subject, JSON.stringify({ ...good, pad: 'x'.repeat(MAX_MESSAGE_BYTES) }));
    await publishRaw(bus, subject, JSON.stringify({ ...good, operation: 'explode' }));
    await publishRaw(
      bus,
      subject,
      JSON.stringify({ specversion: '1.0', type: 'io.plugline.volume.bogus', id: 'x', data: {} }),
    );
    await publishRaw(bus, workSubject({ ...good, volume: 'another-volume' }), JSON.stringify(good));
    await sendWork(bus, good);
    await waitFor(async () => (await persistedState(bus, unitKey(good)))?.value === 'applied');
    await waitFor(async () => (await metricValue(metrics, 'deadLetters', {})) === 5);
    const dead = await readDeadLetters(bus);
    expect(dead.map((d) => d.reason)).toEqual([
      'invalid-json',
      'oversized',
      'invalid-data',
      'invalid-data',
      'subject-mismatch',
    ]);
    expect(dead[2]!.error).toContain('operation must be plug or unplug');
    expect(dead[4]!.subject).toContain('another-volume');
    expect(applied).toEqual(['vol-after-bad']);
    expect(await metricValue(metrics, 'deadLetters', { reason: 'oversized' })).toBe(1);
    await waitFor(async () => (await backlog(bus)) === 0);
  });

  it('naks a waiting unit until its deadline (kept in context) and then finishes', async () => {
    const metrics = newMetrics();
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine: unitMachine,
      keyOf: unitKey,
      metrics,
    });
    const item = workItem('vol-waits', { cause: 'wait' });
    const sent = Date.now();
    await sendWork(bus, item);
    await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'waiting');
    const waiting = await persistedState(bus, unitKey(item));
    expect(waiting!.context.wakeAt).toBeGreaterThanOrEqual(sent + 300);
    await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'applied');
    expect(Date.now() - sent).toBeGreaterThanOrEqual(300);
    expect(
      await metricValue(metrics, 'messagesHandled', { outcome: 'waiting' }),
    ).toBeGreaterThanOrEqual(1);
  });

  it('looks at a waiting unit again within waitingRecheckMs, however far its deadline', async () => {
    // Its own server: the parked item would otherwise stay in the shared stream for 10 minutes.
    await onOwnStage('rechecked', { waitingRecheckMs: 100 }, async (ownBus, metrics) => {
      // Parked for 10 minutes: without the bound its item would come back only then.
      const item = workItem('vol-rechecked', { cause: 'park' });
      await sendWork(ownBus, item);
      await waitFor(
        async () => (await metricValue(metrics, 'messagesHandled', { outcome: 'waiting' })) >= 3,
        { timeout: 10_000, description: 'the parked unit looked at three times' },
      );
      const state = await persistedState(ownBus, unitKey(item));
      expect(state).toMatchObject({ value: 'waiting' });
      // Its deadline is kept: each look puts it back, it does not move on.
      expect(state!.context.wakeAt).toBeGreaterThan(Date.now() + 500_000);
    });
  });

  it('acks a waiting item once a later item leaves its unit at rest, not at its deadline', async () => {
    await onOwnStage('released', { servedWaiting: waitsOnNothing }, async (ownBus, metrics) => {
      // Parked for 10 minutes: left to its deadline, its item would stay unacknowledged that long.
      const parked = workItem('vol-released', { cause: 'park' });
      await sendWork(ownBus, parked);
      await waitFor(
        async () => (await persistedState(ownBus, unitKey(parked)))?.value === 'waiting',
      );
      // Still waiting after another look: the parked item stays the unit's reminder.
      await sendWork(ownBus, workItem('vol-released', { cause: 'wait' }));
      await waitFor(
        async () => (await metricValue(metrics, 'messagesHandled', { outcome: 'waiting' })) === 2,
      );
      await ownBus.nc.flush();
      expect(await backlog(ownBus)).toBe(2);

      await sendWork(ownBus, workItem('vol-released', { cause: 'proceed' }));
      await waitFor(async () => (await backlog(ownBus)) === 0, {
        description: 'every item acknowledged, the parked ones too',
      });
      expect(await persistedState(ownBus, unitKey(parked))).toMatchObject({ value: 'applied' });
      // Each item handled once: the parked ones did not come back for another look.
      expect(await metricValue(metrics, 'messagesHandled', {})).toBe(3);
    });
  });

  it('by default leaves a waiting item to its deadline, whatever later items do to the unit', async () => {
    // The domain-updater's case: its machine decides by the item in hand, so only the waiting
    // item itself may end its wait.
    await onOwnStage('kept', {}, async (ownBus, metrics) => {
      const parked = workItem('vol-kept', { cause: 'park' });
      await sendWork(ownBus, parked);
      await waitFor(
        async () => (await persistedState(ownBus, unitKey(parked)))?.value === 'waiting',
      );
      await sendWork(ownBus, workItem('vol-kept', { cause: 'proceed' }));
      await waitFor(async () => (await metricValue(metrics, 'messagesHandled', {})) === 2);
      // The stage's acks went out on this connection: a round trip has the server take them.
      await ownBus.nc.flush();
      expect(await persistedState(ownBus, unitKey(parked))).toMatchObject({ value: 'applied' });
      expect(await backlog(ownBus)).toBe(1);
    });
  });

  it('keeps delivering when more than a thousand units wait for their deadlines at once', async () => {
    // A fresh server and the default consumer settings: the helpers' consumer sets its own bound.
    await onOwnStage('parked', { concurrency: 32 }, async (ownBus, metrics) => {
      const parked = 1_050;
      for (let i = 0; i < parked; i++) {
        // Parked for 10 minutes: each keeps its work item unacknowledged for the whole test.
        await sendWork(ownBus, workItem(`parked-${i}`, { cause: 'park' }));
      }
      await waitFor(
        async () =>
          (await metricValue(metrics, 'messagesHandled', { outcome: 'waiting' })) >= parked,
        { timeout: 60_000, description: `${parked} units waiting` },
      );
      const info = await ownBus.jsm.consumers.info('PLUGLINE_WORK', 'spec-watcher');
      expect(info.num_ack_pending).toBeGreaterThanOrEqual(parked);
      const woken = workItem('woken-now');
      await sendWork(ownBus, woken);
      await waitFor(
        async () => (await persistedState(ownBus, unitKey(woken)))?.value === 'applied',
        { timeout: 10_000, description: 'the unit behind the waiting ones to run' },
      );
    });
  }, 120_000);

  it('retries a transient failure with backoff and gives up a terminal one with a failed event', async () => {
    let calls = 0;
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(({ input }: { input: { item: WorkItem } }) => {
          if (input.item.volume === 'vol-terminal')
            return Promise.reject(new TerminalError('BadVolume', 'cannot ever work'));
          calls++;
          if (calls < 3) return Promise.reject(new Error('flaky'));
          return Promise.resolve('ok');
        }),
      },
    });
    let logged = '';
    const logger = createLogger({ level: 'info' }, { write: (line: string) => (logged += line) });
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      logger,
    });
    const flaky = workItem('vol-flaky');
    const doomed = workItem('vol-terminal');
    await sendWork(bus, flaky);
    await sendWork(bus, doomed);
    await waitFor(async () => (await persistedState(bus, unitKey(flaky)))?.value === 'applied', {
      timeout: 10_000,
    });
    expect(calls).toBe(3);
    // Each retry says why at info, for an operator looking at a volume that does not move.
    const retries = logged
      .split('\n')
      .filter((line) => line.includes('retrying the work item after its effect failed'))
      .map((line) => JSON.parse(line) as { level: number; reason: string; failure: string });
    expect(retries).toHaveLength(2);
    expect(retries.every((r) => r.level === PINO_INFO && r.failure === 'flaky')).toBe(true);
    await waitFor(async () => (await persistedState(bus, unitKey(doomed)))?.value === 'failed');
    const failed = await waitFor(async () =>
      (await readEvents(bus)).find(
        (e) => e.subject.endsWith('/vol-terminal') && eventType(e) === 'failed',
      ),
    );
    expect(failed.data).toMatchObject({
      reason: 'BadVolume',
      message: 'cannot ever work',
      stage: 'spec-watcher',
    });
    await waitFor(async () => (await backlog(bus)) === 0);
  });

  it('lets a failing item wait out its delay past the stuck-work watch: redelivered, not requeued', async () => {
    let calls = 0;
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(() =>
          ++calls === 1 ? Promise.reject(new Error('flaky')) : Promise.resolve('ok'),
        ),
      },
    });
    const metrics = newMetrics();
    // The consumer's ack wait is 1.5 s, so its floor counts as stuck after 6 s: a retry 9 s
    // later keeps it put longer, with pulls waiting.
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      metrics,
      disposition: (snapshot, now) =>
        snapshot.hasTag('retry')
          ? { kind: 'retry', delayMs: 9000 }
          : defaultDisposition(snapshot, now),
    });
    const item = workItem('vol-slow-retry');
    await sendWork(bus, item);
    await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'applied', {
      timeout: 20_000,
    });
    expect(calls).toBe(2);
    // The second handling was the server's redelivery of the item (its second attempt), not a
    // requeued copy starting its attempts again.
    expect(await metricValue(metrics, 'redeliveries', { stage: 'spec-watcher' })).toBe(1);
    expect(await metricValue(metrics, 'workRequeued', { stage: 'spec-watcher' })).toBe(0);
  }, 30_000);

  it('handles an item published while a crash left the stream behind its consumer, which the server never delivers', async () => {
    const own = await startNats();
    try {
      await streamBehindItsConsumer(own);
      const ownBus = await connectBus({ servers: own.url, name: 'behind' });
      try {
        // Published before the stage is back, it takes a sequence its consumer is past.
        const item = workItem('published-into-the-gap');
        await sendWork(ownBus, item);
        expect((await ownBus.jsm.consumers.info(StreamName.Work, 'spec-watcher')).num_pending).toBe(
          0,
        );
        const metrics = newMetrics();
        await using _stage = await runStage({
          bus: ownBus,
          stage: 'spec-watcher',
          machine: unitMachine,
          keyOf: unitKey,
          metrics,
        });
        await waitFor(
          async () => (await persistedState(ownBus, unitKey(item)))?.value === 'applied',
          { timeout: 20_000, description: 'the item published into the gap to be handled' },
        );
        // It and `kept` (acknowledged before the crash, its removal lost) were requeued. The
        // counter moves once the repair's check returns, which can be after the requeued item
        // was handled (one CI run read 0 here).
        await waitFor(
          async () => (await metricValue(metrics, 'workRequeued', { stage: 'spec-watcher' })) === 2,
          { timeout: 20_000, description: 'the two requeued items to be counted' },
        );
        // One published now is delivered at once: the stream's sequence is past the consumer.
        const later = workItem('published-after');
        await sendWork(ownBus, later);
        await waitFor(
          async () => (await persistedState(ownBus, unitKey(later)))?.value === 'applied',
          { timeout: 20_000, description: 'a later item to be handled' },
        );
        expect(await metricValue(metrics, 'workRequeued', { stage: 'spec-watcher' })).toBe(2);
      } finally {
        await ownBus.close();
      }
    } finally {
      await own.stop();
    }
  }, 60_000);

  it('keeps a long effect alive with working() past the ack wait, without redelivery', async () => {
    let calls = 0;
    // twice the consumer's 1.5 s ack wait: only working() keeps the message ours
    const machine = applyTaking(3200, () => calls++);
    const metrics = newMetrics();
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      metrics,
      leaseTtlMs: 1500,
    });
    const item = workItem('vol-long-effect');
    await sendWork(bus, item);
    await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'applied', {
      timeout: 10_000,
    });
    expect(calls).toBe(1);
    expect((await metrics.redeliveries.get()).values.reduce((n, v) => n + v.value, 0)).toBe(0);
    const durations = await metrics.effectDuration.get();
    const count = durations.values.find(
      (v) =>
        v.metricName === 'plugline_effect_duration_seconds_count' && v.labels.effect === 'apply',
    );
    expect(count?.value).toBe(1);
  }, 15_000);

  it('abandons a unit still running shutdownTimeoutMs into stop(), and its item comes back', async () => {
    let started = 0;
    let finishEffect!: () => void;
    const effectHeld = new Promise<void>((resolve) => (finishEffect = resolve));
    const stuck = unitMachine.provide({
      actors: {
        apply: fromPromise(async () => {
          started++;
          await effectHeld;
          return 'ok';
        }),
      },
    });
    const stopping = await runStage({
      bus,
      stage: 'spec-watcher',
      machine: stuck,
      keyOf: unitKey,
      metrics: newMetrics(),
      shutdownTimeoutMs: 200,
      retryBackoff: { initialMs: 100 },
    });
    const item = workItem('vol-stuck-at-stop');
    try {
      await sendWork(bus, item);
      await waitFor(() => started === 1, { timeout: 5000 });
      // Resolves only once the running unit was aborted: its effect never ends by itself.
      await stopping.stop();
      expect(await persistedState(bus, unitKey(item))).toBeUndefined();
      await using _next = await runStage({
        bus,
        stage: 'spec-watcher',
        machine: unitMachine,
        keyOf: unitKey,
        metrics: newMetrics(),
      });
      await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'applied', {
        timeout: 10_000,
      });
      expect(started).toBe(1);
    } finally {
      finishEffect();
      await stopping.stop();
    }
  }, 20_000);
  it('times each step of a handling: the effect in run, a busy unit only to its lease', async () => {
    const machine = applyTaking(300);
    const metrics = newMetrics();
    const steps = async (): Promise<Record<string, { count: number; sum: number }>> => {
      const out: Record<string, { count: number; sum: number }> = {};
      for (const v of (await metrics.workStep.get()).values) {
        const step = String(v.labels.step);
        const row = (out[step] ??= { count: 0, sum: 0 });
        if (v.metricName === 'plugline_work_step_seconds_count') row.count = v.value;
        if (v.metricName === 'plugline_work_step_seconds_sum') row.sum = v.value;
      }
      return out;
    };
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      metrics,
      busyDelayMs: 50,
    });
    const item = workItem('vol-steps');
    await sendWork(bus, item);
    await waitFor(async () => (await steps()).release?.count === 1);
    const done = await steps();
    for (const step of ['queued', 'lease', 'read', 'run', 'persist', 'release']) {
      expect(done[step]?.count, step).toBe(1);
    }
    expect(done.run!.sum).toBeGreaterThanOrEqual(0.3);
    const others = ['queued', 'lease', 'read', 'persist', 'release'];
    expect(others.reduce((n, step) => n + done[step]!.sum, 0)).toBeLessThan(done.run!.sum);

    // Another worker holds the next unit: its item ends at the lease, its run never starts.
    const { leases } = await ensureStageBuckets(bus, 'spec-watcher');
    const busy = workItem('vol-steps-busy');
    const holder = await new LeaseManager(leases, 'worker-elsewhere', 30_000).acquire(
      unitKey(busy),
    );
    if (!holder.ok) throw new Error('the other worker could not take the unit');
    await sendWork(bus, busy);
    await waitFor(
      async () => (await metricValue(metrics, 'messagesHandled', { outcome: 'busy' })) >= 1,
    );
    const after = await steps();
    expect(after.lease!.count).toBeGreaterThanOrEqual(2);
    expect(after.queued!.count).toBe(after.lease!.count);
    expect(after.read!.count).toBe(1);
    await holder.lease.release();
    await waitFor(async () => (await steps()).release?.count === 2);
  });

  it('reads the truth beside the lease, and again after it when another worker held the unit since', async () => {
    const loads: AbortSignal[] = [];
    const observed: unknown[] = [];
    const metrics = newMetrics();
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine: unitMachine,
      keyOf: unitKey,
      metrics,
      load: (_item, delivery) => {
        loads.push(delivery.signal);
        return Promise.resolve(loads.length);
      },
      toEvent: (item, delivery) => {
        observed.push(delivery.observed);
        const { attempt, receivedAt } = delivery;
        return { type: 'work' as const, item, attempt, receivedAt, observed: delivery.observed };
      },
    });
    const item = workItem('vol-read-beside-lease');
    // At least n, not exactly: an extra handling (a redelivery under load) shows in the
    // assertions below, with what each handling observed, instead of as a timeout.
    const handled = (n: number) =>
      waitFor(
        async () => (await metricValue(metrics, 'messagesHandled', { outcome: 'done' })) >= n,
        { timeout: 10_000, description: `${n} handlings done` },
      );
    await sendWork(bus, item);
    await handled(1);
    // Another worker takes the unit and lets it go: what was read beside this worker's next
    // lease may predate that worker's writes, and is read again once the lease is held.
    const { leases } = await ensureStageBuckets(bus, 'spec-watcher');
    const elsewhere = await new LeaseManager(leases, 'worker-elsewhere', 30_000).acquire(
      unitKey(item),
    );
    if (!elsewhere.ok) throw new Error('the other worker could not take the unit');
    await elsewhere.lease.release();
    await sendWork(bus, { ...item, cause: 'resync' });
    await handled(2);
    await sendWork(bus, { ...item, cause: 'informer' });
    await handled(3);

    // First handling: a new unit, one read. Second: the read beside the lease abandoned, and the
    // run given the one made after it. Third: no one else held it, one read.
    expect(observed).toEqual([1, 3, 4]);
    expect(loads.map((signal) => signal.aborted)).toEqual([false, true, false, false]);
  }, 30_000);

  it('says at warn that its work-queue checks fail, once while the reason stays the same', async () => {
    const own = await startNats();
    const ownBus = await connectBus({ servers: own.url, name: 'repair-checks-failing' });
    let logged = '';
    const logger = createLogger({ level: 'debug' }, { write: (line: string) => (logged += line) });
    const failures = (): number[] =>
      logged
        .split('\n')
        .filter((line) => line.includes('could not check the work queue'))
        .map((line) => (JSON.parse(line) as { level: number }).level);
    try {
      await provision(ownBus, { consumers: [{ stage: 'spec-watcher', ackWaitMs: 1000 }] });
      await using stage = await runStage({
        bus: ownBus,
        stage: 'spec-watcher',
        machine: unitMachine,
        keyOf: unitKey,
        metrics: newMetrics(),
        logger,
      });
      expect(failures()).toEqual([]);
      // Without its consumer every check fails the same way.
      await ownBus.jsm.consumers.delete(StreamName.Work, stage.consumer);
      await waitFor(() => failures().length >= 3, { timeout: 10_000 });
      const [first, ...repeats] = failures();
      expect(first).toBe(PINO_WARN);
      expect(repeats.every((level) => level === PINO_DEBUG)).toBe(true);
    } finally {
      await ownBus.close();
      await own.stop();
    }
  }, 20_000);

  it('acknowledges a nudge unrun when a handling of its unit (same VMI) is queued, and runs it otherwise', async () => {
    const metrics = newMetrics();
    const looked: string[] = [];
    let releaseFirst!: () => void;
    const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine: unitMachine,
      keyOf: unitKey,
      concurrency: 4,
      metrics,
      coalesce: (item) => item.cause === 'nudge',
      // `load` runs once per handling: it records which items of this test were looked at (an
      // earlier test's item the shared consumer still redelivers is not one of them).
      load: async (item) => {
        if (item.volume === 'vol-coalesce') looked.push(item.operationId);
        if (item.operationId === 'coalesce-first') await firstHeld;
        return undefined;
      },
    });
    const volume = 'vol-coalesce';
    const send = (operationId: string, overrides: Partial<WorkItem> = {}) =>
      sendWork(bus, workItem(volume, { operationId, ...overrides }), operationId);
    await send('coalesce-first');
    await waitFor(() => looked.includes('coalesce-first'), { timeout: 10_000 });
    await send('coalesce-queued');
    await send('coalesce-nudge', { cause: 'nudge' });
    await send('coalesce-other-vmi', { cause: 'nudge', vmiUID: 'uid-new-incarnation' });
    await waitFor(
      async () => (await metricValue(metrics, 'messagesHandled', { outcome: 'coalesced' })) === 1,
      { timeout: 10_000 },
    );
    releaseFirst();
    await waitFor(async () => (await backlog(bus)) === 0, { timeout: 10_000 });
    expect(looked).toEqual(['coalesce-first', 'coalesce-queued', 'coalesce-other-vmi']);
    // Nothing queued for the unit: the nudge runs.
    await send('coalesce-alone', { cause: 'nudge' });
    await waitFor(() => looked.includes('coalesce-alone'), { timeout: 10_000 });
    await waitFor(async () => (await backlog(bus)) === 0, { timeout: 10_000 });
    expect(await metricValue(metrics, 'messagesHandled', { outcome: 'coalesced' })).toBe(1);
  });

  it('handles a nudge made here without the stream; one that must wait goes to the stream after its delay', async () => {
    const metrics = newMetrics();
    await using stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine: unitMachine,
      keyOf: unitKey,
      metrics,
    });
    const item = workItem('vol-here');
    await stage.handleHere(item);
    // Handled by the time the call resolves, and nothing went through the work stream.
    expect(await persistedState(bus, unitKey(item))).toMatchObject({ value: 'applied' });
    expect(await metricValue(metrics, 'messagesHandled', { outcome: 'done' })).toBe(1);
    expect(await metricValue(metrics, 'published', { kind: 'work' })).toBe(0);

    const waits = workItem('vol-here-waits', { cause: 'wait' });
    await stage.handleHere(waits);
    expect(await persistedState(bus, unitKey(waits))).toMatchObject({ value: 'waiting' });
    expect(await metricValue(metrics, 'published', { kind: 'work' })).toBe(0);
    // Its delay over, it is published, delivered and finished like any waiting item.
    await waitFor(async () => (await persistedState(bus, unitKey(waits)))?.value === 'applied', {
      timeout: 10_000,
    });
    expect(await metricValue(metrics, 'published', { kind: 'work' })).toBe(1);
    await waitFor(async () => (await backlog(bus)) === 0, { timeout: 10_000 });
  });

  it("passes a unit's lease and what it stored to the unit's next handling queued here: no lease round trips, the newest snapshot, released after", async () => {
    let applies = 0;
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => (finish = resolve));
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(async () => {
          applies++;
          started();
          await gate;
          return 'ok';
        }),
      },
    });
    await using stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      concurrency: 4,
    });
    const { leases } = await ensureStageBuckets(bus, 'spec-watcher');
    const leaseWrites = async () => (await leases.status()).streamInfo.state.last_seq;
    const before = await leaseWrites();
    const first = workItem('vol-passed');
    const second = { ...first, operationId: `op-second-${first.operationId}` };
    const handlings = [stage.handleHere(first)];
    await running;
    handlings.push(stage.handleHere(second));
    finish();
    await Promise.all(handlings);
    // The second ran on the snapshot the first wrote (applied): a stale one would apply again.
    expect(applies).toBe(1);
    expect(await persistedState(bus, unitKey(first))).toMatchObject({ value: 'applied' });
    // One lease for both handlings: taken once and released once, not twice each.
    expect((await leaseWrites()) - before).toBe(2);
    const other = new LeaseManager(leases, 'another-worker', 30_000);
    expect((await other.acquire(unitKey(first))).ok).toBe(true);
  });

  it('runs units concurrently but never two messages of one unit at once', async () => {
    const active = new Map<string, number>();
    let overlap = 0;
    let maxConcurrent = 0;
    let running = 0;
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(async ({ input }: { input: { item: WorkItem } }) => {
          const key = input.item.volume;
          active.set(key, (active.get(key) ?? 0) + 1);
          running++;
          maxConcurrent = Math.max(maxConcurrent, running);
          if (active.get(key)! > 1) overlap++;
          await effectTakes(20);
          running--;
          active.set(key, active.get(key)! - 1);
          return 'ok';
        }),
      },
    });
    await using _stage = await runStage({
      bus,
      stage: 'spec-watcher',
      machine,
      keyOf: unitKey,
      concurrency: 4,
    });
    const items = Array.from({ length: 12 }, (_, i) => workItem(`vol-conc-${i % 6}`));
    await Promise.all(items.map((it, i) => sendWork(bus, it, `conc-${i}`)));
    await waitFor(async () => (await backlog(bus)) === 0, { timeout: 10_000 });
    expect(overlap).toBe(0);
    expect(maxConcurrent).toBeGreaterThan(1);
    expect(maxConcurrent).toBeLessThanOrEqual(4);
  });
});
