/**
 * Coalesces the informer nudges of one VMI. A burst of changes on one VMI (75 volumes moving
 * through their phases) would otherwise queue one work item per change, each a full reconcile
 * under the VMI's lease, one after the other. A reconcile reads the caches when it starts, so one
 * nudge that has not been observed yet covers every change seen before that moment: while one of
 * ours is outstanding, further changes only mark the VMI dirty.
 *
 * Nothing is lost:
 * - a reconcile of the VMI starting in this process (`observed`) reads a cache that already holds
 *   every change this process saw, so it clears the outstanding nudge and the dirty mark;
 * - when no such reconcile starts within `outstandingMs` (another replica took the nudge, or the
 *   publish failed), a dirty VMI is nudged again.
 */
export interface NudgeGateOptions<T> {
  /** Publishes one nudge; a rejection makes the VMI dirty again (it is retried after `outstandingMs`). */
  publish: (nudge: T) => Promise<unknown>;
  /** How long a published nudge may wait for a local reconcile before a dirty VMI is nudged again. */
  outstandingMs: number;
  now?: () => number;
}

interface Entry<T> {
  /** When the outstanding nudge was published. */
  since: number;
  /** The latest change not covered by a reconcile yet. */
  dirty: T | undefined;
  timer: NodeJS.Timeout | undefined;
}

export class NudgeGate<T> {
  readonly #o: NudgeGateOptions<T>;
  readonly #entries = new Map<string, Entry<T>>();
  readonly #now: () => number;
  #closed = false;

  constructor(options: NudgeGateOptions<T>) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** A change of the VMI `key`: nudges at once unless a nudge of ours is still outstanding. */
  offer(key: string, nudge: T): void {
    if (this.#closed) return;
    const entry = this.#entries.get(key);
    if (entry === undefined) {
      this.#send(key, nudge);
      return;
    }
    entry.dirty = nudge;
    entry.timer ??= this.#schedule(key, entry);
  }

  /** A reconcile of `key` is reading the caches now: everything offered so far is covered. */
  observed(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    clearTimeout(entry.timer);
    this.#entries.delete(key);
  }

  /** VMIs with a nudge outstanding (for tests and metrics). */
  outstanding(): number {
    return this.#entries.size;
  }

  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) clearTimeout(entry.timer);
    this.#entries.clear();
  }

  #send(key: string, nudge: T): void {
    const entry: Entry<T> = { since: this.#now(), dirty: undefined, timer: undefined };
    this.#entries.set(key, entry);
    this.#o.publish(nudge).catch(() => {
      // Not published: the change must still reach a reconcile.
      if (this.#entries.get(key) !== entry) return;
      entry.dirty ??= nudge;
      entry.timer ??= this.#schedule(key, entry);
    });
  }

  #schedule(key: string, entry: Entry<T>): NodeJS.Timeout {
    const wait = Math.max(0, entry.since + this.#o.outstandingMs - this.#now());
    const timer = setTimeout(() => {
      if (this.#closed || this.#entries.get(key) !== entry) return;
      this.#entries.delete(key);
      if (entry.dirty !== undefined) this.#send(key, entry.dirty);
    }, wait);
    timer.unref();
    return timer;
  }
}
