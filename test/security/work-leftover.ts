/**
 * Makes the nats-server 2.9 leftover the work reapers exist for: an item its consumer pulled and
 * acknowledged, whose removal the store lost, so the server keeps it and never delivers it again.
 * The store's message blocks are put back as they were before the acknowledgement (the consumer
 * keeps its state), with the server stopped in between, as a crash that lost the removal would.
 */
import { connectBus, ensureConsumer, ensureStreams, StreamName, type Bus } from '@plugline/bus';
import { encodeMessage, Stage, workSubject, type WorkItem } from '@plugline/contracts';
import { rollBackStreamAround, type NatsServer } from '@plugline/testkit';

/**
 * Leaves one acknowledged item (a valid plug request of `cleanup/vm`) on spec-watcher's subjects
 * (its consumer made if missing), as the `spec-watcher` user with `password`; restarts the server
 * twice. Resolves with its subject.
 */
export async function leaveSpecWatcherLeftover(
  nats: NatsServer,
  password: string,
  volume = 'kept',
): Promise<string> {
  const connectAs = (): Promise<Bus> =>
    connectBus({
      servers: nats.url,
      name: 'leftover-maker',
      user: 'spec-watcher',
      pass: password,
      maxReconnectAttempts: 0,
    });
  const item: WorkItem = {
    v: 1,
    stage: Stage.SpecWatcher,
    namespace: 'cleanup',
    vmi: 'vm',
    vmiUID: 'uid-cleanup-vm',
    volume,
    operationId: `op-${volume}`,
    operation: 'plug',
    cause: 'requested',
    issuedAt: new Date().toISOString(),
  };
  const subject = workSubject(item);
  const bus = await connectAs();
  try {
    await ensureStreams(bus);
    await ensureConsumer(bus, { stage: Stage.SpecWatcher });
    await bus.js.publish(subject, encodeMessage(item));
  } finally {
    await bus.close();
  }
  await rollBackStreamAround(nats, StreamName.Work, async () => {
    const taker = await connectAs();
    try {
      const consumer = await taker.js.consumers.get(StreamName.Work, Stage.SpecWatcher);
      const msg = await consumer.next({ expires: 5000 });
      if (msg?.subject !== subject) throw new Error(`expected ${subject}, got ${msg?.subject}`);
      await msg.ackAck();
    } finally {
      await taker.close();
    }
  });
  return subject;
}
