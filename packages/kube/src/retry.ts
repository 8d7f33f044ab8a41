import { setTimeout as sleep } from 'node:timers/promises';
import { ConflictError } from '@plugline/contracts';

/** How {@link retryOnConflict} spaces its attempts (client-go's `wait.Backoff`). */
export interface RetryOptions {
  /** Total attempts, the first included (default 5). */
  steps?: number;
  /** Delay before the second attempt, in ms (default 10). */
  baseMs?: number;
  /** Multiplier per attempt (default 1: a constant delay, as client-go's `DefaultRetry`). */
  factor?: number;
  /** Random extra delay, as a fraction of the delay (default 0.1). */
  jitter?: number;
  /** Upper bound of one delay, in ms (default 1000). */
  capMs?: number;
}

/** client-go's `retry.DefaultRetry`: 5 steps, 10 ms, factor 1, jitter 0.1. */
export const DEFAULT_RETRY: Required<RetryOptions> = {
  steps: 5,
  baseMs: 10,
  factor: 1,
  jitter: 0.1,
  capMs: 1000,
};

/**
 * Runs `fn` and runs it again, after a short backoff, each time it fails with a
 * {@link ConflictError} (409, or a failed JSON-patch `test`), up to `steps` attempts in all;
 * the last conflict is rethrown. Any other error is rethrown at once. `fn` must re-read the
 * object it modifies on every call, like client-go's `retry.RetryOnConflict`.
 *
 * @param fn - receives the attempt number, starting at 1.
 */
export async function retryOnConflict<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const o = { ...DEFAULT_RETRY, ...options };
  let delay = o.baseMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!(err instanceof ConflictError) || attempt >= o.steps) throw err;
    }
    const wait = Math.min(o.capMs, delay) * (1 + Math.random() * o.jitter);
    await sleep(wait);
    delay *= o.factor;
  }
}
