import type { Logger } from 'pino';

/**
 * A level-triggered work queue: a key is processed by one run at a time; a key added while it
 * runs is processed again after. `drain()` waits for everything in flight.
 */
export class WorkQueue {
  private readonly dirty = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  private stopped = false;

  constructor(
    private readonly handler: (key: string) => Promise<void>,
    private readonly log: Logger,
  ) {}

  add(key: string): void {
    if (this.stopped) return;
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    const done = this.run(key);
    this.running.set(key, done);
  }

  private async run(key: string): Promise<void> {
    await Promise.resolve();
    try {
      await this.handler(key);
    } catch (err) {
      this.log.warn({ err, key }, 'reconcile failed');
    } finally {
      this.running.delete(key);
      if (this.dirty.delete(key)) this.add(key);
    }
  }

  async drain(): Promise<void> {
    this.stopped = true;
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }
}

/** A sleep that `cancelAll()` ends early (resolving false). */
export class Timers {
  private readonly pending = new Map<NodeJS.Timeout, (ok: boolean) => void>();

  sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.pending.delete(t);
        resolve(true);
      }, ms);
      this.pending.set(t, resolve);
    });
  }

  cancelAll(): void {
    for (const [t, resolve] of this.pending) {
      clearTimeout(t);
      resolve(false);
    }
    this.pending.clear();
  }
}
