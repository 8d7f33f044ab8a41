import type { Logger } from '@plugline/telemetry';
import type { Bus } from './connection.js';
import { StepDownError } from './errors.js';
import { abortableDelay } from './publish.js';

/** What a stall check did. */
export const StallAction = {
  /** Nothing: no undelivered items, the caller was busy, or something was delivered. */
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
  /** How long a pending item may wait for an idle puller before it counts as held (default 1 s). */
  confirmMs?: number;
}

/**
 * Watches a durable pull consumer for items it holds but never delivers. nats-server 2.9 in a
 * cluster can leave a consumer in that state after its leader changed (fixed in later servers,
 * nats-server #6387 and #6469): the stage has an open pull and nothing to do, newer items may
 * still arrive, but one stays in the stream for ever. A healthy consumer hands a pending item to
 * an idle puller within milliseconds, so one still pending a moment later (`confirmMs`), with
 * nothing delivered meanwhile, is a stall: the consumer's leader is asked to step down (the new
 * leader delivers it); where that is not possible (a single server, a user without the right)
 * the consumption is opened again. So are unacknowledged items while the server holds no pull
 * of the idle stage: a pull lost in a server restart, which the client did not notice.
 */
export class StallWatch {
  readonly #o: StallWatchOptions;
  #lastDelivery = 0;

  constructor(options: StallWatchOptions) {
    this.#o = options;
  }

  /** The consumption delivered an item. */
  delivered(): void {
    this.#lastDelivery = Date.now();
  }

  /**
   * One check. `idle()`: the caller has an open pull and handles nothing, so every item the
   * consumer holds should reach it at once.
   */
  async check(idle: () => boolean): Promise<StallAction> {
    const { bus, stream, consumer, log } = this.#o;
    const held = async (): Promise<number> => {
      if (!idle()) return 0;
      const info = await bus.jsm.consumers.info(stream, consumer);
      if (info.num_pending > 0) return info.num_pending;
      // Unacknowledged items come back only to an open pull, and the server holds none: the
      // stage's pull was lost (seen after a nats-server restart), and with nothing new to
      // deliver (that would show as pending) they would wait for ever.
      return info.num_waiting === 0 ? info.num_ack_pending : 0;
    };
    if ((await held()) === 0) return StallAction.None;
    const lookedAt = Date.now();
    await abortableDelay(this.#o.confirmMs ?? 1000);
    const still = await held();
    if (still === 0 || this.#lastDelivery >= lookedAt) return StallAction.None;
    log.warn(
      { consumer, held: still },
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
