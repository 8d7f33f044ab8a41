// Test helpers around a real nats-server: a provisioned bus and readers of streams and buckets.
import { cp, rm } from 'node:fs/promises';
import { expect } from 'vitest';
import { rollBackStreamAround, type NatsServer } from '@plugline/testkit';
import { headers as natsHeaders } from '@nats-io/nats-core';
import {
  deadLetterSubject,
  encodeMessage,
  Stage,
  workSubject,
  type VolumeEvent,
  type WorkItem,
} from '@plugline/contracts';
import { createMetrics, type PluglineMetrics } from '@plugline/telemetry';
import { workItem } from './support.js';
import {
  connectBus,
  durableName,
  kvKey,
  provision,
  snapshotBucket,
  StreamName,
  type Bus,
  type BusOptions,
  type ProvisionOptions,
} from '../src/index.js';

export const STAGE = Stage.SpecWatcher;

export async function provisionedBus(
  servers: string | readonly string[],
  options: ProvisionOptions = {},
  busOptions: Partial<BusOptions> = {},
): Promise<Bus> {
  const bus = await connectBus({ servers, name: 'test', ...busOptions });
  await provision(bus, {
    consumers: [{ stage: STAGE, ackWaitMs: 1500, maxAckPending: 1000 }],
    ...options,
  });
  return bus;
}

/** Publishes raw bytes on a work subject (for malformed-message tests). */
export async function publishRaw(
  bus: Bus,
  subject: string,
  data: Uint8Array | string,
): Promise<void> {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  await bus.js.publish(subject, bytes, { headers: natsHeaders() });
}

export async function sendWork(bus: Bus, item: WorkItem, msgId?: string): Promise<void> {
  await bus.js.publish(workSubject(item), encodeMessage(item), {
    msgID: msgId ?? `${item.operationId}:${item.cause}`,
  });
}

/** All events on the event stream, decoded. */
export async function readEvents(bus: Bus): Promise<VolumeEvent[]> {
  return readStream(
    bus,
    StreamName.Events,
    (data) => JSON.parse(new TextDecoder().decode(data)) as VolumeEvent,
  );
}

export interface DeadLetter {
  reason: string;
  error: string;
  subject: string;
}

export async function readDeadLetters(bus: Bus): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  const info = await bus.jsm.streams.info(StreamName.DeadLetters);
  for (
    let seq = info.state.first_seq;
    seq <= info.state.last_seq && info.state.messages > 0;
    seq++
  ) {
    const m = await bus.jsm.streams.getMessage(StreamName.DeadLetters, { seq });
    if (m === null) continue;
    expect(m.subject).toBe(deadLetterSubject(STAGE));
    out.push({
      reason: m.header.get('Plugline-Reason'),
      error: m.header.get('Plugline-Error'),
      subject: m.header.get('Plugline-Subject'),
    });
  }
  return out;
}

async function readStream<T>(bus: Bus, stream: string, map: (data: Uint8Array) => T): Promise<T[]> {
  const info = await bus.jsm.streams.info(stream);
  const out: T[] = [];
  if (info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await bus.jsm.streams.getMessage(stream, { seq });
    if (m !== null) out.push(map(m.data));
  }
  return out;
}

/** The persisted machine state of a unit (`value` of the snapshot), or undefined. */
export async function persistedState(
  bus: Bus,
  unit: string,
): Promise<{ value: unknown; context: Record<string, unknown>; outbox: unknown[] } | undefined> {
  const kv = await bus.kvm.open(snapshotBucket(STAGE));
  const entry = await kv.get(kvKey(unit));
  if (entry === null || entry.operation !== 'PUT') return undefined;
  const record = entry.json<{
    snapshot: { value: unknown; context: Record<string, unknown> };
    outbox: unknown[];
  }>();
  return { value: record.snapshot.value, context: record.snapshot.context, outbox: record.outbox };
}

/** Pending (undelivered) + unacknowledged messages of the stage's consumer. */
export async function backlog(bus: Bus): Promise<number> {
  const info = await bus.jsm.consumers.info(StreamName.Work, durableName(STAGE));
  return info.num_pending + info.num_ack_pending;
}

export function metricValue(
  metrics: PluglineMetrics,
  name:
    | 'messagesHandled'
    | 'deadLetters'
    | 'published'
    | 'consumeRestarts'
    | 'redeliveries'
    | 'workRequeued',
  labels: Record<string, string>,
): Promise<number> {
  return metrics[name].get().then((m) => {
    const values = m.values as { labels: Record<string, string | number>; value: number }[];
    return values
      .filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))
      .reduce((sum, v) => sum + v.value, 0);
  });
}

export const newMetrics = (): PluglineMetrics =>
  createMetrics(undefined, { processMetrics: false });

/**
 * Copies of a stopped nats-server's store folders, put back later (each once): the store as a
 * crash leaves it, some of its files older than others.
 */
export class StoreCopies {
  readonly #taken = new Map<string, string>();
  async take(folder: string, as: string): Promise<void> {
    const copy = `${folder}.${as}`;
    await cp(folder, copy, { recursive: true });
    this.#taken.set(as, copy);
  }
  async putBack(folder: string, as: string): Promise<void> {
    const copy = this.#taken.get(as);
    if (copy === undefined) throw new Error(`no copy ${as}`);
    await rm(folder, { recursive: true });
    await cp(copy, folder, { recursive: true });
    await rm(copy, { recursive: true });
  }
}

const connectOnce = (server: NatsServer): Promise<Bus> =>
  connectBus({ servers: server.url, name: 'crash-state-maker', maxReconnectAttempts: 0 });

/** Takes the next item on the stage's consumer, acknowledged; its volume (undefined: none came). */
export function takeWork(on: Bus): Promise<string | undefined> {
  return takeNext(on, StreamName.Work, durableName(STAGE));
}

/** Takes the next message of a durable consumer, acknowledged; its `volume` (undefined: none). */
export async function takeNext(
  on: Bus,
  stream: string,
  consumerName: string,
): Promise<string | undefined> {
  const consumer = await on.js.consumers.get(stream, consumerName);
  const msg = await consumer.next({ expires: 3000 });
  await msg?.ackAck();
  return msg?.json<{ volume: string }>().volume;
}

/** A stream and its durable consumer, for {@link streamBehindItsConsumer}. */
export interface ConsumedStream {
  stream: string;
  consumer: string;
  /** Provisions the stream and the consumer. */
  setUp(bus: Bus): Promise<void>;
  /** Publishes a message carrying `volume`. */
  send(bus: Bus, volume: string): Promise<void>;
}

/** The work stream and the stage's consumer (ack wait 1 s). */
export const WORK_CONSUMED: ConsumedStream = {
  stream: StreamName.Work,
  consumer: durableName(STAGE),
  setUp: (bus) => provision(bus, { consumers: [{ stage: STAGE, ackWaitMs: 1000 }] }),
  send: (bus, volume) => sendWork(bus, workItem(volume)),
};

/**
 * Leaves `server` (running, its store on disk) as a crash that lost a stream's last two messages
 * leaves it: the consumer delivered and acknowledged up to sequence 3, while the stream's last
 * sequence is 1 and holds `kept` there (on a work queue, its removal lost too).
 */
export async function streamBehindItsConsumer(
  server: NatsServer,
  consumed: ConsumedStream = WORK_CONSUMED,
): Promise<void> {
  const first = await connectOnce(server);
  await consumed.setUp(first);
  await consumed.send(first, 'kept');
  await first.close();
  await rollBackStreamAround(server, consumed.stream, async () => {
    const second = await connectOnce(server);
    await consumed.send(second, 'lost-a');
    await consumed.send(second, 'lost-b');
    const taken: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      taken.push(await takeNext(second, consumed.stream, consumed.consumer));
    }
    expect(taken).toEqual(['kept', 'lost-a', 'lost-b']);
    await second.close();
  });
}
