/**
 * A stage whose work consumption the client ends on its own consumes again. A real way to end
 * it: the server revokes the stage user's subscribe permission on its inboxes (a configuration
 * reload), which the client reports as a permissions violation on the pull inbox and stops the
 * consumption for good. Once the permission is back the stage must pick up new work without a
 * restart — before, it never pulled again while looking healthy.
 */
import { waitFor } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStage, type Bus } from '../src/index.js';
import { metricValue, newMetrics, persistedState, sendWork, STAGE } from './helpers.js';
import { startStageUserServer, type StageUserServer } from './stage-user.js';
import { unitKey, unitMachine, workItem } from './support.js';

/** The stage user's permissions; without inboxes, every inbox subscription is denied. */
function stagePermissions(inboxes: boolean): string {
  const subscribe = inboxes ? '{ allow: [">"] }' : '{ allow: [">"], deny: ["_INBOX.>"] }';
  return `{ publish: ">", subscribe: ${subscribe} }`;
}

let server: StageUserServer;
let admin: Bus;
let stageBus: Bus;

const setInboxes = (allowed: boolean): Promise<void> => server.permit(stagePermissions(allowed));

beforeAll(async () => {
  server = await startStageUserServer(
    { consumers: [{ stage: STAGE, ackWaitMs: 1500, maxAckPending: 1000 }] },
    1000,
  );
  ({ admin, stage: stageBus } = server);
}, 30_000);

afterAll(async () => {
  await server?.[Symbol.asyncDispose]();
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
