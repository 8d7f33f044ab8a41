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
    const withTrace = event.traceparent === undefined ? { ...event, ...traceFields() } : event;
    return this.publish(
      {
        subject: eventSubject(keyOfEvent(event), eventTypeOf(event)),
        data: encodeMessage(withTrace),
        msgId: eventMsgId(event),
      },
      'event',
      signal,
    );
  }

  /** Publishes a work item on its stage's work subject. */
  async publishWork(item: WorkItem, signal?: AbortSignal): Promise<PubAck> {
    return this.publish(
      { subject: workSubject(item), data: encodeMessage(item), msgId: workMsgId(item) },
      'work',
      signal,
    );
  }

  /** Publishes any payload with a message id, retried until acknowledged. */
  async publish(message: RawPublish, kind: PublishKind, signal?: AbortSignal): Promise<PubAck> {
    const hdrs: MsgHdrs = natsHeaders();
    for (const [k, v] of Object.entries(message.headers ?? {})) hdrs.set(k, v);
    injectTrace(hdrs);
    let delay = this.#retry.initialDelayMs;
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted || this.#bus.nc.isClosed()) {
        throw new BusClosedError(`gave up publishing ${message.subject}: shutting down`, {
          cause: signal?.reason,
        });
      }
      try {
        const ack = await this.#bus.js.publish(message.subject, message.data, {
          msgID: message.msgId,
          headers: hdrs,
        });
        this.#metrics?.published.inc({ kind });
        return ack;
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
