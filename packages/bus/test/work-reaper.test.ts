/**
 * WorkLeftovers on a real nats-server 2.9 whose store a crash left inconsistent: the consumer
 * keeps an item pending whose message the stream removed, and the stream still holds an item the
 * consumer acknowledged. The server forgets the pending item only once the stream's first
 * sequence passes it, which the leftover, first in the stream, prevents; and counted together
 * (`held - outstanding`) the two cancel out: both stayed for ever (seen in the chaos tests after
 * NATS restarts). Made here by putting the store's folders back as they were at earlier moments,
 * with the server stopped in between, as a crash would leave them.
 */
import { join } from 'node:path';
import { startNats, streamStoreFolder, waitFor } from '@plugline/testkit';
import { describe, expect, it } from 'vitest';
import {
  connectBus,
  durableName,
  provision,
  StreamName,
  WorkLeftovers,
  type Bus,
} from '../src/index.js';
import { sendWork, STAGE, StoreCopies } from './helpers.js';
import { workItem } from './support.js';

const CONSUMER = durableName(STAGE);

describe('WorkLeftovers', () => {
  it('removes a leftover that an item pending without its message hides; the server then forgets that item', async () => {
    await using nats = await startNats();
    const connect = (): Promise<Bus> =>
      connectBus({ servers: nats.url, name: 'reaper-test', maxReconnectAttempts: 0 });
    const copies = new StoreCopies();
    /** Runs `step` on a connection, then stops the server (its state saved) for the files. */
    const thenHalt = async (step: (bus: Bus) => Promise<void>): Promise<void> => {
      const bus = await connect();
      try {
        await step(bus);
      } finally {
        await bus.close();
      }
      await nats.halt('SIGTERM');
    };

    // Two items, `left-over` (sequence 1) and `vanishing` (2), nothing delivered yet.
    await thenHalt(async (bus) => {
      await provision(bus, { consumers: [{ stage: STAGE, ackWaitMs: 500 }] });
      await sendWork(bus, workItem('left-over'));
      await sendWork(bus, workItem('vanishing'));
    });
    const messages = await streamStoreFolder(nats, StreamName.Work, 'msgs');
    const consumerState = await streamStoreFolder(nats, StreamName.Work, join('obs', CONSUMER));
    await copies.take(messages, 'both-held');
    await copies.take(consumerState, 'none-delivered');

    // The consumer acknowledges `left-over` and holds `vanishing` unacknowledged.
    await nats.start();
    await thenHalt(async (bus) => {
      const consumer = await bus.js.consumers.get(StreamName.Work, CONSUMER);
      await (await consumer.next({ expires: 5000 }))!.ackAck();
      expect((await consumer.next({ expires: 5000 }))?.seq).toBe(2);
    });
    await copies.take(consumerState, 'one-pending');

    // The stream as before the acknowledgement (its removal of `left-over` lost), and
    // `vanishing` gone from it while no consumer held it (so nothing acknowledged it)...
    await copies.putBack(messages, 'both-held');
    await copies.putBack(consumerState, 'none-delivered');
    await nats.start();
    await thenHalt(async (bus) => {
      expect(await bus.jsm.streams.deleteMessage(StreamName.Work, 2, false)).toBe(true);
    });
    // ...and the consumer as it was, `vanishing` pending.
    await copies.putBack(consumerState, 'one-pending');
    await nats.start();

    const bus = await connect();
    try {
      const info = await bus.jsm.consumers.info(StreamName.Work, CONSUMER);
      expect(info.ack_floor.stream_seq).toBe(1);
      expect(info.num_ack_pending).toBe(1);
      const before = (await bus.jsm.streams.info(StreamName.Work)).state;
      expect([before.messages, before.first_seq, before.last_seq]).toEqual([1, 1, 2]);

      // The first check notes it; the second, which still sees it first, removes it.
      const reaper = new WorkLeftovers(bus);
      expect(await reaper.reap(CONSUMER)).toEqual({ requeued: [], removed: 0 });
      expect(await reaper.reap(CONSUMER)).toEqual({ requeued: [], removed: 1 });
      expect((await bus.jsm.streams.info(StreamName.Work)).state.messages).toBe(0);
      // With the stream's first sequence past it, the server forgets the pending item (it
      // looks every ack wait): the consumer holds nothing.
      await waitFor(
        async () => (await bus.jsm.consumers.info(StreamName.Work, CONSUMER)).num_ack_pending === 0,
        { timeout: 10_000, interval: 100, description: 'the consumer to forget the vanished item' },
      );
      expect(await reaper.reap(CONSUMER)).toEqual({ requeued: [], removed: 0 });
    } finally {
      await bus.close();
    }
  }, 60_000);
});
