import type { ConsumerMessages } from '@nats-io/jetstream';
import type { Logger } from '@plugline/telemetry';
import { abortableDelay } from './publish.js';

/** What {@link consumeUntilAborted} needs from its caller. */
export interface Consumption {
  /** The first consumption, opened by the caller (so a start that cannot consume fails). */
  readonly first: ConsumerMessages;
  /** Opens the consumption again. */
  open(): Promise<ConsumerMessages>;
  /** Handles one consumption's messages until it ends. */
  handle(messages: ConsumerMessages): Promise<void>;
  /** Told each consumption opened, and undefined while there is none (the caller's `bound()`). */
  current(messages: ConsumerMessages | undefined): void;
  /** Told each time a consumption ended while not aborted (a metric). */
  ended(): void;
  /** Aborted when the caller stops: no consumption is opened after that. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** What is consumed, for the logs (`the work stream`). */
  readonly what: string;
}

/**
 * Handles consumptions until `signal` aborts. The NATS client ends a consumption on its own at
 * times (a 400 from the server, a permission violation on its inbox) and nothing would pull
 * again: the queue would grow while the service looked healthy. So a consumption that ends while
 * the caller runs is opened again, after 1 s, doubling to 30 s while opening fails.
 */
export async function consumeUntilAborted(c: Consumption): Promise<void> {
  let messages: ConsumerMessages | undefined = c.first;
  for (let failures = 0; ; ) {
    if (messages !== undefined) {
      await c.handle(messages);
      if (c.signal.aborted) return;
      messages = undefined;
      c.current(undefined);
      c.ended();
      c.log.warn(`the consumption of ${c.what} ended while running; consuming again`);
    }
    await abortableDelay(Math.min(30_000, 1000 * 2 ** Math.min(failures, 5)), c.signal);
    if (c.signal.aborted) return;
    try {
      messages = await c.open();
      failures = 0;
      c.current(messages);
      // The caller's stop closed the consumption it saw, not one opened while it ran.
      if (c.signal.aborted) await messages.close();
    } catch (err) {
      failures += 1;
      c.log.warn({ err, failures }, `could not consume ${c.what} again; retrying`);
    }
  }
}
