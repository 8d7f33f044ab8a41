import { pino, type DestinationStream } from 'pino';

/** Lines are written once this much is buffered ... */
const BUFFER_BYTES = 8 * 1024;
/** ... or this long after the first line of a batch, whichever comes first. */
const FLUSH_AFTER_MS = 50;

type SonicBoom = ReturnType<typeof pino.destination>;

/** A log destination that batches lines; see {@link bufferedDestination}. */
export interface BufferedDestination extends DestinationStream {
  /** Writes every buffered line now. */
  flushSync(): void;
  /** The same, then calls `cb` (what pino's `logger.flush(cb)` calls). */
  flush(cb?: (err?: Error) => void): void;
}

// Every live buffered destination, flushed by one `exit` listener (not one listener each).
const live = new Set<SonicBoom>();
let exitHooked = false;

function flushAllOnExit(): void {
  for (const boom of live) {
    try {
      boom.flushSync();
    } catch {
      // A closed or broken pipe: nothing more can be written.
    }
  }
}

/**
 * A destination on a file descriptor (default stdout) that batches log lines instead of writing
 * each one by itself: a service logs several lines per operation, and one write(2) per line was
 * the largest single cost in its CPU profile. A batch is written when it reaches
 * {@link BUFFER_BYTES}, {@link FLUSH_AFTER_MS} after its first line, or on process exit
 * (`process.exit`, the end of the event loop, an uncaught exception), so a SIGTERM whose handler
 * ends in `process.exit` loses no line, and lines are never split: a batch holds whole lines and
 * is written synchronously. Only a SIGKILL can lose the last {@link FLUSH_AFTER_MS}.
 */
export function bufferedDestination(fd = 1): BufferedDestination {
  // Synchronous writes of whole batches: no write is ever in flight when the process exits.
  const boom = pino.destination({ dest: fd, sync: true, minLength: BUFFER_BYTES });
  live.add(boom);
  boom.on('close', () => live.delete(boom));
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', flushAllOnExit);
  }
  let timer: NodeJS.Timeout | undefined;
  const flushSync = (): void => {
    clearTimeout(timer);
    timer = undefined;
    boom.flushSync();
  };
  return {
    write(line: string): void {
      boom.write(line);
      // One timer per batch, armed by its first line; unref'd so it never keeps a process up.
      if (timer === undefined) {
        timer = setTimeout(() => {
          timer = undefined;
          boom.flush();
        }, FLUSH_AFTER_MS);
        timer.unref();
      }
    },
    flushSync,
    flush(cb?: (err?: Error) => void): void {
      try {
        flushSync();
      } catch (err) {
        cb?.(err as Error);
        return;
      }
      cb?.();
    },
  };
}
