import type { PubAck } from '@nats-io/jetstream';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import {
  encodeMessage,
  eventMsgId,
  eventSubject,
  keyOfEvent,
  eventTypeOf,
  workMsgId,
  workSubject,
  type VolumeEvent,
  type WorkItem,
} from '@plugline/contracts';
import { injectTrace, traceFields, type Logger, type PluglineMetrics } from '@plugline/telemetry';
import type { Bus } from './connection.js';
import { BusClosedError } from './errors.js';

export interface PublishRetryOptions {
  /** First retry delay (default 50 ms), doubled up to `maxDelayMs` (default 2 s). */
  initialDelayMs?: number;
  maxDelayMs?: number;
}

export interface RawPublish {
  subject: string;
  data: Uint8Array;
  msgId: string;
  headers?: Readonly<Record<string, string>>;
}

/** What a `Publisher` publishes: kind is the metric label. */
export type PublishKind = 'event' | 'work' | 'dead-letter';

/**
 * Publishes to JetStream with `Nats-Msg-Id` and the W3C trace context in headers, retrying with a
 * bounded backoff until JetStream acknowledges. It gives up only when `signal` aborts or the
 * connection is closed ({@link BusClosedError}).
 */
export class Publisher {
  readonly #bus: Bus;
  readonly #retry: Required<PublishRetryOptions>;
  readonly #logger: Logger;
  readonly #metrics: PluglineMetrics | undefined;

  constructor(
    bus: Bus,
    options: { retry?: PublishRetryOptions; logger?: Logger; metrics?: PluglineMetrics } = {},
  ) {
    this.#bus = bus;
    this.#retry = {
      initialDelayMs: options.retry?.initialDelayMs ?? 50,
      maxDelayMs: options.retry?.maxDelayMs ?? 2000,
    };
    this.#logger = options.logger ?? bus.logger;
    this.#metrics = options.metrics;
  }

  /**
   * Publishes a volume event on `plugline.v1.events.<ns>.<vmi>.<volume>.<type>`. When the event
   * has no `traceparent` and a trace is active, the active trace context is added to it.
   */
  async publishEvent(event: VolumeEvent, signal?: AbortSignal): Promise<PubAck> {
    return this.publish(eventMessage(event), 'event', signal);
  }

  /** Publishes a work item on its stage's work subject. */
  async publishWork(item: WorkItem, signal?: AbortSignal): Promise<PubAck> {
    return this.publish(workMessage(item), 'work', signal);
  }

  /** Publishes any payload with a message id, retried until acknowledged. */
  async publish(message: RawPublish, kind: PublishKind, signal?: AbortSignal): Promise<PubAck> {
    return this.#untilAcknowledged(message, publishHeaders(message), kind, signal);
  }

  /**
   * Publishes `messages` in their order, pipelined: all are written at once (one connection keeps
   * them in that order on the wire and in each stream), then the acks are awaited together. When
   * some are not acknowledged, they are published again one at a time from the first of them on,
   * each retried until acknowledged before the next; those already stored are dropped by the
   * server as duplicates of their `Nats-Msg-Id`. So nothing is skipped and nothing is repeated;
   * only a message stored after an earlier one of the batch was refused (not merely unanswered)
   * stays ahead of that one.
   */
  async publishInOrder(
    messages: readonly { message: RawPublish; kind: PublishKind }[],
    signal?: AbortSignal,
  ): Promise<void> {
    if (messages.length === 0) return;
    if (messages.length === 1) {
      await this.publish(messages[0]!.message, messages[0]!.kind, signal);
      return;
    }
    this.#throwIfClosing(messages[0]!.message, signal);
    const headers = messages.map(({ message }) => publishHeaders(message));
    const first = await Promise.allSettled(
      messages.map(({ message, kind }, i) => this.#send(message, headers[i]!, kind)),
    );
    const unacknowledged = first.findIndex((r) => r.status === 'rejected');
    if (unacknowledged < 0) return;
    const failed = first[unacknowledged] as PromiseRejectedResult;
    this.#logger.warn(
      { err: failed.reason, subject: messages[unacknowledged]!.message.subject },
      'publish not acknowledged; publishing the rest again in order',
    );
    for (let i = unacknowledged; i < messages.length; i++) {
      const { message, kind } = messages[i]!;
      await this.#untilAcknowledged(message, headers[i]!, kind, signal);
    }
  }

  async #untilAcknowledged(
    message: RawPublish,
    hdrs: MsgHdrs,
    kind: PublishKind,
    signal: AbortSignal | undefined,
  ): Promise<PubAck> {
    let delay = this.#retry.initialDelayMs;
    for (let attempt = 1; ; attempt++) {
      this.#throwIfClosing(message, signal);
      try {
        return await this.#send(message, hdrs, kind);
      } catch (err) {
        this.#logger.warn(
          { err, subject: message.subject, attempt },
          'publish not acknowledged; retrying',
        );
        await abortableDelay(delay, signal);
        delay = Math.min(delay * 2, this.#retry.maxDelayMs);
      }
    }
  }

  async #send(message: RawPublish, hdrs: MsgHdrs, kind: PublishKind): Promise<PubAck> {
    const ack = await this.#bus.js.publish(message.subject, message.data, {
      msgID: message.msgId,
      headers: hdrs,
    });
    this.#metrics?.published.inc({ kind });
    return ack;
  }

  #throwIfClosing(message: RawPublish, signal: AbortSignal | undefined): void {
    if (signal?.aborted || this.#bus.nc.isClosed()) {
      throw new BusClosedError(`gave up publishing ${message.subject}: shutting down`, {
        cause: signal?.reason,
      });
    }
  }
}

/** The message of a volume event; the active trace context is added when it carries none. */
export function eventMessage(event: VolumeEvent): RawPublish {
  const withTrace = event.traceparent === undefined ? { ...event, ...traceFields() } : event;
  return {
    subject: eventSubject(keyOfEvent(event), eventTypeOf(event)),
    data: encodeMessage(withTrace),
    msgId: eventMsgId(event),
  };
}

/** The message of a work item, on its stage's work subject. */
export function workMessage(item: WorkItem): RawPublish {
  return { subject: workSubject(item), data: encodeMessage(item), msgId: workMsgId(item) };
}

/** The message's own headers and the active trace context, built once for all its attempts. */
function publishHeaders(message: RawPublish): MsgHdrs {
  const hdrs: MsgHdrs = natsHeaders();
  if (message.headers !== undefined) {
    for (const [k, v] of Object.entries(message.headers)) hdrs.set(k, v);
  }
  injectTrace(hdrs);
  return hdrs;
}

/** Resolves after `ms`, or early when `signal` aborts (never rejects). */
export function abortableDelay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
