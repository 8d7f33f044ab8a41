/** Reading the event stream (`PLUGLINE_EVENTS`) through an ordered, ephemeral consumer. */
import { DeliverPolicy, type ConsumerMessages, type JetStreamClient } from '@nats-io/jetstream';
import { StreamName } from '@plugline/bus';
import { decodeEvent, eventFilter, type VolumeEvent } from '@plugline/contracts';
import { CliError } from './errors.js';

export interface EventScope {
  namespace?: string;
  vmi?: string;
  volume?: string;
}

/** Where reading starts: only new events, everything stored, or from a time on. */
export type EventStart = 'new' | 'all' | Date;

export interface StreamedEvent {
  event: VolumeEvent;
  /** Stream sequence. */
  seq: number;
  /** Matching events stored after this one when it was delivered (0: caught up). */
  pending: number;
}

export interface EventStream extends AsyncIterable<StreamedEvent>, AsyncDisposable {
  /** Stops reading; the iteration ends. */
  stop(): void;
}

/** How many stored events match `scope` (0 when the stream is empty for it). */
export async function countEvents(js: JetStreamClient, scope: EventScope): Promise<number> {
  const jsm = await js.jetstreamManager();
  const filter = eventFilter(scope);
  const info = await jsm.streams.info(StreamName.Events, { subjects_filter: filter });
  return Object.values(info.state.subjects ?? {}).reduce((sum, n) => sum + n, 0);
}

/**
 * Opens an ordered consumer on the events of `scope`. The server creates it in the background;
 * to see an operation from its first event whatever that timing, start from a time taken before
 * the operation began. Messages that do not decode as events are skipped.
 */
export async function openEventStream(
  js: JetStreamClient,
  scope: EventScope,
  start: EventStart,
): Promise<EventStream> {
  const jsm = await js.jetstreamManager();
  try {
    await jsm.streams.info(StreamName.Events);
  } catch (err) {
    throw new CliError(
      `the event stream ${StreamName.Events} does not exist on this NATS server: is Plugline running (plugctl up)?`,
      1,
      'StreamNotFound',
      { cause: err },
    );
  }
  const policy =
    start === 'new'
      ? { deliver_policy: DeliverPolicy.New }
      : start === 'all'
        ? { deliver_policy: DeliverPolicy.All }
        : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.toISOString() };
  const consumer = await js.consumers.get(StreamName.Events, {
    filter_subjects: eventFilter(scope),
    ...policy,
  });
  const messages: ConsumerMessages = await consumer.consume({ max_messages: 256 });
  const stop = (): void => {
    messages.stop();
  };
  async function* iterate(): AsyncGenerator<StreamedEvent> {
    for await (const m of messages) {
      const decoded = decodeEvent(m.data);
      if (!decoded.ok) continue;
      yield { event: decoded.value, seq: m.seq, pending: m.info.pending };
    }
  }
  return {
    stop,
    [Symbol.asyncIterator]: iterate,
    [Symbol.asyncDispose]: () => {
      stop();
      return Promise.resolve();
    },
  };
}
