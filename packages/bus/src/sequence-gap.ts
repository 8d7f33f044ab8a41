import type { ConsumerInfo } from '@nats-io/jetstream';
import { EVENTS_PLACEHOLDER_SUBJECT, WORK_PLACEHOLDER_SUBJECT } from '@plugline/contracts';
import type { Bus } from './connection.js';
import { StreamName } from './names.js';
import { deleteStreamItem, RefusalLatch } from './work-items.js';

/** The streams with durable consumers, and the subject of each one's placeholders. */
const PLACEHOLDER_SUBJECTS = {
  [StreamName.Work]: WORK_PLACEHOLDER_SUBJECT,
  [StreamName.Events]: EVENTS_PLACEHOLDER_SUBJECT,
} as const;
export type ConsumedStream = keyof typeof PLACEHOLDER_SUBJECTS;

/** Placeholders published at once, each deleted once the server stored it. */
const PLACEHOLDERS_AT_ONCE = 256;

/** Placeholders one check publishes at most (a wider gap is closed by the next checks). */
const MAX_PLACEHOLDERS_PER_CHECK = 20_000;

/**
 * Moves a stream's sequence past what a durable consumer has delivered when a crash left the
 * stream behind it. nats-server 2.9 writes a stream's messages and its consumers' state lazily,
 * and after a `SIGKILL` the stream can come back without its last messages while a consumer
 * keeps a later state. New messages then take sequences at or below the consumer's delivered
 * sequence, which the server never delivers (it counts nothing pending), until the stream's
 * sequence passes it (a test on 2.9.10 shows it; later releases check a consumer against its
 * stream at start, 2.9 does not).
 *
 * Placeholders on the stream's placeholder subject (`WORK_PLACEHOLDER_SUBJECT`,
 * `EVENTS_PLACEHOLDER_SUBJECT`) fill the gap and are deleted as soon as they are stored; no stage
 * takes a work one, and the status projector skips an event one that a concurrent publisher
 * pushed past the consumer. What took a sequence in the gap before the check: a work item is
 * then the consumer's leftover, which `WorkQueueRepair` has {@link WorkLeftovers} requeue (not
 * delete); an event is not delivered to the projector, and the spec-watcher's resync repairs
 * what it carried (a volume not at its end is nudged again): at once when its projector's check
 * closed the gap, at the resync's period when another process's did. A placeholder a check left
 * behind (its process ended) is deleted by the next one.
 *
 * It reads, publishes and deletes by sequence, which under least-privilege users only the cleanup
 * identity may: the read (for placeholders left behind) comes first, so that a service (which
 * may publish events) is refused there, before it stores a placeholder it may not delete
 * ({@link RefusalLatch}).
 */
export class SequenceGap {
  readonly #bus: Bus;
  readonly #stream: ConsumedStream;
  readonly #subject: string;
  readonly #latch = new RefusalLatch();

  constructor(bus: Bus, stream: ConsumedStream = StreamName.Work) {
    this.#bus = bus;
    this.#stream = stream;
    this.#subject = PLACEHOLDER_SUBJECTS[stream];
  }

  /** The server refused the calls: this no longer checks. */
  get refused(): boolean {
    return this.#latch.refused;
  }

  /**
   * One check of `consumer` (its name, or its info when the caller has read it); resolves with
   * how many placeholders it published (0 when the stream is not behind the consumer).
   */
  close(consumer: string | ConsumerInfo): Promise<number> {
    return this.#latch.run(() => this.#close(consumer), 0);
  }

  async #close(consumer: string | ConsumerInfo): Promise<number> {
    const { jsm, js } = this.#bus;
    const info =
      typeof consumer === 'string' ? await jsm.consumers.info(this.#stream, consumer) : consumer;
    const delivered = info.delivered.stream_seq;
    const { state } = await jsm.streams.info(this.#stream, { subjects_filter: this.#subject });
    let last = state.last_seq;
    // Looking for placeholders left behind reads by subject first: before a service that may
    // not delete them publishes one.
    const leftBehind = (state.subjects?.[this.#subject] ?? 0) > 0;
    if (leftBehind || last < delivered) await this.#deleteLeftPlaceholders();
    let published = 0;
    while (last < delivered && published < MAX_PLACEHOLDERS_PER_CHECK) {
      const count = Math.min(delivered - last, PLACEHOLDERS_AT_ONCE);
      const acks = await Promise.all(
        Array.from({ length: count }, () => js.publish(this.#subject)),
      );
      await Promise.all(acks.map((ack) => deleteStreamItem(this.#bus, this.#stream, ack.seq)));
      published += count;
      last = Math.max(last, ...acks.map((ack) => ack.seq));
    }
    return published;
  }

  /** Deletes the placeholders a check stopped before deleting (its process ended). */
  async #deleteLeftPlaceholders(): Promise<void> {
    for (;;) {
      const left = await this.#bus.jsm.streams.getMessage(this.#stream, {
        last_by_subj: this.#subject,
      });
      if (left === null || !(await deleteStreamItem(this.#bus, this.#stream, left.seq))) return;
    }
  }
}
