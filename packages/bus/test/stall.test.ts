/**
 * StallWatch on real servers: a consumer holding items while its stage is idle (here: nobody
 * pulls, the state a 2.9 cluster can leave a consumer in after a leader change) gets a new leader
 * on a cluster, or a fresh consumption on a single server; items delivered in between, or
 * a busy stage, never count as a stall.
 */
import { silentLogger } from '@plugline/telemetry';
import { startNats, startNatsCluster, waitFor } from '@plugline/testkit';
import { describe, expect, it } from 'vitest';
import {
  connectBus,
  durableName,
  provision,
  StallAction,
  StallWatch,
  StreamName,
  type Bus,
} from '../src/index.js';
import { sendWork, STAGE } from './helpers.js';
import { workItem } from './support.js';

const CONSUMER = durableName(STAGE);

/** A watch on the stage's consumer of a single server, counting the consumptions it reopens. */
function singleServerWatch(bus: Bus): { watch: StallWatch; reopened: () => number } {
  let reopened = 0;
  const watch = new StallWatch({
    bus,
    stream: StreamName.Work,
    consumer: CONSUMER,
    log: silentLogger(),
    confirmMs: 300,
    reopen: () => {
      reopened += 1;
      return Promise.resolve();
    },
  });
  return { watch, reopened: () => reopened };
}

describe('StallWatch', () => {
  it('on one server: no stall while the stage is busy or items arrive; then opens a consumption again', async () => {
    await using nats = await startNats();
    const bus = await connectBus({ servers: nats.url, name: 'stall-single' });
    try {
      await provision(bus, { consumers: [{ stage: STAGE, ackWaitMs: 1500, maxAckPending: 100 }] });
      await sendWork(bus, workItem('held'));
      const { watch, reopened } = singleServerWatch(bus);
      const idle = () => true;
      // Busy: pending items are the stage's own backlog, not a stall.
      expect(await watch.check(() => false)).toBe(StallAction.None);
      // An item delivered while the check waits: the consumer is delivering.
      setTimeout(() => watch.delivered(), 100);
      expect(await watch.check(idle)).toBe(StallAction.None);
      expect(reopened()).toBe(0);
      // Nothing delivered to an idle stage while items wait: no cluster, so a new consumption.
      expect(await watch.check(idle)).toBe(StallAction.Reopened);
      expect(reopened()).toBe(1);
    } finally {
      await bus.close();
    }
  });

  it('on one server: an unacknowledged item and no pull open is a stall; an open pull is not', async () => {
    await using nats = await startNats();
    const bus = await connectBus({ servers: nats.url, name: 'stall-lost-pull' });
    try {
      // A long ack wait: the item is not redelivered while the test runs.
      await provision(bus, {
        consumers: [{ stage: STAGE, ackWaitMs: 60_000, maxAckPending: 100 }],
      });
      await sendWork(bus, workItem('taken'));
      const consumer = await bus.js.consumers.get(StreamName.Work, CONSUMER);
      // Delivered and left unacknowledged (a waiting unit's item, or one a crash left).
      expect(await consumer.next({ expires: 5000 })).not.toBeNull();
      const info = () => bus.jsm.consumers.info(StreamName.Work, CONSUMER);
      const { watch, reopened } = singleServerWatch(bus);
      const idle = () => true;

      // The stage's pull is open: the item comes back to it after its ack wait.
      const pulling = await consumer.consume({ max_messages: 10, expires: 2000 });
      const drained = (async () => {
        for await (const _ of pulling) throw new Error('nothing is due for redelivery');
      })();
      await waitFor(async () => (await info()).num_waiting > 0, { description: 'an open pull' });
      expect(await watch.check(idle)).toBe(StallAction.None);

      // The pull is gone (a server restart the client missed): nothing would ever come back.
      await pulling.close();
      await drained;
      await waitFor(async () => (await info()).num_waiting === 0, {
        timeout: 10_000,
        description: 'no pull open',
      });
      expect((await info()).num_ack_pending).toBe(1);
      expect(await watch.check(idle)).toBe(StallAction.Reopened);
      expect(reopened()).toBe(1);
    } finally {
      await bus.close();
    }
  }, 30_000);

  it('on a cluster: asks for a new leader once the same one kept an item from a waiting pull, and lets the new one be', async () => {
    await using cluster = await startNatsCluster(3);
    const bus = await connectBus({ servers: cluster.urls, name: 'stall-cluster' });
    try {
      // At most one item unacknowledged: with one taken, the next stays pending while a pull
      // waits, as the server's failure looks from outside.
      await provision(bus, {
        replicas: 3,
        consumers: [{ stage: STAGE, ackWaitMs: 60_000, maxAckPending: 1 }],
      });
      await sendWork(bus, workItem('taken'));
      await sendWork(bus, workItem('held'));
      const consumer = await bus.js.consumers.get(StreamName.Work, CONSUMER);
      expect(await consumer.next({ expires: 5000 })).not.toBeNull();
      const info = () => bus.jsm.consumers.info(StreamName.Work, CONSUMER);
      const before = await waitFor(async () => (await info()).cluster?.leader, {
        timeout: 30_000,
        description: 'a consumer leader',
      });
      const waiting = consumer.next({ expires: 60_000 }).catch(() => null);
      await waitFor(async () => (await info()).num_waiting > 0, { description: 'a waiting pull' });
      let reopened = 0;
      const watch = new StallWatch({
        bus,
        stream: StreamName.Work,
        consumer: CONSUMER,
        log: silentLogger(),
        confirmMs: 200,
        reopen: () => {
          reopened += 1;
          return Promise.resolve();
        },
      });
      const idle = () => true;
      // The first look at a leader judges nothing.
      expect(await watch.check(idle)).toBe(StallAction.None);
      expect(await watch.check(idle)).toBe(StallAction.SteppedDown);
      const after = await waitFor(
        async () => {
          const now = (await info()).cluster?.leader;
          return now !== undefined && now !== before ? now : undefined;
        },
        { timeout: 30_000, description: 'another consumer leader' },
      );
      expect(after).not.toBe(before);
      // The new leader has not had the stage's pull: it is not judged at once, and then the
      // remedy is a pull, not another leader.
      expect(await watch.check(idle)).toBe(StallAction.None);
      await waitFor(async () => (await info()).num_waiting === 0, {
        timeout: 10_000,
        description: 'no pull at the new leader',
      });
      expect(await watch.check(idle)).toBe(StallAction.Reopened);
      expect(reopened).toBe(1);
      expect((await info()).cluster?.leader).toBe(after);
      await waiting;
    } finally {
      await bus.close();
    }
  }, 90_000);
});
