import type { ConsumerInfo, StoredMsg } from '@nats-io/jetstream';
import type { Bus } from './connection.js';
import { ackWaitMsOf } from './consume.js';
import { StreamName } from './names.js';
import { stepDownConsumerLeader } from './stall.js';
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

/** What one check of a consumer did. */
export interface StuckWorkRepair {
  /** Items published again as copies (the originals deleted). */
  readonly requeued: readonly RequeuedItem[];
  /**
   * The consumer's leader was asked to step down instead: a clustered consumer that counted
   * nothing outstanding while its subjects held items above what it delivered.
   */
  readonly leaderSteppedDown: boolean;
}

const NOTHING_DONE: StuckWorkRepair = { requeued: [], leaderSteppedDown: false };

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
 * change) is watched the same way, from its delivered sequence; when it is clustered, its leader
 * is first asked to step down, and its items are requeued only if they are still held a watch
 * later. Copies alone did not help there: in a chaos run (a 3-node cluster, its work stream's
 * leader killed), three copies in a row each left an item held above what the consumer
 * delivered, until the item's requeues ran out. A consumer with no pull waiting is left alone:
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
  /** Per consumer: the mark at which its leader was last asked to step down. */
  readonly #steppedDownAt = new Map<string, number>();
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
   * One check of `consumer`; resolves with what it did. `heldHere` names the items the caller
   * holds (being handled, or sent back with a delay not yet run out), which are left alone;
   * `onFilter` is what the stream holds on the consumer's filter, when the caller has read it.
   */
  requeue(
    consumer: WorkConsumer,
    heldHere: (seq: number) => boolean = () => false,
    onFilter?: HeldOnFilter,
  ): Promise<StuckWorkRepair> {
    return this.#latch.run(() => this.#requeue(consumer, heldHere, onFilter), NOTHING_DONE);
  }

  async #requeue(
    consumer: WorkConsumer,
    heldHere: (seq: number) => boolean,
    onFilter: HeldOnFilter | undefined,
  ): Promise<StuckWorkRepair> {
    const info = await consumerInfo(this.#bus, consumer);
    const filter = info.config.filter_subject;
    if (filter === undefined) return NOTHING_DONE;
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
    if (since === undefined || now - since < stuckAfterMs) return NOTHING_DONE;
    if (info.num_waiting === 0) return NOTHING_DONE;
    stream ??= await heldOnFilter(this.#bus, filter);
    const mark = markOf(info);
    const stuck = await this.#heldAllAlong(filter, stream, mark, now - stuckAfterMs, heldHere);
    if (stuck.length === 0) return NOTHING_DONE;
    // After a step-down or copies, the next checks watch the mark afresh: the new leader or the
    // copies have their time to deliver. Without, what held it is still held: the next check
    // looks again.
    this.#watches.delete(info.name);
    return this.#free(info, idle, mark, stuck);
  }

  /**
   * The items on `filter` above `mark` that were in the stream before `heldSince`, but those the
   * caller holds and those requeued too often already.
   */
  async #heldAllAlong(
    filter: string,
    stream: HeldOnFilter,
    mark: number,
    heldSince: number,
    heldHere: (seq: number) => boolean,
  ): Promise<StoredMsg[]> {
    const { jsm } = this.#bus;
    let held = stream.held;
    const from = mark + 1;
    const last = Math.min(stream.last, from + MAX_READS_PER_CHECK - 1);
    const stuck: StoredMsg[] = [];
    for (let seq = from; seq <= last && held > 0; seq++) {
      const item = await jsm.streams.getMessage(StreamName.Work, { seq });
      if (item === null) continue;
      // Items are in the stream in the order they came, so the first one younger than the
      // watch ends the search: every later one is younger still.
      if (item.time.getTime() > heldSince) break;
      if (!subjectMatches(filter, item.subject)) continue;
      held--;
      if (heldHere(seq) || requeuesOf(item) >= MAX_REQUEUES) continue;
      stuck.push(item);
    }
    return stuck;
  }

  /** Asks for a new leader of an idle clustered consumer once per mark; else copies `stuck`. */
  async #free(
    info: ConsumerInfo,
    idle: boolean,
    mark: number,
    stuck: readonly StoredMsg[],
  ): Promise<StuckWorkRepair> {
    if (idle && isClustered(info) && this.#steppedDownAt.get(info.name) !== mark) {
      this.#steppedDownAt.set(info.name, mark);
      const steppedDown = await stepDownConsumerLeader(this.#bus, StreamName.Work, info.name).then(
        () => true,
        () => false, // refused or unanswered: the copies below instead
      );
      if (steppedDown) return { requeued: [], leaderSteppedDown: true };
    }
    const requeued: RequeuedItem[] = [];
    for (const item of stuck) {
      const copy = await requeueWorkItem(this.#bus, item);
      if (copy !== undefined) requeued.push({ seq: item.seq, subject: item.subject, copy });
    }
    return { requeued, leaderSteppedDown: false };
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

/** The consumer has replicas: its leader can step down for another. */
function isClustered(info: ConsumerInfo): boolean {
  return (info.cluster?.replicas?.length ?? 0) > 0;
}

/** The consumer counts nothing outstanding: no item pending, none unacknowledged. */
function countsNothing(info: ConsumerInfo): boolean {
  return info.num_pending + info.num_ack_pending === 0;
}
