import type { ConsumerInfo } from '@nats-io/jetstream';
import type { Logger } from '@plugline/telemetry';
import type { Bus } from './connection.js';
import { StreamName } from './names.js';
import { SequenceGap } from './sequence-gap.js';
import { StuckWork, type StuckWorkOptions } from './stuck-work.js';
import { heldOnFilter, type RequeuedItem } from './work-items.js';
import { WorkLeftovers } from './work-reaper.js';

/** What one check of a consumer repaired. */
export interface WorkRepairs {
  /** Placeholders that moved the stream's sequence past the consumer ({@link SequenceGap}). */
  readonly placeholders: number;
  /** Items published into a closed sequence gap, requeued ({@link WorkLeftovers}). */
  readonly leftovers: readonly RequeuedItem[];
  /** Items the server counted done and kept, deleted ({@link WorkLeftovers}). */
  readonly removed: number;
  /** Items the server held and did not deliver, requeued ({@link StuckWork}). */
  readonly stuck: readonly RequeuedItem[];
  /** The consumer's leader was asked to step down for such items instead ({@link StuckWork}). */
  readonly leaderSteppedDown: boolean;
}

/**
 * The work-queue repairs for what nats-server 2.9 gets wrong after a crash, in the order one
 * needs the other: the stream's sequence moved past the consumer first (so that copies get a
 * sequence the server delivers), then its leftovers removed (those at or below a gap it closed
 * requeued: they may have been published into it) and its stuck items requeued. Each repair
 * keeps its own state across checks, so one instance checks a consumer again and again (a
 * stage's runtime its own, the janitor every one): the reaper acts on its second look, so the
 * gap's bound is kept here. Rejects with `ReapRefusedError` once the server refuses a repair's
 * by-sequence calls.
 */
export class WorkQueueRepair {
  readonly #gap: SequenceGap;
  readonly #leftovers: WorkLeftovers;
  readonly #stuck: StuckWork;
  readonly #bus: Bus;
  /** Per consumer: the sequence up to which a check closed a gap (its leftovers are requeued). */
  readonly #gapUpTo = new Map<string, number>();

  constructor(bus: Bus, options: StuckWorkOptions = {}) {
    this.#bus = bus;
    this.#gap = new SequenceGap(bus);
    this.#leftovers = new WorkLeftovers(bus);
    this.#stuck = new StuckWork(bus, options);
  }

  /**
   * One check of the consumer `info` describes (read once for all repairs). `heldHere` names
   * the items the caller holds, which {@link StuckWork} leaves alone.
   */
  async check(info: ConsumerInfo, heldHere?: (seq: number) => boolean): Promise<WorkRepairs> {
    const placeholders = await this.#gap.close(info);
    if (placeholders > 0) this.#gapUpTo.set(info.name, info.delivered.stream_seq);
    // One read of what the stream holds on the filter for both repairs that count it (the
    // placeholders are on a subject no filter takes), read again only if the reaper changed it.
    const filter = info.config.filter_subject;
    const onFilter =
      filter === undefined || filter === '' ? undefined : await heldOnFilter(this.#bus, filter);
    const { requeued: leftovers, removed } = await this.#leftovers.reap(
      info,
      this.#gapUpTo.get(info.name),
      onFilter,
    );
    const unchanged = leftovers.length === 0 && removed === 0;
    const { requeued: stuck, leaderSteppedDown } = await this.#stuck.requeue(
      info,
      heldHere,
      unchanged ? onFilter : undefined,
    );
    return { placeholders, leftovers, removed, stuck, leaderSteppedDown };
  }
}

/** Items requeued by a check, both kinds. */
export function requeuedCount(repairs: WorkRepairs): number {
  return repairs.leftovers.length + repairs.stuck.length;
}

/** Logs what a check of `consumer` repaired, one `warn` line per kind (operators search them). */
export function logWorkRepairs(log: Logger, consumer: string, repairs: WorkRepairs): void {
  const { placeholders, leftovers, removed, stuck, leaderSteppedDown } = repairs;
  logSequenceGapClosed(log, StreamName.Work, consumer, placeholders);
  if (leftovers.length > 0) {
    log.warn(
      { consumer, requeued: leftovers },
      'requeued work items published into a sequence gap',
    );
  }
  if (removed > 0) {
    log.warn({ consumer, removed }, 'removed finished work items the server kept');
  }
  if (stuck.length > 0) {
    log.warn(
      { consumer, requeued: stuck },
      'requeued work items the server held and did not deliver',
    );
  }
  if (leaderSteppedDown) {
    log.warn(
      { consumer },
      'the consumer did not deliver items above what it delivered; asked for a new consumer leader',
    );
  }
}

/** Logs that a stream's sequence was moved past `consumer` (nothing when `placeholders` is 0). */
export function logSequenceGapClosed(
  log: Logger,
  stream: string,
  consumer: string,
  placeholders: number,
): void {
  if (placeholders === 0) return;
  log.warn(
    { stream, consumer, placeholders },
    "moved a stream's sequence past a consumer a crash left it behind",
  );
}
