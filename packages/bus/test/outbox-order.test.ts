/**
 * A handling's facts go out only once the snapshot that emitted them is stored. The
 * spec-watcher's book of operation ids is such a snapshot: a `requested` fact published while
 * its book's write was lost (a nats-server restart took both replies, only the publish had
 * landed) started an operation the book never knew, and a soak left a volume's status entry for
 * good. Here the server refuses the stage user's snapshot writes (its permissions), and the
 * handling must publish nothing until they are allowed again.
 */
import { waitFor } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStage, snapshotBucket, type Bus } from '../src/index.js';
import { metricValue, newMetrics, persistedState, readEvents, sendWork, STAGE } from './helpers.js';
import { ALL_ALLOWED, startStageUserServer, type StageUserServer } from './stage-user.js';
import { eventType, unitKey, unitMachine, workItem } from './support.js';

/** Everything but the writes to the stage's snapshot bucket (its leases' bucket stays open). */
const NO_SNAPSHOT_WRITES = `{ publish: { allow: [">"], deny: [${JSON.stringify(`$KV.${snapshotBucket(STAGE)}.>`)}] }, subscribe: ">" }`;

let server: StageUserServer;
let admin: Bus;
let stageBus: Bus;

beforeAll(async () => {
  server = await startStageUserServer({ consumers: [{ stage: STAGE, ackWaitMs: 5000 }] }, 500);
  ({ admin, stage: stageBus } = server);
}, 30_000);

afterAll(async () => {
  await server?.[Symbol.asyncDispose]();
});

describe("a handling's outbox", () => {
  it('is published only once its snapshot is stored', async () => {
    await server.permit(NO_SNAPSHOT_WRITES);
    const metrics = newMetrics();
    await using _stage = await runStage({
      bus: stageBus,
      stage: STAGE,
      machine: unitMachine,
      keyOf: unitKey,
      metrics,
      retryBackoff: { initialMs: 50, maxMs: 100 },
    });
    const item = workItem('vol-book');
    const factsOfUnit = async () =>
      (await readEvents(admin)).filter((e) => e.subject.endsWith('/vol-book')).map(eventType);
    await sendWork(admin, item);
    // Handled and failed at its snapshot's write, more than once.
    await waitFor(
      async () => (await metricValue(metrics, 'messagesHandled', { outcome: 'retry' })) >= 2,
      {
        timeout: 20_000,
      },
    );
    expect(await persistedState(admin, unitKey(item))).toBeUndefined();
    expect(await factsOfUnit()).toEqual([]);

    await server.permit(ALL_ALLOWED);
    await waitFor(async () => (await persistedState(admin, unitKey(item)))?.value === 'applied', {
      timeout: 20_000,
    });
    await waitFor(async () => (await factsOfUnit()).length > 0, { timeout: 10_000 });
    expect(await factsOfUnit()).toEqual(['ready']);
  }, 60_000);
});
