/**
 * A counting semaphore: at most `size` holders at once; the others wait in arrival order.
 * What bounds a stage's work items in flight, and the projector's VMIs being written.
 */
export class Slots {
  #free: number;
  readonly #waiters: (() => void)[] = [];

  constructor(size: number) {
    this.#free = Math.max(1, size);
  }

  /** Resolves once a slot is this caller's. */
  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** Gives a slot back: to the longest waiter, if any. */
  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }
}
