import { startNats, waitFor, type NatsServer } from '@plugline/testkit';
import { fromPromise } from 'xstate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KV } from '@nats-io/kv';
import {
  ensureStageBuckets,
  kvKey,
  leaseBucket,
  LeaseManager,
  runStage,
  snapshotBucket,
  type Bus,
  type StageRunner,
} from '../src/index.js';
import { persistedState, provisionedBus } from './helpers.js';
import { unitKey, unitMachine, workItem } from './support.js';

let nats: NatsServer;
let bus: Bus;
let leases: KV;

beforeAll(async () => {
  nats = await startNats();
  bus = await provisionedBus(nats.url);
  ({ leases } = await ensureStageBuckets(bus, 'spec-watcher'));
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

/**
 * The example stage as one replica of an instance, counting its `apply` effects; `effect`, when
 * given, is what each of them waits for.
 */
async function replica(
  instance: string,
  applied: string[],
  effect?: () => Promise<unknown>,
): Promise<StageRunner> {
  return runStage({
    bus,
    stage: 'spec-watcher',
    machine: unitMachine.provide({
      actors: {
        apply: fromPromise(async () => {
          applied.push(instance);
          await effect?.();
          return 'ok';
        }),
      },
    }),
    keyOf: unitKey,
    instance,
    workerId: `${instance}-worker`,
    replicaCheckMs: 100,
  });
}

/** The lease a unit's key holds now: its owner and the milliseconds until it expires. */
async function leaseOf(unit: string): Promise<{ owner: string; expiresInMs: number }> {
  const entry = await leases.get(kvKey(unit));
  const value = entry?.json<{ owner: string; expiresAt: number }>();
  return { owner: value?.owner ?? '', expiresInMs: (value?.expiresAt ?? 0) - Date.now() };
}

/** Counts the writes of a unit's lease from now on. */
function leaseWrites(unit: string): { count: () => Promise<number>; stop: () => void } {
  let count = 0;
  const sub = bus.nc.subscribe(`$KV.${leaseBucket('spec-watcher')}.${kvKey(unit)}`, {
    callback: () => {
      count++;
    },
  });
  return {
    count: async () => {
      // Every write this process made has reached the server, and its copy has come back.
      await bus.nc.flush();
      return count;
    },
    stop: () => sub.unsubscribe(),
  };
}

/** Counts the reads of the stage's snapshot bucket (direct or stream gets) from now on. */
function snapshotReads(): { count: () => number; stop: () => void } {
  const stream = `KV_${snapshotBucket('spec-watcher')}`;
  let count = 0;
  const subs = [`$JS.API.DIRECT.GET.${stream}.>`, `$JS.API.STREAM.MSG.GET.${stream}`].map(
    (subject) =>
      bus.nc.subscribe(subject, {
        callback: () => {
          count++;
        },
      }),
  );
  return { count: () => count, stop: () => subs.forEach((s) => s.unsubscribe()) };
}

describe('kept leases', () => {
  it("keeps a unit's lease between handlings while alone on the consumer: the next handling reads no snapshot, on the newest one", async () => {
    const applied: string[] = [];
    await using stage = await replica('keeper-1', applied);
    const first = workItem('vol-kept');
    const unit = unitKey(first);
    await stage.handleHere(first);
    // Kept: still ours, expiring within the keeping time (5 s), not released.
    const kept = await leaseOf(unit);
    expect(kept.owner).toBe('keeper-1-worker');
    expect(kept.expiresInMs).toBeGreaterThan(0);
    expect(kept.expiresInMs).toBeLessThanOrEqual(5000);
    const other = new LeaseManager(leases, 'another-worker', 30_000);
    expect((await other.acquire(unit)).ok).toBe(false);

    const reads = snapshotReads();
    await stage.handleHere({ ...first, operationId: `op-next-${first.operationId}` });
    reads.stop();
    expect(reads.count()).toBe(0);
    // It ran on the snapshot the first wrote (applied): a stale one would apply again.
    expect(applied).toHaveLength(1);
    expect(await persistedState(bus, unit)).toMatchObject({ value: 'applied' });

    await stage.stop();
    // Stopping released it: the next process takes it at once.
    expect((await leaseOf(unit)).expiresInMs).toBeLessThanOrEqual(0);
    expect((await other.acquire(unit)).ok).toBe(true);
  });

  it('writes a kept lease once for a short handling on it: its release, with no renewal beside the work', async () => {
    await using stage = await replica('keeper-short', []);
    const first = workItem('vol-short');
    await stage.handleHere(first);
    const writes = leaseWrites(unitKey(first));
    await stage.handleHere({ ...first, operationId: `op-next-${first.operationId}` });
    expect(await writes.count()).toBe(1);
    writes.stop();
    const kept = await leaseOf(unitKey(first));
    expect(kept.owner).toBe('keeper-short-worker');
    expect(kept.expiresInMs).toBeGreaterThan(0);
  });

  it('renews a kept lease before it runs out when the handling on it lasts longer than half of what it had left', async () => {
    const parked = workItem('vol-long', { cause: 'park' });
    const unit = unitKey(parked);
    // The effect ends only once the lease has been renewed (an acquired lease lasts 30 s, a kept
    // one at most 5): until then, it checks the lease never lapsed.
    let shortest = Number.POSITIVE_INFINITY;
    const untilRenewed = () =>
      waitFor(
        async () => {
          const { owner, expiresInMs } = await leaseOf(unit);
          shortest = Math.min(shortest, expiresInMs);
          return owner === 'keeper-long-worker' && expiresInMs > 5000;
        },
        { timeout: 15_000, interval: 50 },
      );
    const applied: string[] = [];
    await using stage = await replica('keeper-long', applied, untilRenewed);
    // Left waiting (parked), the unit's lease kept for its next handling here.
    await stage.handleHere(parked);
    expect((await leaseOf(unit)).expiresInMs).toBeLessThanOrEqual(5000);
    await stage.handleHere({ ...parked, cause: 'proceed' });
    expect(applied).toEqual(['keeper-long']);
    expect(shortest).toBeGreaterThan(0);
    // The handling was not cut short by a lost lease: it settled, its effect applied.
    expect(await persistedState(bus, unit)).toMatchObject({ value: 'applied' });
  }, 30_000);

  it('releases what it kept once another replica shares the consumer, and after each handling from then on', async () => {
    const applied: string[] = [];
    await using first = await replica('keeper-a', applied);
    const item = workItem('vol-shared');
    const unit = unitKey(item);
    await first.handleHere(item);
    expect((await leaseOf(unit)).expiresInMs).toBeGreaterThan(0);

    await using second = await replica('keeper-b', applied);
    // The first learns of the second within its check interval and lets the unit go.
    await waitFor(async () => (await leaseOf(unit)).expiresInMs <= 0);
    const reads = snapshotReads();
    await second.handleHere({ ...item, operationId: `op-b-${item.operationId}` });
    await first.handleHere({ ...item, operationId: `op-a-${item.operationId}` });
    reads.stop();
    // Each read the snapshot the other wrote (beside the lease, and again once it was won from
    // the other), and neither kept the lease after its handling.
    expect(reads.count()).toBe(4);
    expect(await leaseOf(unit)).toMatchObject({ owner: 'keeper-a-worker' });
    expect((await leaseOf(unit)).expiresInMs).toBeLessThanOrEqual(0);
    expect(applied).toHaveLength(1);

    // Alone again once the second stops: the first keeps its leases again.
    await second.stop();
    const another = workItem('vol-alone-again');
    await waitFor(async () => {
      await first.handleHere({ ...another, operationId: `op-${Date.now()}` });
      return (await leaseOf(unitKey(another))).expiresInMs > 0;
    });
  });
});
