/**
 * StuckWork on a 3-node nats-server 2.9 cluster, for the report the chaos run's leader change
 * left: an item on a consumer's subjects above what it delivered, the consumer counting nothing
 * outstanding, pulls waiting. Copies did not help there (each one made the item before it
 * visible and stayed unseen itself), so the consumer's leader is asked to step down first, and
 * the items are requeued only if they are still held a watch later. A cluster cannot be made to
 * report that on purpose, so the report is built from the real one; the item, the consumer, its
 * leaders and the copy are real.
 */
import { startNatsCluster, waitFor } from '@plugline/testkit';
import { describe, expect, it } from 'vitest';
import { durableName, StreamName, StuckWork } from '../src/index.js';
import { provisionedBus, sendWork, STAGE } from './helpers.js';
import { workItem } from './support.js';

const CONSUMER = durableName(STAGE);

describe('StuckWork on a cluster', () => {
  it('asks for a new consumer leader before it requeues items above what the consumer delivered', async () => {
    await using cluster = await startNatsCluster(3);
    const bus = await provisionedBus(cluster.urls, {
      replicas: 3,
      consumers: [{ stage: STAGE, ackWaitMs: 600_000, maxAckPending: 1000 }],
    });
    try {
      await sendWork(bus, workItem('unseen'));
      const real = await bus.jsm.consumers.info(StreamName.Work, CONSUMER);
      expect(real.cluster?.replicas).toHaveLength(2);
      const { state } = await bus.jsm.streams.info(StreamName.Work);
      const unseen = state.last_seq;
      const reported = {
        ...real,
        num_pending: 0,
        num_ack_pending: 0,
        num_waiting: 1,
        delivered: { ...real.delivered, stream_seq: unseen - 1 },
        ack_floor: { ...real.ack_floor, stream_seq: unseen - 1 },
      };
      const stuck = new StuckWork(bus, { stuckAfterMs: 0 });
      expect(await stuck.requeue(reported)).toEqual({ requeued: [], leaderSteppedDown: false });

      // Held a watch long: a new leader, and no copy.
      expect(await stuck.requeue(reported)).toEqual({ requeued: [], leaderSteppedDown: true });
      const leader = await waitFor(
        async () => {
          const now = (await bus.jsm.consumers.info(StreamName.Work, CONSUMER)).cluster?.leader;
          return now !== undefined && now !== real.cluster?.leader ? now : undefined;
        },
        { timeout: 15_000, description: 'a new consumer leader' },
      );
      expect(leader).not.toBe(real.cluster?.leader);
      expect((await bus.jsm.streams.info(StreamName.Work)).state.last_seq).toBe(unseen);

      // Still held a watch after that, at the same mark: copied now.
      expect(await stuck.requeue(reported)).toEqual({ requeued: [], leaderSteppedDown: false });
      const { requeued, leaderSteppedDown } = await stuck.requeue(reported);
      expect(leaderSteppedDown).toBe(false);
      expect(requeued.map((r) => [r.seq, r.copy])).toEqual([[unseen, unseen + 1]]);
    } finally {
      await bus.close();
    }
  }, 90_000);
});
