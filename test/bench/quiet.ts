/**
 * Waiting for the stack to be quiet before a measurement, by polling for what quiet means for
 * it: no work item left for any stage (before a burst), or every process's RSS no longer moving
 * (before a memory figure). Each gives up after its timeout, says so, and lets the run go on: a
 * benchmark reports what it found.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { StreamName } from '@plugline/bus';
import { waitFor, WaitTimeoutError } from '@plugline/testkit';
import { cpuOf, rssOf, type ProcRef } from './procs.js';

type Log = (msg: string) => void;

/** Work-stream reads: rare enough not to load NATS during a burst's tail. */
const DRAIN_POLL_MS = 200;
/** Two RSS samples this far apart that differ by at most {@link RSS_STEADY_MIB} make it steady. */
const RSS_SAMPLE_MS = 500;
const RSS_STEADY_MIB = 1;
/** A process whose RSS keeps creeping (GC churn, a leak) is measured anyway after this long. */
const RSS_SETTLE_TIMEOUT_MS = 30_000;
/** Two CPU samples this far apart between which the stack used at most {@link IDLE_CPU_SHARE}. */
const CPU_SAMPLE_MS = 250;
/** Of one core, over all the stack's processes: timers, lease renewals and scrapes only. */
const IDLE_CPU_SHARE = 0.1;
const CPU_SETTLE_TIMEOUT_MS = 30_000;

/**
 * Runs `waitFor(check)`; when it times out only because the condition did not hold (no error
 * from the check), logs `gaveUp()` and resolves instead of throwing.
 */
async function waitOrGoOn(
  check: () => Promise<boolean> | boolean,
  options: { timeout: number; interval: number; description: string },
  log: Log,
  gaveUp: () => string,
): Promise<void> {
  try {
    await waitFor(check, options);
  } catch (err) {
    if (!(err instanceof WaitTimeoutError) || err.cause !== undefined) throw err;
    log(gaveUp());
  }
}

/** Waits until the work stream is empty (every stage idle), or gives up after `timeoutMs`. */
export async function workDrained(natsUrl: string, timeoutMs: number, log: Log): Promise<void> {
  const nc = await connect({ servers: natsUrl, name: 'plugline-bench-drain' });
  try {
    const jsm = await jetstreamManager(nc);
    let left = Number.POSITIVE_INFINITY;
    await waitOrGoOn(
      async () => {
        left = (await jsm.streams.info(StreamName.Work)).state.messages;
        return left === 0;
      },
      { timeout: timeoutMs, interval: DRAIN_POLL_MS, description: 'an empty work stream' },
      log,
      () => `work stream not drained after ${timeoutMs} ms (${left} messages left); going on`,
    );
  } finally {
    await nc.close();
  }
}

/**
 * Waits until no process's RSS moved by more than 1 MiB over half a second: what a memory figure
 * (idle, tracking, after unplug) is read after. Work items still parked in the stream (a nak
 * with a delay) do not hold it up: they cost no memory while they wait. Logs how long it took.
 */
export async function rssSteady(procs: readonly ProcRef[], log: Log): Promise<void> {
  const t0 = Date.now();
  let last: Record<string, number> | undefined;
  const steady = (): boolean => {
    const now = rssOf(procs);
    const before = last;
    last = now;
    // The first sample has nothing to compare with. A process gone (NaN) does not hold it up.
    return (
      before !== undefined &&
      procs.every((p) => !(Math.abs((now[p.id] ?? 0) - (before[p.id] ?? 0)) > RSS_STEADY_MIB))
    );
  };
  await waitOrGoOn(
    steady,
    { timeout: RSS_SETTLE_TIMEOUT_MS, interval: RSS_SAMPLE_MS, description: 'steady RSS' },
    log,
    () => `RSS still moving after ${RSS_SETTLE_TIMEOUT_MS} ms; measuring anyway`,
  );
  log(`RSS steady after ${Date.now() - t0} ms`);
}

/**
 * Waits until the stack's processes together used at most a tenth of a core over a quarter of a
 * second: what a throughput round starts after. What the stack still does for the setup before it
 * (informers digesting hundreds of new VMIs, PVCs being bound, the previous round's tail) would
 * otherwise be billed to the round's operations. Logs how long it took.
 */
export async function cpuQuiet(procs: readonly ProcRef[], log: Log): Promise<void> {
  const t0 = Date.now();
  let last: { at: number; cpu: Record<string, number> } | undefined;
  let share = Number.NaN;
  const quiet = (): boolean => {
    const now = { at: performance.now(), cpu: cpuOf(procs) };
    const before = last;
    last = now;
    if (before === undefined) return false;
    const usedS = procs.reduce((sum, p) => {
      const used = (now.cpu[p.id] ?? 0) - (before.cpu[p.id] ?? 0);
      return used > 0 ? sum + used : sum; // a process gone (NaN) does not hold it up
    }, 0);
    share = usedS / ((now.at - before.at) / 1000);
    return share <= IDLE_CPU_SHARE;
  };
  await waitOrGoOn(
    quiet,
    { timeout: CPU_SETTLE_TIMEOUT_MS, interval: CPU_SAMPLE_MS, description: 'an idle stack' },
    log,
    () =>
      `the stack still used ${share.toFixed(2)} of a core after ${CPU_SETTLE_TIMEOUT_MS} ms; measuring anyway`,
  );
  log(`stack idle (${share.toFixed(2)} of a core) after ${Date.now() - t0} ms`);
}
