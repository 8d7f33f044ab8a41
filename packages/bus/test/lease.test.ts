import { Stage } from '@plugline/contracts';
import { startNats, waitFor, type NatsServer } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectBus,
  ensureStageBuckets,
  kvKey,
  LeaseManager,
  type Bus,
  type Lease,
} from '../src/index.js';
import type { KV } from '@nats-io/kv';

let nats: NatsServer;
let bus: Bus;
let leases: KV;

beforeAll(async () => {
  nats = await startNats();
  bus = await connectBus({ servers: nats.url });
  ({ leases } = await ensureStageBuckets(bus, Stage.SpecWatcher, { replicas: 1 }));
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

async function holder(manager: LeaseManager, unit: string): Promise<Lease> {
  const acquired = await manager.acquire(unit);
  if (!acquired.ok) throw new Error(`${manager.owner} did not get ${unit}`);
  return acquired.lease;
}

/** The lease, once `manager` gets it (after an expiry). */
function eventually(manager: LeaseManager, unit: string): Promise<Lease> {
  return waitFor(async () => {
    const acquired = await manager.acquire(unit);
    return acquired.ok ? acquired.lease : undefined;
  });
}

describe('LeaseManager', () => {
  it('gives a unit to one worker at a time, and a released one at once to the next', async () => {
    const a = new LeaseManager(leases, 'worker-a', 30_000);
    const b = new LeaseManager(leases, 'worker-b', 30_000);
    const first = await holder(a, 'ns/vm/vol-1');
    expect(first.handover).toBeUndefined();
    const refused = await b.acquire('ns/vm/vol-1');
    expect(refused).toMatchObject({ ok: false });
    expect(refused.ok ? 0 : refused.retryInMs).toBeGreaterThan(20_000);

    await first.release(41);
    const second = await holder(b, 'ns/vm/vol-1');
    expect(second.handover).toBe(41);
    expect(await a.acquire('ns/vm/vol-1')).toMatchObject({ ok: false });

    // released again and taken back by the first worker, which last saw its own release
    await second.release(42);
    const third = await holder(a, 'ns/vm/vol-1');
    expect(third.handover).toBe(42);
    await third.release(); // with nothing new: what it got is handed on
    expect((await holder(b, 'ns/vm/vol-1')).handover).toBe(42);
  });

  it('says a lease is uncontested only when no one else held the unit since this worker released it', async () => {
    const a = new LeaseManager(leases, 'worker-a', 30_000);
    const b = new LeaseManager(leases, 'worker-b', 30_000);
    const fresh = await holder(a, 'ns/vm/vol-5');
    expect(fresh.uncontested).toBe(true); // a key no one has written
    await fresh.release(1);
    const again = await holder(a, 'ns/vm/vol-5');
    expect(again.uncontested).toBe(true); // its own release is the key's last write
    await again.release(2);

    const other = await holder(b, 'ns/vm/vol-5');
    expect(other.uncontested).toBe(false); // b never released it: a's release stands between
    await other.release(3);
    const back = await holder(a, 'ns/vm/vol-5');
    expect(back.uncontested).toBe(false); // b held it since a's release
    expect(back.handover).toBe(3);
    await back.release();
    expect((await holder(a, 'ns/vm/vol-5')).uncontested).toBe(true);
  });

  it('hands over past a holder that crashed, once its lease expired', async () => {
    const first = new LeaseManager(leases, 'worker-first', 30_000);
    const crashed = new LeaseManager(leases, 'worker-crashed', 100);
    const next = new LeaseManager(leases, 'worker-next', 30_000);
    await (await holder(first, 'ns/vm/vol-2')).release(5);
    expect((await holder(crashed, 'ns/vm/vol-2')).handover).toBe(5); // and never releases
    expect((await next.acquire('ns/vm/vol-2')).ok).toBe(false);
    const taken = await eventually(next, 'ns/vm/vol-2');
    expect(taken.handover).toBe(5);
  });

  it("lets a restarted process of the same instance take over its crashed predecessor's lease at once; no one else", async () => {
    const crashed = new LeaseManager(leases, 'node-mounter-run-1', 30_000, 'node-mounter.node-1');
    await (await holder(crashed, 'ns/vm/vol-restart')).release(7);
    const dying = await holder(crashed, 'ns/vm/vol-restart'); // and dies holding it, 30 s to go
    const otherNode = new LeaseManager(leases, 'node-mounter-run-9', 30_000, 'node-mounter.node-2');
    const noInstance = new LeaseManager(leases, 'worker-plain', 30_000);
    for (const other of [otherNode, noInstance]) {
      const refused = await other.acquire('ns/vm/vol-restart');
      expect(refused.ok).toBe(false);
      expect(refused.ok ? 0 : refused.retryInMs).toBeGreaterThan(20_000);
    }
    const restarted = new LeaseManager(leases, 'node-mounter-run-2', 30_000, 'node-mounter.node-1');
    const taken = await holder(restarted, 'ns/vm/vol-restart');
    expect(taken.handover).toBe(7);
    expect(taken.uncontested).toBe(false);
    // The predecessor, were it alive after all, could no longer renew it.
    expect(await dying.renew()).toBe(false);
    await taken.release(8);
    expect((await holder(noInstance, 'ns/vm/vol-restart')).handover).toBe(8);
  });

  it('takes a unit whose lease an older version released by deleting it', async () => {
    const older = new LeaseManager(leases, 'worker-older', 30_000);
    await holder(older, 'ns/vm/vol-4');
    await leases.delete(kvKey('ns/vm/vol-4'));
    const next = new LeaseManager(leases, 'worker-next', 30_000);
    expect((await holder(next, 'ns/vm/vol-4')).handover).toBeUndefined();
    expect(await older.acquire('ns/vm/vol-4')).toMatchObject({ ok: false });
  });

  it('does not let a holder whose lease was taken over release or hand over', async () => {
    const slow = new LeaseManager(leases, 'worker-slow', 100);
    const other = new LeaseManager(leases, 'worker-other', 30_000);
    const stale = await holder(slow, 'ns/vm/vol-3');
    const taken = await eventually(other, 'ns/vm/vol-3');
    expect(await stale.renew()).toBe(false);
    await stale.release(7);
    expect(await slow.acquire('ns/vm/vol-3')).toMatchObject({ ok: false });
    await taken.release(8);
    expect((await holder(slow, 'ns/vm/vol-3')).handover).toBe(8);
  });

  it('keeps a released lease for its holder while keeping: taken back without a write, waited for by others, freed on demand', async () => {
    const keeper = new LeaseManager(leases, 'worker-keeper', 30_000, 'stage-a');
    const other = new LeaseManager(leases, 'worker-other', 30_000, 'stage-b');
    keeper.keeping = true;
    const unit = 'ns/vm/vol-kept';
    await (await holder(keeper, unit)).release(21);
    const refused = await other.acquire(unit);
    expect(refused.ok).toBe(false);
    // Waited out within the keeping time (5 s), not the TTL.
    expect(refused.ok ? 0 : refused.retryInMs).toBeLessThanOrEqual(keeper.keptMs);

    const revision = (await leases.get(kvKey(unit)))?.revision;
    const back = keeper.takeKept(unit);
    expect(back).toMatchObject({ reused: true, uncontested: true, handover: 21 });
    expect((await leases.get(kvKey(unit)))?.revision).toBe(revision); // no write to take it
    expect(keeper.takeKept(unit)).toBeUndefined(); // one holder at a time
    expect(await back!.renew()).toBe(true);
    await back!.release(22);

    keeper.keeping = false;
    expect(keeper.takeKept(unit)).toBeUndefined(); // not while not keeping
    await keeper.releaseKept();
    expect((await holder(other, unit)).handover).toBe(22);
  });

  it("lets a kept lease's crashed holder be replaced at once by its instance's next process", async () => {
    const crashed = new LeaseManager(leases, 'worker-run-1', 30_000, 'stage-c');
    crashed.keeping = true;
    await (await holder(crashed, 'ns/vm/vol-kept-2')).release(31); // then it dies
    const restarted = new LeaseManager(leases, 'worker-run-2', 30_000, 'stage-c');
    expect((await holder(restarted, 'ns/vm/vol-kept-2')).handover).toBe(31);
  });
});
