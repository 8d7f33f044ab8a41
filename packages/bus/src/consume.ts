import type { ConsumerMessages } from '@nats-io/jetstream';
import type { Stage } from '@plugline/contracts';
import type { Logger, PluglineMetrics } from '@plugline/telemetry';
import type { Bus } from './connection.js';
import { abortableDelay } from './publish.js';
import { StallAction, StallWatch } from './stall.js';

/** A consumer's ack wait in ms (JetStream's default, 30 s, when unset). */
export const ackWaitMsOf = (config: { ack_wait?: number }): number =>
  (config.ack_wait ?? 30_000_000_000) / 1_000_000;

export interface KeptConsumptionOptions {
  bus: Bus;
  stream: string;
  /** The durable pull consumer. */
  consumer: string;
  /** Messages pulled at once. */
  maxMessages: number;
  /** Pull request lifetime. */
  expiresMs: number;
  /**
   * Handles one consumption's messages until it ends; calls `delivered()` of this object for
   * each message (the stall watch counts on it).
   */
  handle(messages: ConsumerMessages): Promise<void>;
  /** True while the caller handles nothing: its open pull asks for all it may take. */
  idle(): boolean;
  /** Between stall checks (the consumer's ack wait). */
  checkEveryMs: number;
  stage: Stage;
  metrics: PluglineMetrics;
  log: Logger;
  /** What is consumed, for the logs (`the work stream`). */
  what: string;
}

/**
 * A pull consumption of a durable consumer, kept alive until stopped:
 *
 * - The NATS client ends a consumption on its own at times (a 400 from the server, a permission
 *   violation on its inbox) and nothing would pull again: the queue would grow while the service
 *   looked healthy. A consumption that ends while running is opened again, after 1 s, doubling to
 *   30 s while opening fails (`plugline_consume_restarts_total`; `bound()` is false meanwhile).
 * - Every `checkEveryMs` while the caller is idle, a {@link StallWatch} looks for items the
 *   consumer holds but does not deliver (`plugline_consumer_stalls_total`).
 */
export class KeptConsumption {
  readonly #o: KeptConsumptionOptions;
  readonly #shutdown = new AbortController();
  readonly #stall: StallWatch;
  readonly #timer: NodeJS.Timeout;
  #messages: ConsumerMessages | undefined;
  #done: Promise<void> = Promise.resolve();
  /** A stall check is running (one at a time). */
  #checking = false;

  /** Opens the first consumption (a caller that cannot consume fails to start), then keeps it. */
  static async open(options: KeptConsumptionOptions): Promise<KeptConsumption> {
    const kept = new KeptConsumption(options);
    return kept.#start();
  }

  private constructor(options: KeptConsumptionOptions) {
    this.#o = options;
    this.#stall = new StallWatch({
      bus: options.bus,
      stream: options.stream,
      consumer: options.consumer,
      log: options.log,
      reopen: async () => {
        await this.#messages?.close();
      },
    });
    this.#timer = setInterval(() => this.#checkStalled(), Math.max(1000, options.checkEveryMs));
    this.#timer.unref();
  }

  /** Resolves once stopped and the last consumption's handler returned. */
  get done(): Promise<void> {
    return this.#done;
  }

  async #start(): Promise<this> {
    try {
      this.#messages = await this.#consume();
    } catch (err) {
      clearInterval(this.#timer);
      throw err;
    }
    this.#done = this.#keep(this.#messages);
    return this;
  }

  /** True while a consumption is open and the stop has not begun. */
  bound(): boolean {
    return this.#messages !== undefined && !this.#shutdown.signal.aborted;
  }

  /** The handler received a message. */
  delivered(): void {
    this.#stall.delivered();
  }

  /** Stops consuming (no consumption opens after this) and waits for the handler to return. */
  async stop(): Promise<void> {
    this.#shutdown.abort(new Error('consumption stopping'));
    clearInterval(this.#timer);
    await this.#messages?.close();
    await this.done;
  }

  async #consume(): Promise<ConsumerMessages> {
    const consumer = await this.#o.bus.js.consumers.get(this.#o.stream, this.#o.consumer);
    return consumer.consume({ max_messages: this.#o.maxMessages, expires: this.#o.expiresMs });
  }

  async #keep(first: ConsumerMessages): Promise<void> {
    const { log, what, metrics, stage } = this.#o;
    const signal = this.#shutdown.signal;
    let messages: ConsumerMessages | undefined = first;
    for (let failures = 0; ;) {
      if (messages !== undefined) {
        await this.#o.handle(messages);
        if (signal.aborted) return;
        messages = undefined;
        this.#messages = undefined;
        metrics.consumeRestarts.inc({ stage });
        log.warn(`the consumption of ${what} ended while running; consuming again`);
      }
      await abortableDelay(Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)), signal);
      if (signal.aborted) return;
      try {
        messages = await this.#consume();
        failures = 0;
        this.#messages = messages;
        // stop() closed the consumption it saw, not one opened while it ran.
        if (signal.aborted) await messages.close();
      } catch (err) {
        failures += 1;
        log.warn({ err, failures }, `could not consume ${what} again; retrying`);
      }
    }
  }

  #checkStalled(): void {
    if (this.#checking) return;
    this.#checking = true;
    const idle = () =>
      this.#messages !== undefined && !this.#shutdown.signal.aborted && this.#o.idle();
    this.#stall
      .check(idle)
      .finally(() => (this.#checking = false))
      .then(
        (action) => {
          if (action !== StallAction.None)
            this.#o.metrics.consumerStalls.inc({ stage: this.#o.stage });
        },
        (err: unknown) =>
          this.#o.log.debug({ err }, `checking ${this.#o.what} for undelivered items`),
      );
  }
}
