import type { ConsumerInfo } from '@nats-io/jetstream';
import type { Bus } from './connection.js';
import { ackWaitMsOf } from './consume.js';
import { StreamName } from './names.js';
import {
  consumerInfo,
  heldOnFilter,
  MAX_REQUEUES,
  RefusalLatch,
  requeuesOf,
  requeueWorkItem,
  subjectMatches,
  type HeldOnFilter,
  type RequeuedItem,
  type WorkConsumer,
} from './work-items.js';

/** By default a consumer is stuck once its ack floor stayed put this many of its ack waits. */
export const STUCK_AFTER_ACK_WAITS = 4;

/** Stream sequences read in one check at most (a longer run is read on by the next checks). */
const MAX_READS_PER_CHECK = 2000;

export interface StuckWorkOptions {
  /**
   * How long a consumer's ack floor stays put, with items held and pulls waiting, before the
   * items it held all that time are requeued (default {@link STUCK_AFTER_ACK_WAITS} ack waits).
   */
  stuckAfterMs?: number;
}

/** A consumer's ack floor, first seen (with pulls waiting) at `since`. */
interface FloorWatch {
  readonly floor: number;
  readonly since: number;
}

/**
 * Requeues the work items nats-server 2.9 holds for a consumer and never delivers. After a
 * `SIGKILL` restart it can keep an item unacknowledged that it does not redeliver once the ack
 * wait passes, or pending items that no pull receives, even from a fresh connection; and above
 * the floor such an item keeps, items it counts as acknowledged whose removal the crash lost
 * (seen in the chaos tests; later releases check a consumer against its stream at start, 2.9
 * does not). A nak does not free them.
 *
 * Seen from outside: the consumer holds items, pulls wait, and its ack floor does not move for
 * `stuckAfterMs`. Each item above the floor that has been in the stream all that time is
 * published again as a copy (a new sequence, which the server delivers) and then deleted (on a
 * work queue that also ends its pending entry). A consumer that counts nothing outstanding but
 * whose subjects still hold items above what it delivered (2.9 in a cluster after a leader
 * change) is watched the same way, from its delivered sequence. A consumer with no pull waiting is left alone:
 * its service is down or busy, and its items wait for it. Copies carry the original's
 * `Nats-Msg-Id` with the sequence they replace, so two checkers (replicas, the janitor) publish
 * one copy.
 *
 * An item a handler still holds, or sent back with a long delay, also keeps the floor put. A
 * stage's runtime names those it holds, and they are left alone. The janitor cannot know them:
 * work items are nudges to idempotent handlers, so such a copy costs one more pass (and a
 * failing item a fresh start of its attempts), and an item's copies are requeued at most
 * {@link MAX_REQUEUES} times.
 *
 * It reads and deletes by sequence, so under least-privilege users only the cleanup identity
 * may ({@link RefusalLatch}).
 */
export class StuckWork {
  readonly #bus: Bus;
  readonly #stuckAfterMs: number | undefined;
  readonly #watches = new Map<string, FloorWatch>();
  readonly #latch = new RefusalLatch();

  constructor(bus: Bus, options: StuckWorkOptions = {}) {
    this.#bus = bus;
    this.#stuckAfterMs = options.stuckAfterMs;
  }

  /** The server refused the by-sequence calls: this no longer checks. */
  get refused(): boolean {
    return this.#latch.refused;
  }

  /**
   * One check of `consumer`; resolves with the items it requeued. `heldHere` names the items
   * the caller holds (being handled, or sent back with a delay not yet run out), which are left
   * alone; `onFilter` is what the stream holds on the consumer's filter, when the caller has
   * read it.
   */
  requeue(
    consumer: WorkConsumer,
    heldHere: (seq: number) => boolean = () => false,
    onFilter?: HeldOnFilter,
  ): Promise<readonly RequeuedItem[]> {
    return this.#latch.run(() => this.#requeue(consumer, heldHere, onFilter), []);
  }

  async #requeue(
    consumer: WorkConsumer,
    heldHere: (seq: number) => boolean,
    onFilter: HeldOnFilter | undefined,
  ): Promise<readonly RequeuedItem[]> {
    const { jsm } = this.#bus;
    const info = await consumerInfo(this.#bus, consumer);
    const filter = info.config.filter_subject;
    if (filter === undefined) return [];
    // What the stream holds on the filter, not what the consumer counts: above a floor the
    // server keeps down, it can also keep items it counts as acknowledged (their removal lost
    // in the crash), which are never delivered again either. And a consumer that counts nothing
    // outstanding can still have items above what it delivered, which 2.9 in a cluster did not
    // deliver (a leader change): read for an idle consumer only when its filter holds any.
    const idle = countsNothing(info);
    let stream = await this.#heldBeforeWatch(idle, filter, onFilter);
    const since = this.#floorSince(info, !idle || (stream?.held ?? 0) > 0);
    const stuckAfterMs = this.#stuckAfterMs ?? STUCK_AFTER_ACK_WAITS * ackWaitMsOf(info.config);
    const now = Date.now();
    if (since === undefined || now - since < stuckAfterMs) return [];
    if (info.num_waiting === 0) return [];
    stream ??= await heldOnFilter(this.#bus, filter);
    let held = stream.held;
    const from = markOf(info) + 1;
    const last = Math.min(stream.last, from + MAX_READS_PER_CHECK - 1);
    // Items are in the stream in the order they came, so the first one younger than the watch
    // ends the search: every later one is younger still.
    const heldSince = now - stuckAfterMs;
    const requeued: RequeuedItem[] = [];
    for (let seq = from; seq <= last && held > 0; seq++) {
      const item = await jsm.streams.getMessage(StreamName.Work, { seq });
      if (item === null) continue;
      if (item.time.getTime() > heldSince) break;
      if (!subjectMatches(filter, item.subject)) continue;
      held--;
      if (heldHere(seq) || requeuesOf(item) >= MAX_REQUEUES) continue;
      const copy = await requeueWorkItem(this.#bus, item);
      if (copy !== undefined) requeued.push({ seq, subject: item.subject, copy });
    }
    // After copies, the next checks watch the floor afresh: the copies have their time to be
    // delivered. Without, what held the floor is still held: the next check looks again.
    if (requeued.length > 0) this.#watches.delete(info.name);
    return requeued;
  }

  /** What the stream holds on the filter before the watch: given, or read for an idle consumer. */
  async #heldBeforeWatch(
    idle: boolean,
    filter: string,
    onFilter: HeldOnFilter | undefined,
  ): Promise<HeldOnFilter | undefined> {
    if (onFilter !== undefined || !idle) return onFilter;
    return heldOnFilter(this.#bus, filter);
  }

  /**
   * Since when the consumer has held items with its mark ({@link markOf}) where it is now;
   * undefined when it holds none. A watch starts only while a pull waits: after its service was
   * down, the floor it left is not counted as stuck before the service pulls again.
   */
  #floorSince(info: ConsumerInfo, holds: boolean): number | undefined {
    const consumer = info.name;
    const floor = markOf(info);
    const watch = this.#watches.get(consumer);
    if (!holds) {
      this.#watches.delete(consumer);
      return undefined;
    }
    if (watch?.floor === floor) return watch.since;
    if (info.num_waiting > 0) this.#watches.set(consumer, { floor, since: Date.now() });
    else this.#watches.delete(consumer);
    return undefined;
  }
}

/**
 * Where a consumer's held items start: above its ack floor, or, when it counts nothing
 * outstanding, above what it delivered (what lies below is done: leftovers, the reaper's).
 */
function markOf(info: ConsumerInfo): number {
  return countsNothing(info) ? info.delivered.stream_seq : info.ack_floor.stream_seq;
}

/** The consumer counts nothing outstanding: no item pending, none unacknowledged. */
function countsNothing(info: ConsumerInfo): boolean {
  return info.num_pending + info.num_ack_pending === 0;
}
