import { silentLogger, type Logger } from '@plugline/telemetry';
import type { Bus } from './connection.js';
import { StreamName } from './names.js';
import { StuckWork, type RequeuedItem, type StuckWorkOptions } from './stuck-work.js';
import { ReapRefusedError, WorkLeftovers } from './work-reaper.js';

/** With `stuckAfterMs` for every consumer ({@link StuckWorkOptions}). */
export interface WorkJanitorOptions extends StuckWorkOptions {
  /** Between checks of every consumer (default 5000; a leftover goes within two). */
  intervalMs?: number;
  logger?: Logger;
}

/** A running {@link startWorkJanitor}. */
export interface WorkJanitor extends AsyncDisposable {
  /** Resolves after the check in progress, if any; no check starts after. Idempotent. */
  stop(): Promise<void>;
}

/**
 * The cleanup identity's loop: checks every consumer of the work stream every `intervalMs`,
 * removes leftovers ({@link WorkLeftovers}) and requeues what the server holds and does not
 * deliver ({@link StuckWork}). Run it on a connection as `plugline-janitor`
 * (`deploy/nats/plugline.conf`), the one user that may read, delete and requeue work items by
 * sequence, so that no service needs that right. Its checks run more often than a stage's own (every ack
 * wait), so it removes a leftover before a stage's reaper would try and be refused.
 */
export function startWorkJanitor(bus: Bus, options: WorkJanitorOptions = {}): WorkJanitor {
  const log = options.logger ?? silentLogger();
  const leftovers = new WorkLeftovers(bus);
  const stuck = new StuckWork(bus, options);
  let checking: Promise<void> | undefined;
  const check = async (): Promise<void> => {
    try {
      let reaped = 0;
      const requeued: RequeuedItem[] = [];
      // The listing is each consumer's info: both repairs read it, not the server again.
      for await (const info of bus.jsm.consumers.list(StreamName.Work)) {
        reaped += await leftovers.reap(info);
        requeued.push(...(await stuck.requeue(info)));
      }
      if (reaped > 0) log.warn({ reaped }, 'removed finished work items the server kept');
      if (requeued.length > 0) {
        log.warn({ requeued }, 'requeued work items the server held and did not deliver');
      }
    } catch (err) {
      // Refused: the loop is inert from now on, say so once; else (no stream yet) try again.
      if (err instanceof ReapRefusedError) log.error({ err }, 'the work janitor is refused');
      else log.debug({ err }, 'checking the work queue for leftovers');
    }
  };
  const timer = setInterval(() => {
    // A slow check (a long scan) is not overlapped by the next one.
    checking ??= check().finally(() => (checking = undefined));
  }, options.intervalMs ?? 5000);
  timer.unref();
  const stop = async (): Promise<void> => {
    clearInterval(timer);
    await checking;
  };
  return { stop, [Symbol.asyncDispose]: stop };
}
