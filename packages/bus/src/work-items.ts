import { headers as natsHeaders, PermissionViolationError, type MsgHdrs } from '@nats-io/nats-core';
import type { ConsumerInfo, StoredMsg } from '@nats-io/jetstream';
import { PluglineError } from '@plugline/contracts';
import type { Bus } from './connection.js';
import { StreamName } from './names.js';

// What the repairs of a stream's items share (WorkLeftovers, StuckWork, SequenceGap): reading,
// deleting and requeueing an item by sequence, and the refusal of those calls.

/**
 * The NATS user may not read or delete a stream's items by sequence (or publish the copies and
 * placeholders that go with it). Such a get or delete cannot be scoped to one stage's subjects,
 * so `deploy/nats/plugline.conf` grants it only to the cleanup identity (`plugline-janitor`),
 * not to the services.
 */
export class ReapRefusedError extends PluglineError {
  override name = 'ReapRefusedError';
  constructor(options?: ErrorOptions) {
    super('ReapRefused', 'this NATS user may not read or delete stream items by sequence', options);
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

/** A work consumer by name, or its info when the caller has read it already (one read a check). */
export type WorkConsumer = string | ConsumerInfo;

/** The info of a work consumer, read unless the caller has it. */
export async function consumerInfo(bus: Bus, consumer: WorkConsumer): Promise<ConsumerInfo> {
  return typeof consumer === 'string'
    ? bus.jsm.consumers.info(StreamName.Work, consumer)
    : consumer;
}

/** How many items the work stream holds on a filter, and its first and last sequence. */
export interface HeldOnFilter {
  held: number;
  first: number;
  last: number;
}

/** What the work stream holds on `filter` ({@link HeldOnFilter}). */
export async function heldOnFilter(bus: Bus, filter: string): Promise<HeldOnFilter> {
  const { state } = await bus.jsm.streams.info(StreamName.Work, { subjects_filter: filter });
  const held = Object.values(state.subjects ?? {}).reduce((a, n) => a + n, 0);
  return { held, first: state.first_seq, last: state.last_seq };
}

/** Deletes one work item; false when it is gone already (another reaper was first). */
export function deleteWorkItem(bus: Bus, seq: number): Promise<boolean> {
  return deleteStreamItem(bus, StreamName.Work, seq);
}

/** Deletes one message of `stream`; false when it is gone already. */
export async function deleteStreamItem(bus: Bus, stream: string, seq: number): Promise<boolean> {
  try {
    return await bus.jsm.streams.deleteMessage(stream, seq, false);
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

/** The header counting how often an item's copies were requeued. */
export const REQUEUES_HEADER = 'Plugline-Requeues';

/**
 * Copies of one item requeued at most: a handler that keeps an item past the watch without its
 * process saying so (another replica's, under the janitor) gets that many early passes, and a
 * failing one that many fresh starts of its attempts, not one every watch for ever.
 */
export const MAX_REQUEUES = 3;

/** An item requeued: its sequence and subject, and its copy's sequence. */
export interface RequeuedItem {
  readonly seq: number;
  readonly subject: string;
  readonly copy: number;
}

/** How often `item`'s copies were requeued before (0 for an original). */
export function requeuesOf(item: StoredMsg): number {
  const count = Number.parseInt(item.header.get(REQUEUES_HEADER), 10);
  return Number.isSafeInteger(count) && count > 0 ? count : 0;
}

/**
 * Publishes a copy of a work item under a new sequence, which the server delivers, then deletes
 * the item; resolves with the copy's sequence, or undefined when another checker deleted the
 * item first (the copy is then that checker's: copies carry the original's `Nats-Msg-Id` with
 * the sequence they replace, so two checkers publish one).
 */
export async function requeueWorkItem(bus: Bus, item: StoredMsg): Promise<number | undefined> {
  const headers = copiedHeaders(item.header);
  headers.set(REQUEUES_HEADER, String(requeuesOf(item) + 1));
  const original = item.header.get('Nats-Msg-Id');
  const ack = await bus.js.publish(item.subject, item.data, {
    headers,
    msgID: `${original === '' ? 'work' : original}~requeued@${item.seq}`,
  });
  return (await deleteWorkItem(bus, item.seq)) ? ack.seq : undefined;
}

/** An item's headers for its copy: all but its message id, publish expectations and count. */
function copiedHeaders(original: MsgHdrs): MsgHdrs {
  const copy = natsHeaders();
  for (const key of original.keys()) {
    if (key === 'Nats-Msg-Id' || key === REQUEUES_HEADER || key.startsWith('Nats-Expected-')) {
      continue;
    }
    for (const value of original.values(key)) copy.append(key, value);
  }
  return copy;
}
