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
 * an idle puller within milliseconds, so one still pending a moment later (`confirmMs`), with a
 * pull waiting and nothing delivered meanwhile, is a stall: the consumer's leader is asked to
 * step down (the new leader delivers it); where that is not possible (a single server, a user
 * without the right) the consumption is opened again.
 *
 * Items pending or unacknowledged while the server holds no pull of the idle stage wait for a
 * pull, not a leader: the stage's pull was lost (a server restart the client did not notice, or
 * a leader change, whose new leader never got the old one's pulls), and the consumption is
 * opened again. A leader is not judged at the first look after it took over: stepping down a
 * leader the client has not pulled from yet moved a consumer back onto a node whose replica of
 * the stream had stopped (the 3-node chaos run).
 */
export class StallWatch {
  readonly #o: StallWatchOptions;
  #lastDelivery = 0;
  /** The consumer's leader at the last look (undefined on a single server). */
  #leader: string | undefined;

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
    if ((await this.#look(idle)) === undefined) return StallAction.None;
    const lookedAt = Date.now();
    await abortableDelay(this.#o.confirmMs ?? 1000);
    const still = await this.#look(idle);
    if (still === undefined || this.#lastDelivery >= lookedAt) return StallAction.None;
    if (still.remedy === 'pull') {
      log.warn(
        { consumer, held: still.held },
        'the consumer holds items and no pull of this idle stage is open at its leader; consuming again',
      );
      await this.#o.reopen();
      return StallAction.Reopened;
    }
    log.warn(
      { consumer, held: still.held },
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

  /** What the idle stage's consumer holds and what would free it; undefined for nothing. */
  async #look(
    idle: () => boolean,
  ): Promise<{ held: number; remedy: 'pull' | 'leader' } | undefined> {
    if (!idle()) return undefined;
    const info = await this.#o.bus.jsm.consumers.info(this.#o.stream, this.#o.consumer);
    const leader = info.cluster?.leader;
    const newLeader = leader !== this.#leader;
    this.#leader = leader;
    if (newLeader) return undefined;
    if (info.num_waiting === 0) {
      // Unacknowledged items come back only to an open pull, and pending ones go only to one.
      const held = info.num_pending + info.num_ack_pending;
      return held > 0 ? { held, remedy: 'pull' } : undefined;
    }
    return info.num_pending > 0 ? { held: info.num_pending, remedy: 'leader' } : undefined;
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
