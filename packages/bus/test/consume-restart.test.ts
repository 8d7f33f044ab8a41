/**
 * A stage whose work consumption the client ends on its own consumes again. A real way to end
 * it: the server revokes the stage user's subscribe permission on its inboxes (a configuration
 * reload), which the client reports as a permissions violation on the pull inbox and stops the
 * consumption for good. Once the permission is back the stage must pick up new work without a
 * restart — before, it never pulled again while looking healthy.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startNats, tempDir, waitFor, type NatsServer, type TempDir } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, provision, runStage, type Bus } from '../src/index.js';
import { metricValue, newMetrics, persistedState, sendWork, STAGE } from './helpers.js';
import { unitKey, unitMachine, workItem } from './support.js';

const STAGE_USER = 'stage';
const ADMIN_USER = 'admin';

/**
 * The server's users; `inboxes: false` denies the stage user every inbox subscription. A reload
 * must keep what the command line set (`-n`, `-js -sd`): nats-server refuses another name and
 * turns JetStream off when the file does not have it.
 */
function natsConf(inboxes: boolean, server?: NatsServer): string {
  const stageSubscribe = inboxes ? '{ allow: [">"] }' : '{ allow: [">"], deny: ["_INBOX.>"] }';
  const kept =
    server === undefined
      ? ''
      : `server_name: ${server.name}\njetstream { store_dir: ${JSON.stringify(join(server.storeDir, 'js'))} }\n`;
  return `${kept}authorization {
  users = [
    { user: ${STAGE_USER}, password: stage-pw, permissions: { publish: ">", subscribe: ${stageSubscribe} } }
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

async function setInboxes(allowed: boolean): Promise<void> {
  await writeFile(confPath, natsConf(allowed, nats));
  await nats.reload();
}

beforeAll(async () => {
  dir = await tempDir('plugline-consume-restart-');
  confPath = join(dir.path, 'nats.conf');
  await writeFile(confPath, natsConf(true));
  nats = await startNats({ args: ['-c', confPath] });
  admin = await connectBus({
    servers: nats.url,
    name: 'admin',
    user: ADMIN_USER,
    pass: 'admin-pw',
  });
  await provision(admin, { consumers: [{ stage: STAGE, ackWaitMs: 1500, maxAckPending: 1000 }] });
  stageBus = await connectBus({
    servers: nats.url,
    name: 'stage',
    user: STAGE_USER,
    pass: 'stage-pw',
    apiTimeoutMs: 1000,
  });
}, 30_000);

afterAll(async () => {
  await Promise.allSettled([admin?.close(), stageBus?.close()]);
  await nats?.stop();
  await dir?.remove();
});

describe('a work consumption that ends on its own', () => {
  it('is opened again, and work sent after that is handled', async () => {
    const metrics = newMetrics();
    await using stage = await runStage({
      bus: stageBus,
      stage: STAGE,
      machine: unitMachine,
      keyOf: unitKey,
      metrics,
    });
    const before = workItem('vol-before');
    await sendWork(admin, before);
    await waitFor(async () => (await persistedState(admin, unitKey(before)))?.value === 'applied');

    await setInboxes(false);
    // The client ends the consumption; the stage says it is not bound and counts the restart.
    await waitFor(
      async () => (await metricValue(metrics, 'consumeRestarts', { stage: STAGE })) >= 1,
      { timeout: 15_000, description: 'the consumption to end' },
    );
    expect(stage.bound()).toBe(false);

    await setInboxes(true);
    await waitFor(() => stage.bound(), { timeout: 60_000, description: 'consuming again' });
    const after = workItem('vol-after');
    await sendWork(admin, after);
    await waitFor(async () => (await persistedState(admin, unitKey(after)))?.value === 'applied', {
      timeout: 15_000,
      description: 'the work sent after the restart to be handled',
    });
  }, 120_000);
});
