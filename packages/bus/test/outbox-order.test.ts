/**
 * A handling's facts go out only once the snapshot that emitted them is stored. The
 * spec-watcher's book of operation ids is such a snapshot: a `requested` fact published while
 * its book's write was lost (a nats-server restart took both replies, only the publish had
 * landed) started an operation the book never knew, and a soak left a volume's status entry for
 * good. Here the server refuses the stage user's snapshot writes (its permissions), and the
 * handling must publish nothing until they are allowed again.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startNats, tempDir, waitFor, type NatsServer, type TempDir } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, provision, runStage, snapshotBucket, type Bus } from '../src/index.js';
import { metricValue, newMetrics, persistedState, readEvents, sendWork, STAGE } from './helpers.js';
import { eventType, unitKey, unitMachine, workItem } from './support.js';

const STAGE_USER = 'stage';
const ADMIN_USER = 'admin';

/**
 * The server's users; `snapshots: false` denies the stage user the writes to its snapshot
 * bucket (its leases' bucket stays open). A reload keeps what the command line set.
 */
function natsConf(snapshots: boolean, server?: NatsServer): string {
  const denied = JSON.stringify(`$KV.${snapshotBucket(STAGE)}.>`);
  const publish = snapshots ? '">"' : `{ allow: [">"], deny: [${denied}] }`;
  const kept =
    server === undefined
      ? ''
      : `server_name: ${server.name}\njetstream { store_dir: ${JSON.stringify(join(server.storeDir, 'js'))} }\n`;
  return `${kept}authorization {
  users = [
    { user: ${STAGE_USER}, password: stage-pw, permissions: { publish: ${publish}, subscribe: ">" } }
    { user: ${ADMIN_USER}, password: admin-pw }
  ]
}
`;
}

let dir: TempDir;
let confPath: string;
let nats: NatsServer;
let admin: Bus;
let stageBus: Bus;

beforeAll(async () => {
  dir = await tempDir('plugline-outbox-order-');
  confPath = join(dir.path, 'nats.conf');
  await writeFile(confPath, natsConf(true));
  nats = await startNats({ args: ['-c', confPath] });
  admin = await connectBus({
    servers: nats.url,
    name: 'admin',
    user: ADMIN_USER,
    pass: 'admin-pw',
  });
  await provision(admin, { consumers: [{ stage: STAGE, ackWaitMs: 5000 }] });
  stageBus = await connectBus({
    servers: nats.url,
    name: 'stage',
    user: STAGE_USER,
    pass: 'stage-pw',
    apiTimeoutMs: 500,
  });
}, 30_000);

afterAll(async () => {
  await Promise.allSettled([admin?.close(), stageBus?.close()]);
  await nats?.stop();
  await dir?.remove();
});

describe("a handling's outbox", () => {
  it('is published only once its snapshot is stored', async () => {
    await writeFile(confPath, natsConf(false, nats));
    await nats.reload();
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

    await writeFile(confPath, natsConf(true, nats));
    await nats.reload();
    await waitFor(async () => (await persistedState(admin, unitKey(item)))?.value === 'applied', {
      timeout: 20_000,
    });
    await waitFor(async () => (await factsOfUnit()).length > 0, { timeout: 10_000 });
    expect(await factsOfUnit()).toEqual(['ready']);
  }, 60_000);
});
