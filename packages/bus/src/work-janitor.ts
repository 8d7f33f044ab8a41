import { silentLogger, type Logger } from '@plugline/telemetry';
import type { Bus } from './connection.js';
import { StreamName } from './names.js';
import type { StuckWorkOptions } from './stuck-work.js';
import { ReapRefusedError, RefusalLatch } from './work-items.js';
import { SequenceGap } from './sequence-gap.js';
import { logSequenceGapClosed, logWorkRepairs, WorkQueueRepair } from './work-repair.js';

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
 * The cleanup identity's loop: repairs every consumer of the work stream every `intervalMs`
 * ({@link WorkQueueRepair}: the stream's sequence moved past a consumer a crash left it behind,
 * the items the server counts done and keeps, and those it holds and does not deliver,
 * requeued), and moves the event stream's sequence past its durable consumers the same way
 * ({@link SequenceGap}). Run it on a connection as `plugline-janitor` (`deploy/nats/plugline.conf`), the one
 * user that may read, delete and requeue work items by sequence, so that no service needs that
 * right. Its checks run more often than a stage's own (every ack wait), so it repairs before a
 * stage's own check would try and be refused.
 */
export function startWorkJanitor(bus: Bus, options: WorkJanitorOptions = {}): WorkJanitor {
  const log = options.logger ?? silentLogger();
  const repair = new WorkQueueRepair(bus, options);
  const eventsGap = new SequenceGap(bus, StreamName.Events);
  const eventsRefusal = new RefusalLatch();
  let checking: Promise<void> | undefined;
  const check = async (): Promise<void> => {
    try {
      // The listing is each consumer's info: the repairs read it, not the server again.
      for await (const info of bus.jsm.consumers.list(StreamName.Work)) {
        logWorkRepairs(log, info.name, await repair.check(info));
      }
      // The event stream's durable consumer (the status projector) can be left ahead too. A
      // server whose configuration predates it refuses the listing: said once, then not asked.
      await eventsRefusal.run(async () => {
        for await (const info of bus.jsm.consumers.list(StreamName.Events)) {
          if (info.config.durable_name === undefined) continue;
          logSequenceGapClosed(log, StreamName.Events, info.name, await eventsGap.close(info));
        }
      }, undefined);
    } catch (err) {
      // Refused: that repair is not asked again, said once; else (no stream yet) try again.
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
