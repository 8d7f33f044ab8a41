// plugctl's entry point: parse nothing here; hand argv, the environment and Ctrl-C to `run`.
import { run } from './cli.js';
import { processIo } from './io.js';

/**
 * Signals within this long of the first are the same interruption arriving twice: `plugctl up`'s
 * re-exec parent forwards it to its child, and a process manager (systemd's default, `pkill`)
 * signals every process at once. Counted as a second Ctrl-C, the child would quit before it had
 * stopped its stack.
 */
const SAME_INTERRUPTION_MS = 1000;

const controller = new AbortController();
let firstSignalAt: number | undefined;
const onSignal = (): void => {
  const now = Date.now();
  if (firstSignalAt === undefined) {
    firstSignalAt = now;
    controller.abort();
    return;
  }
  // A second, later Ctrl-C: stop waiting for a clean stop.
  if (now - firstSignalAt > SAME_INTERRUPTION_MS) process.exit(130);
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const code = await run(process.argv.slice(2), processIo(process.env, controller.signal));
process.off('SIGINT', onSignal);
process.off('SIGTERM', onSignal);
process.exitCode = code;
// NATS and HTTP handles are closed by the commands; exit promptly whatever lingers.
setImmediate(() => process.exit(code));
