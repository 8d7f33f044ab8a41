import type { Logger } from '@plugline/telemetry';
import type { Bus } from './connection.js';
import { StepDownError } from './errors.js';

/** What a stall check did. */
export const StallAction = {
  /** Nothing: no undelivered items, something was delivered, or only the first sighting. */
  None: 'none',
  /** The consumer's leader stepped down: a new leader delivers what the old one kept. */
  SteppedDown: 'stepped-down',
  /** No new leader (a single server, or refused): the consumption was opened again. */
  Reopened: 'reopened',
} as const;
export type StallAction = (typeof StallAction)[keyof typeof StallAction];

export interface StallWatchOptions {
  bus: Bus;
  stream: string;
  consumer: string;
  log: Logger;
  /** Ends the current consumption (the caller's loop opens a new one). */
  reopen: () => Promise<void>;
}

/**
 * Watches a durable pull consumer for items it holds but never delivers. nats-server 2.9 in a
 * cluster can leave a consumer in that state after its leader changed (fixed in later servers,
 * nats-server #6387 and #6469): the stage waits with an open pull and nothing to do while its
 * work sits in the stream for ever. Seen at two checks in a row with nothing delivered in
 * between, while the caller is idle, the consumer's leader is asked to step down (the new leader
 * delivers them); where that is not possible (a single server, a user without the right) the
 * consumption is opened again.
 */
export class StallWatch {
  readonly #o: StallWatchOptions;
  #lastDelivery = Date.now();
  /** When the current sighting of undelivered items began. */
  #seenAt: number | undefined;

  constructor(options: StallWatchOptions) {
    this.#o = options;
  }

  /** The consumption delivered an item. */
  delivered(): void {
    this.#lastDelivery = Date.now();
  }

  /**
   * One check. `idle`: the caller has an open pull and handles nothing, so every item the
   * consumer holds should reach it at once.
   */
  async check(idle: boolean): Promise<StallAction> {
    const { bus, stream, consumer, log } = this.#o;
    const pending = idle ? (await bus.jsm.consumers.info(stream, consumer)).num_pending : 0;
    const since = this.#seenAt;
    if (pending === 0) {
      this.#seenAt = undefined;
      return StallAction.None;
    }
    if (since === undefined || this.#lastDelivery >= since) {
      this.#seenAt = Date.now();
      return StallAction.None;
    }
    this.#seenAt = undefined;
    const idleMs = Date.now() - this.#lastDelivery;
    log.warn(
      { consumer, pending, idleMs },
      'the consumer holds items it does not deliver; asking for a new consumer leader',
    );
    try {
      await stepDownConsumerLeader(bus, stream, consumer);
      return StallAction.SteppedDown;
    } catch (err) {
      log.warn({ err, consumer }, 'no new consumer leader; consuming again instead');
      await this.#o.reopen();
      return StallAction.Reopened;
    }
  }
}

/** Asks the leader of a clustered consumer to step down; throws with the server's reason. */
export async function stepDownConsumerLeader(
  bus: Bus,
  stream: string,
  consumer: string,
): Promise<void> {
  const name = `${stream}/${consumer}`;
  let answer: { success?: boolean; error?: { description?: string } };
  try {
    const reply = await bus.nc.request(
      `$JS.API.CONSUMER.LEADER.STEPDOWN.${stream}.${consumer}`,
      undefined,
      { timeout: 5000 },
    );
    answer = reply.json();
  } catch (err) {
    throw new StepDownError(name, 'no answer', { cause: err });
  }
  if (answer.success !== true) {
    throw new StepDownError(name, answer.error?.description ?? 'no reason given');
  }
}
