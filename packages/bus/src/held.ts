import { BoundedMap } from './bounded-map.js';

/** Items remembered at most (one per slot and parked or retrying unit; more is forgotten). */
const MAX_ITEMS = 20_000;

/**
 * The work items this process holds, by stream sequence: being handled (or waiting for a slot),
 * or sent back with a delay (a retry's backoff, a wait's recheck) that has not yet run out. Such
 * an item keeps its consumer's ack floor where it is, and is not one the server forgot to
 * deliver; {@link StuckWork} leaves it alone (requeued, a retrying item would start its backoff
 * and its count of attempts again).
 */
export class HeldItems {
  /** By sequence: when the item is due back (epoch ms), or infinity while in hand. */
  readonly #items = new BoundedMap<number, number>(MAX_ITEMS);
  /** Beyond its due time an item may come back this late and still count as held. */
  readonly #graceMs: number;

  constructor(graceMs: number) {
    this.#graceMs = graceMs;
  }

  /** The item was delivered here. */
  inHand(seq: number): void {
    this.#items.set(seq, Number.POSITIVE_INFINITY);
  }

  /** The item was sent back, due again in `delayMs`. */
  sentBack(seq: number, delayMs: number): void {
    this.#items.set(seq, Date.now() + delayMs);
  }

  /** The item was acknowledged or terminated. */
  done(seq: number): void {
    this.#items.delete(seq);
  }

  /** What this process knows of the item: in hand, or due back at a time; undefined if nothing. */
  describe(seq: number): string | undefined {
    const due = this.#items.peek(seq);
    if (due === undefined) return undefined;
    return due === Number.POSITIVE_INFINITY ? 'in hand' : `due back ${new Date(due).toISOString()}`;
  }

  /** Whether this process holds the item, or sent it back and it is not yet overdue. */
  holds(seq: number): boolean {
    const due = this.#items.peek(seq);
    if (due === undefined) return false;
    if (due + this.#graceMs > Date.now()) return true;
    this.#items.delete(seq);
    return false;
  }
}
