import { PermissionViolationError } from '@nats-io/nats-core';
import type { ConsumerInfo } from '@nats-io/jetstream';
import { PluglineError } from '@plugline/contracts';
import type { Bus } from './connection.js';
import { StreamName } from './names.js';

/**
 * The NATS user may not read or delete work items by sequence. Such a get or delete cannot be
 * scoped to one stage's subjects, so `deploy/nats/plugline.conf` grants it only to the cleanup
 * identity (`plugline-janitor`), not to the services.
 */
export class ReapRefusedError extends PluglineError {
  override name = 'ReapRefusedError';
  constructor(options?: ErrorOptions) {
    super(
      'ReapRefused',
      `this NATS user may not read or delete ${StreamName.Work} items by sequence`,
      options,
    );
  }
}

/** True when `err` (or one of its causes) is the server refusing a publish or subscribe. */
function isPermissionViolation(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof PermissionViolationError) return true;
  }
  return false;
}

/**
 * Runs by-sequence repairs until the server refuses one: that refusal becomes one
 * {@link ReapRefusedError}, and every later run does nothing (asking again would only be refused
 * again, and logged by the server, every check).
 */
export class RefusalLatch {
  #refused = false;

  get refused(): boolean {
    return this.#refused;
  }

  /** Resolves with what `repair` does, or `none` once refused. */
  async run<T>(repair: () => Promise<T>, none: T): Promise<T> {
    if (this.#refused) return none;
    try {
      return await repair();
    } catch (err) {
      if (!isPermissionViolation(err)) throw err;
      this.#refused = true;
      throw new ReapRefusedError({ cause: err });
    }
  }
}

/**
 * Finds and removes the work items nats-server 2.9 keeps after their consumer is done with them
 * (after a crash its store still holds items whose removal was lost; after a cluster node comes
 * back, a new stream leader may never have seen the acknowledgement remove them). Such an item
 * is never delivered again and would sit in the work queue for ever.
 *
 * The stream holds, for a consumer's filter, its pending and unacknowledged items and nothing
 * else (one consumer per filter on a work queue); when it holds more, the extra ones are
 * acknowledged leftovers, all at or below the ack floor (or the delivered sequence when nothing
 * is outstanding). They are deleted once two checks in a row saw them: two reads a moment apart
 * can count an item acknowledged in between. So is the stream's first item when it is the
 * consumer's and at or below that sequence, whatever the count says (it can miss it, see #reap).
 * Looked up by sequence (the subject lookups are what 2.9 loses), and deleted one by one (a
 * filtered purge on 2.9 moves every consumer past the purged sequence).
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

  /** One check of `consumer`'s items; resolves with how many leftovers it removed. */
  reap(consumer: WorkConsumer): Promise<number> {
    return this.#latch.run(() => this.#reap(consumer), 0);
  }

  async #reap(consumer: WorkConsumer): Promise<number> {
    const info = await consumerInfo(this.#bus, consumer);
    const filter = info.config.filter_subject;
    if (filter === undefined || filter === '') return 0;
    const outstanding = info.num_pending + info.num_ack_pending;
    const upTo = doneUpTo(info);
    const { held, first: firstSeq } = await heldOnFilter(this.#bus, filter);
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
    if (!suspected || upTo < first) return 0;
    let reaped = headMayBeLeftover && (await this.#reapIfOurs(filter, first)) ? 1 : 0;
    const from = headMayBeLeftover ? first + 1 : first;
    for (let seq = from; seq <= upTo && reaped < leftovers; seq++) {
      if (await this.#reapIfOurs(filter, seq)) reaped++;
    }
    return reaped;
  }

  /** Deletes the item at `seq` if it is on `filter`; false when it is not, or is gone already. */
  async #reapIfOurs(filter: string, seq: number): Promise<boolean> {
    const reply = await this.#bus.nc.request(
      `$JS.API.STREAM.MSG.GET.${StreamName.Work}`,
      JSON.stringify({ seq }),
      { timeout: 5000 },
    );
    const subject = reply.json<{ message?: { subject: string } }>().message?.subject;
    if (subject === undefined || !subjectMatches(filter, subject)) return false;
    return deleteWorkItem(this.#bus, seq);
  }
}

/** A work consumer by name, or its info when the caller has read it already (one read a check). */
export type WorkConsumer = string | ConsumerInfo;

/** The info of a work consumer, read unless the caller has it. */
export async function consumerInfo(bus: Bus, consumer: WorkConsumer): Promise<ConsumerInfo> {
  return typeof consumer === 'string'
    ? bus.jsm.consumers.info(StreamName.Work, consumer)
    : consumer;
}

/** How many items the work stream holds on `filter`, and its first and last sequence. */
export async function heldOnFilter(
  bus: Bus,
  filter: string,
): Promise<{ held: number; first: number; last: number }> {
  const { state } = await bus.jsm.streams.info(StreamName.Work, { subjects_filter: filter });
  const held = Object.values(state.subjects ?? {}).reduce((a, n) => a + n, 0);
  return { held, first: state.first_seq, last: state.last_seq };
}

/** Deletes one work item; false when it is gone already (another reaper was first). */
export async function deleteWorkItem(bus: Bus, seq: number): Promise<boolean> {
  try {
    return await bus.jsm.streams.deleteMessage(StreamName.Work, seq, false);
  } catch (err) {
    if (isPermissionViolation(err)) throw err;
    return false;
  }
}

/**
 * The stream sequence up to which a work consumer is done with every item its filter takes: its
 * ack floor, or what it delivered when nothing is outstanding (the floor stays behind while the
 * next items are other consumers').
 */
export function doneUpTo(info: ConsumerInfo): number {
  const outstanding = info.num_pending + info.num_ack_pending;
  return outstanding === 0 ? info.delivered.stream_seq : info.ack_floor.stream_seq;
}

/** Whether a NATS subject matches a filter with `*` and `>` wildcards. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const t = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return t.length > i;
    if (i >= t.length || (f[i] !== '*' && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}
