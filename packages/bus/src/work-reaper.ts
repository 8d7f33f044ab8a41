import type { Bus } from './connection.js';
import { StreamName } from './names.js';
import {
  consumerInfo,
  deleteWorkItem,
  doneUpTo,
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

/** What one check of {@link WorkLeftovers} did. */
export interface ReapedItems {
  /** Leftovers in a sequence gap, published again under a new sequence (originals deleted). */
  readonly requeued: readonly RequeuedItem[];
  /** Leftovers deleted: acknowledged items whose removal was lost. */
  readonly removed: number;
}

const NOTHING_REAPED: ReapedItems = { requeued: [], removed: 0 };

/**
 * Finds and removes the work items nats-server 2.9 keeps while their consumer counts them done
 * (after a crash its store still holds items whose removal was lost; after a cluster node comes
 * back, a new stream leader may never have seen the acknowledgement remove them). Such an item
 * is never delivered again and would sit in the work queue for ever.
 *
 * The stream holds, for a consumer's filter, its pending and unacknowledged items and nothing
 * else (one consumer per filter on a work queue); when it holds more, the extra ones are
 * leftovers, all at or below the ack floor (or the delivered sequence when nothing is
 * outstanding). They are deleted once two checks in a row saw them: two reads a moment apart
 * can count an item acknowledged in between. So is the stream's first item when it is the
 * consumer's and at or below that sequence, whatever the count says (it can miss it, see #reap).
 * Looked up by sequence (the subject lookups are what 2.9 loses), and deleted one by one (a
 * filtered purge on 2.9 moves every consumer past the purged sequence).
 *
 * An item published while a crash had left the stream behind its consumer ({@link SequenceGap})
 * looks the same, and was never handled: at or below the sequence up to which the caller closed
 * such a gap (`requeueUpTo`), leftovers are published again as copies (a new sequence, which the
 * server delivers) and then deleted, not just deleted. An acknowledged one among them costs one
 * more pass of an idempotent handler. Elsewhere they are deleted: every extra pass of an old item
 * is one more interleaving for the stages to get right, and acknowledged leftovers follow most
 * crashes. A copy left over again after {@link MAX_REQUEUES} requeues is deleted.
 *
 * A stage's runtime checks its own consumer; the cleanup identity checks every consumer
 * (`startWorkJanitor`). Once the server refuses the by-sequence calls the reaper throws
 * {@link ReapRefusedError} one time and then does nothing: asking again would only be refused
 * again (and logged by the server) every check.
 */
export class WorkLeftovers {
  readonly #bus: Bus;
  /** Consumers whose last check saw leftovers. */
  readonly #suspected = new Set<string>();
  readonly #latch = new RefusalLatch();

  constructor(bus: Bus) {
    this.#bus = bus;
  }

  /** The server refused the by-sequence calls: this reaper no longer checks. */
  get refused(): boolean {
    return this.#latch.refused;
  }

  /**
   * One check of `consumer`'s items; resolves with what it requeued and removed. Leftovers at or
   * below `requeueUpTo` (a sequence gap the caller closed) are requeued, the others deleted.
   * `onFilter` is what the stream holds on the consumer's filter, when the caller has read it.
   */
  reap(consumer: WorkConsumer, requeueUpTo = 0, onFilter?: HeldOnFilter): Promise<ReapedItems> {
    return this.#latch.run(() => this.#reap(consumer, requeueUpTo, onFilter), NOTHING_REAPED);
  }

  async #reap(
    consumer: WorkConsumer,
    requeueUpTo: number,
    onFilter: HeldOnFilter | undefined,
  ): Promise<ReapedItems> {
    const info = await consumerInfo(this.#bus, consumer);
    const filter = info.config.filter_subject;
    if (filter === undefined || filter === '') return NOTHING_REAPED;
    const outstanding = info.num_pending + info.num_ack_pending;
    const upTo = doneUpTo(info);
    const { held, first: firstSeq } = onFilter ?? (await heldOnFilter(this.#bus, filter));
    const first = Math.max(1, firstSeq);
    const leftovers = held - outstanding;
    // The stream's first item, when it is this consumer's and at or below what it is done with,
    // is a leftover the count can miss: after a crash 2.9 can also keep an item pending whose
    // message it removed (it forgets that item only once the stream's first sequence passes it,
    // which this leftover prevents), and the two cancel out in `held - outstanding`.
    const headMayBeLeftover = held > 0 && first <= upTo;
    const suspected = this.#suspected.has(info.name);
    if (leftovers > 0 || headMayBeLeftover) this.#suspected.add(info.name);
    else this.#suspected.delete(info.name);
    if (!suspected || upTo < first) return NOTHING_REAPED;
    const requeued: RequeuedItem[] = [];
    let removed = 0;
    const handBack = async (seq: number): Promise<boolean> => {
      const item = await this.#bus.jsm.streams.getMessage(StreamName.Work, { seq });
      if (item === null || !subjectMatches(filter, item.subject)) return false;
      if (seq > requeueUpTo || requeuesOf(item) >= MAX_REQUEUES) {
        if (await deleteWorkItem(this.#bus, seq)) removed++;
        return true;
      }
      const copy = await requeueWorkItem(this.#bus, item);
      if (copy !== undefined) requeued.push({ seq, subject: item.subject, copy });
      return true;
    };
    let found = headMayBeLeftover && (await handBack(first)) ? 1 : 0;
    const from = headMayBeLeftover ? first + 1 : first;
    for (let seq = from; seq <= upTo && found < leftovers; seq++) {
      if (await handBack(seq)) found++;
    }
    return { requeued, removed };
  }
}
