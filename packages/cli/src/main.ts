// plugctl's entry point: parse nothing here; hand argv, the environment and Ctrl-C to `run`.
import { run } from './cli.js';
import { processIo } from './io.js';

const controller = new AbortController();
let interrupts = 0;
const onSignal = (): void => {
  interrupts += 1;
  if (interrupts > 1) process.exit(130);
  controller.abort();
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const code = await run(process.argv.slice(2), processIo(process.env, controller.signal));
process.off('SIGINT', onSignal);
process.off('SIGTERM', onSignal);
process.exitCode = code;
// NATS and HTTP handles are closed by the commands; exit promptly whatever lingers.
setImmediate(() => process.exit(code));
