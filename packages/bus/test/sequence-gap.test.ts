/**
 * A work stream that lost its last items while its consumer kept its later state, on a real
 * nats-server 2.9 (a `SIGKILL` can leave them so: both are written lazily). The stream then
 * gives new items sequences at or below what the consumer has delivered, and the server never
 * delivers them (it counts nothing pending). Made here by putting the stream's folder back to
 * before the consumer took its last items, with the server stopped in between.
 */
import { headers as natsHeaders } from '@nats-io/nats-core';
import { AckPolicy, DeliverPolicy } from '@nats-io/jetstream';
import {
  encodeMessage,
  EVENTS_PLACEHOLDER_SUBJECT,
  EVENTS_PREFIX,
  eventSubject,
  EventType,
  WORK_PLACEHOLDER_SUBJECT,
  workSubject,
} from '@plugline/contracts';
import { startNats, waitFor, type NatsServer } from '@plugline/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import {
  connectBus,
  durableName,
  provision,
  MAX_REQUEUES,
  REQUEUES_HEADER,
  StreamName,
  WorkLeftovers,
  WorkQueueRepair,
  type WorkRepairs,
  SequenceGap,
  type Bus,
} from '../src/index.js';
import {
  provisionedBus,
  sendWork,
  STAGE,
  streamBehindItsConsumer,
  takeNext,
  takeWork,
  type ConsumedStream,
} from './helpers.js';
import { workItem } from './support.js';

const CONSUMER = durableName(STAGE);

let nats: NatsServer | undefined;
let bus: Bus | undefined;

afterEach(async () => {
  await bus?.close();
  await nats?.stop();
  bus = undefined;
  nats = undefined;
});

const connect = (server: NatsServer): Promise<Bus> =>
  connectBus({ servers: server.url, name: 'sequence-gap-test', maxReconnectAttempts: 0 });

/** The server of {@link streamBehindItsConsumer}, with a connection to it. */
async function serverBehind(): Promise<Bus> {
  nats = await startNats();
  await streamBehindItsConsumer(nats);
  bus = await connect(nats);
  const info = await bus.jsm.consumers.info(StreamName.Work, CONSUMER);
  const { state } = await bus.jsm.streams.info(StreamName.Work);
  expect([info.delivered.stream_seq, state.last_seq, state.messages]).toEqual([3, 1, 1]);
  return bus;
}

describe('SequenceGap', () => {
  it('an item published into the lost sequences is never delivered until the gap is closed and it is requeued', async () => {
    const bus = await serverBehind();
    await sendWork(bus, workItem('after-restart'));
    // The server gives it sequence 2, which the consumer is past: no pull receives it.
    expect((await bus.jsm.streams.info(StreamName.Work)).state.last_seq).toBe(2);
    expect((await bus.jsm.consumers.info(StreamName.Work, CONSUMER)).num_pending).toBe(0);
    expect(await takeWork(bus)).toBeUndefined();

    // A check moves the stream's sequence past what the consumer delivered, and leaves no
    // placeholder behind.
    const repair = new WorkQueueRepair(bus);
    const check = async (): Promise<WorkRepairs> =>
      repair.check(await bus.jsm.consumers.info(StreamName.Work, CONSUMER));
    expect((await check()).placeholders).toBeGreaterThanOrEqual(1);
    const { state } = await bus.jsm.streams.info(StreamName.Work, {
      subjects_filter: WORK_PLACEHOLDER_SUBJECT,
    });
    expect(state.last_seq).toBeGreaterThanOrEqual(3);
    expect([state.messages, state.subjects?.[WORK_PLACEHOLDER_SUBJECT] ?? 0]).toEqual([2, 0]);

    // An item published now is delivered at once.
    await sendWork(bus, workItem('after-closing'));
    expect(await takeWork(bus)).toBe('after-closing');

    // The next check requeues the two the consumer counts done (the reaper acts on its second
    // look): `after-restart`, which it never had, and `kept`, whose removal the crash lost (one
    // more pass of a done item, as a redelivery would be). Both are at or below the gap.
    const second = await check();
    expect([second.placeholders, second.leftovers.map((r) => r.seq), second.removed]).toEqual([
      0,
      [1, 2],
      0,
    ]);
    const volumes = [await takeWork(bus), await takeWork(bus)];
    expect(volumes).toEqual(['kept', 'after-restart']);
    await waitFor(async () => (await bus.jsm.streams.info(StreamName.Work)).state.messages === 0, {
      timeout: 5000,
      interval: 50,
      description: 'the work stream to be empty',
    });
  }, 60_000);

  it('leaves a stream that is not behind alone, and deletes a placeholder a check left behind', async () => {
    nats = await startNats();
    bus = await provisionedBus(nats.url, { consumers: [{ stage: STAGE, ackWaitMs: 1000 }] });
    await sendWork(bus, workItem('ahead'));
    const gap = new SequenceGap(bus);
    expect(await gap.close(CONSUMER)).toBe(0);
    // A check that ended between publishing a placeholder and deleting it.
    const placeholder = await bus.js.publish(WORK_PLACEHOLDER_SUBJECT);
    expect(await gap.close(CONSUMER)).toBe(0);
    const { state } = await bus.jsm.streams.info(StreamName.Work, {
      subjects_filter: WORK_PLACEHOLDER_SUBJECT,
    });
    expect(state.subjects?.[WORK_PLACEHOLDER_SUBJECT] ?? 0).toBe(0);
    expect(await bus.jsm.streams.getMessage(StreamName.Work, { seq: placeholder.seq })).toBeNull();
    expect(await takeWork(bus)).toBe('ahead');
  }, 30_000);

  it('deletes a copy left over again after its last requeue instead of requeueing it for ever', async () => {
    const bus = await serverBehind();
    const item = workItem('requeued-often');
    const hdrs = natsHeaders();
    hdrs.set(REQUEUES_HEADER, String(MAX_REQUEUES));
    await bus.js.publish(workSubject(item), encodeMessage(item), { headers: hdrs });
    await new SequenceGap(bus).close(CONSUMER);

    // Both are at or below the gap (delivered 3); the copy is past its last requeue.
    const leftovers = new WorkLeftovers(bus);
    await leftovers.reap(CONSUMER, 3);
    const { requeued, removed } = await leftovers.reap(CONSUMER, 3);
    expect([requeued.map((r) => r.seq), removed]).toEqual([[1], 1]);
    expect(await takeWork(bus)).toBe('kept');
    expect(await takeWork(bus)).toBeUndefined();
    expect((await bus.jsm.streams.info(StreamName.Work)).state.messages).toBe(0);
  }, 30_000);
});

describe('SequenceGap on the event stream', () => {
  const READER = 'events-reader';
  /** The event stream with a durable reader of every event, as the status projector reads it. */
  const EVENTS_CONSUMED: ConsumedStream = {
    stream: StreamName.Events,
    consumer: READER,
    setUp: async (on) => {
      await provision(on);
      await on.jsm.consumers.add(StreamName.Events, {
        durable_name: READER,
        filter_subject: `${EVENTS_PREFIX}.>`,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
      });
    },
    send: async (on, volume) => {
      const subject = eventSubject({ namespace: 'ns', vmi: 'vm', volume }, EventType.Ready);
      await on.js.publish(subject, JSON.stringify({ volume }));
    },
  };
  const takeEvent = (on: Bus): Promise<string | undefined> =>
    takeNext(on, StreamName.Events, READER);

  it('an event published into the lost sequences is not delivered; once the gap is closed the next one is', async () => {
    nats = await startNats();
    await streamBehindItsConsumer(nats, EVENTS_CONSUMED);
    bus = await connect(nats);
    await EVENTS_CONSUMED.send(bus, 'into-the-gap');
    expect(await takeEvent(bus)).toBeUndefined();

    const gap = new SequenceGap(bus, StreamName.Events);
    expect(await gap.close(READER)).toBeGreaterThanOrEqual(1);
    const { state } = await bus.jsm.streams.info(StreamName.Events, {
      subjects_filter: EVENTS_PLACEHOLDER_SUBJECT,
    });
    // `kept` and `into-the-gap` stay (a limits stream keeps what was read); no placeholder does.
    expect([state.messages, state.subjects?.[EVENTS_PLACEHOLDER_SUBJECT] ?? 0]).toEqual([2, 0]);
    await EVENTS_CONSUMED.send(bus, 'after-closing');
    expect(await takeEvent(bus)).toBe('after-closing');
  }, 60_000);
});
