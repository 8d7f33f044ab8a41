/**
 * Makes the nats-server 2.9 leftover the work reapers exist for: an item its consumer pulled and
 * acknowledged, whose removal the store lost, so the server keeps it and never delivers it again.
 * The store's message blocks are put back as they were before the acknowledgement (the consumer
 * keeps its state), with the server stopped in between, as a crash that lost the removal would.
 */
import { cp, rm } from 'node:fs/promises';
import { connectBus, ensureConsumer, ensureStreams, StreamName, type Bus } from '@plugline/bus';
import { Stage, workSubject } from '@plugline/contracts';
import { streamStoreFolder, type NatsServer } from '@plugline/testkit';

/**
 * Leaves one acknowledged item on spec-watcher's subjects (its consumer made if missing), as the
 * `spec-watcher` user with `password`; restarts the server twice. Resolves with its subject.
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
  const subject = workSubject({
    stage: Stage.SpecWatcher,
    namespace: 'cleanup',
    vmi: 'vm',
    volume,
  });
  let bus = await connectAs();
  try {
    await ensureStreams(bus);
    await ensureConsumer(bus, { stage: Stage.SpecWatcher });
    await bus.js.publish(subject, '{}');
  } finally {
    await bus.close();
  }
  await nats.halt('SIGTERM');
  const msgs = await streamStoreFolder(nats, StreamName.Work, 'msgs');
  const before = `${msgs}.before-ack`;
  await cp(msgs, before, { recursive: true });
  await nats.start();

  bus = await connectAs();
  try {
    const consumer = await bus.js.consumers.get(StreamName.Work, Stage.SpecWatcher);
    const msg = await consumer.next({ expires: 5000 });
    if (msg?.subject !== subject) throw new Error(`expected ${subject}, got ${msg?.subject}`);
    await msg.ackAck();
  } finally {
    await bus.close();
  }
  await nats.halt('SIGTERM');
  await rm(msgs, { recursive: true });
  await cp(before, msgs, { recursive: true });
  await rm(before, { recursive: true });
  await nats.start();
  return subject;
}
