/**
 * `pnpm soak`: the chaos workload in rounds until a deadline, to find what a single bounded run
 * does not. Each round sends random plug/unplug requests across the same VMIs while a disturbance
 * fires at random moments (nats-server SIGKILLed and started again on its store, a service
 * SIGKILLed and restarted, or every watch connection dropped), then waits for Plugline's
 * invariants (test/support/invariants.ts). It stops at the first round that does not settle,
 * printing what the chaos scenarios print (the volumes' histories, the held work), and exits 1.
 *
 *   pnpm soak -- --minutes 30 --disturb nats --busy 2
 *
 * `--busy N` runs N busy loops beside the stack, as other jobs on a shared machine would.
 * `--explain-after-s S` (default 10): a round whose volumes are not at rest S seconds after its
 * requests ended prints what is off and those volumes' histories, and goes on.
 * `PLUGLINE_CHAOS_KEEP_LOGS=<dir>` keeps the stack's logs; `--seed` replays a run's choices.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import {
  counterSum,
  disturbUntil,
  explainVolumes,
  metricsOf,
  randomOperations,
  seedVmis,
  seeded,
  ServiceTally,
  settle,
  startChaosStack,
  type ChaosFixture,
  type RunCounts,
} from '../chaos/workload.js';
import { percentiles } from '../bench/stats.js';
import { checkInvariants } from '../support/invariants.js';
import { dropConnections, waitFor } from '@plugline/testkit';

const Disturbance = { Nats: 'nats', Kill: 'kill', Watch: 'watch' } as const;
type Disturbance = (typeof Disturbance)[keyof typeof Disturbance];

interface SoakConfig {
  minutes: number;
  rounds: number;
  operations: number;
  vmis: number;
  parallel: number;
  disturb: Disturbance;
  perRound: number;
  settleS: number;
  busy: number;
  seed: number;
  explainAfterS: number;
}

function config(): SoakConfig {
  // `pnpm soak -- --minutes 5` passes the `--` on: drop it, or every flag would be a positional.
  const argv = process.argv.slice(2);
  const { values } = parseArgs({
    args: argv[0] === '--' ? argv.slice(1) : argv,
    options: {
      minutes: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '0' },
      ops: { type: 'string', default: '50' },
      vmis: { type: 'string', default: '7' },
      parallel: { type: 'string', default: '3' },
      disturb: { type: 'string', default: Disturbance.Nats },
      'per-round': { type: 'string', default: '3' },
      'settle-s': { type: 'string', default: '120' },
      busy: { type: 'string', default: '0' },
      'explain-after-s': { type: 'string', default: '10' },
      seed: { type: 'string', default: String(Date.now() % 100_000) },
    },
  });
  const int = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min)
      throw new Error(`--${name} must be a whole number ≥ ${min}`);
    return n;
  };
  const disturb = values.disturb as Disturbance;
  if (!Object.values(Disturbance).includes(disturb)) {
    throw new Error(`--disturb must be one of ${Object.values(Disturbance).join(', ')}`);
  }
  return {
    minutes: int('minutes', 1),
    rounds: int('rounds', 0),
    operations: int('ops', 1),
    vmis: int('vmis', 1),
    parallel: int('parallel', 1),
    disturb,
    perRound: int('per-round', 0),
    settleS: int('settle-s', 1),
    busy: int('busy', 0),
    seed: int('seed', 0),
    explainAfterS: int('explain-after-s', 1),
  };
}

/** One disturbance of the chosen kind, at a moment `disturbUntil` picks. */
function disturber(f: ChaosFixture, c: SoakConfig, random: () => number, tally: ServiceTally) {
  const port = Number(new URL(f.stack.apiUrl).port);
  return async (): Promise<void> => {
    if (c.disturb === Disturbance.Nats) {
      await f.nats!.restart('SIGKILL');
    } else if (c.disturb === Disturbance.Watch) {
      await dropConnections(port);
    } else {
      const services = f.stack.services;
      const victim = services[Math.floor(random() * services.length)]!;
      await tally.bank(victim.healthUrl);
      victim.kill('SIGKILL');
      await f.stack.restartService(victim.id);
    }
  };
}

/** CPU hogs beside the stack (each a process spinning for ever), stopped with the run. */
function busyLoops(count: number): ChildProcess[] {
  return Array.from({ length: count }, () =>
    spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
  );
}

/** Counters summed over the live services' `/metrics` (a killed service's are lost with it). */
async function liveCounters(f: ChaosFixture, names: readonly string[]) {
  const sums: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
  for (const s of f.stack.services) {
    const text = await metricsOf(s.healthUrl);
    for (const n of names) sums[n]! += counterSum(text, n);
  }
  return sums;
}

const seconds = (ms: number): string => (ms / 1000).toFixed(1);

/**
 * When every volume is where its spec wants it (the invariants without the work backlog), which
 * is what a user sees; a settle also waits for the work streams to drain, which can take a retry's
 * delay longer (an item a crash left behind comes back to find nothing to do). Undefined when
 * they did not hold within `timeoutMs` (the settle then fails too). A round still not at rest
 * after `explainAfterMs` prints what is off and the histories of the volumes it names, as a
 * failed round does: a slow round that ends up settling is otherwise gone without a trace.
 */
async function volumesConverged(
  f: ChaosFixture,
  timeoutMs: number,
  explain: { afterMs: number; log: (msg: string) => void },
): Promise<number | undefined> {
  const started = Date.now();
  let explained = false;
  const atRest = async () => {
    const report = await checkInvariants(f.stack).catch(() => undefined);
    if (report !== undefined && report.violations.length === 0) return Date.now();
    if (!explained && report !== undefined && Date.now() - started >= explain.afterMs) {
      explained = true;
      const violations = report.violations.join('\n');
      explain.log(`not at rest after ${seconds(Date.now() - started)} s:\n${violations}`);
      await explainVolumes(f, violations).catch((err: unknown) =>
        explain.log(`could not read the volumes' histories: ${String(err)}`),
      );
    }
    return undefined;
  };
  return waitFor(atRest, { timeout: timeoutMs, interval: 200 }).catch(() => undefined);
}

async function main(): Promise<number> {
  const c = config();
  const log = (msg: string) => console.log(`[soak ${new Date().toISOString()}] ${msg}`);
  log(`config ${JSON.stringify(c)}`);
  const random = seeded(c.seed);
  const tally = new ServiceTally();
  const hogs = busyLoops(c.busy);
  const f = await startChaosStack();
  const settleTimes: number[] = [];
  const convergeTimes: number[] = [];
  let failed = false;
  try {
    const vms = await seedVmis(f, 'soak', c.vmis);
    let deadline = Date.now() + c.minutes * 60_000;
    // Ctrl-C ends the run after the round in flight, which still settles and cleans up.
    process.once('SIGINT', () => {
      log('stopping after this round');
      deadline = 0;
    });
    const disturb = disturber(f, c, random, tally);
    for (let round = 1; Date.now() < deadline && (c.rounds === 0 || round <= c.rounds); round++) {
      const ops = randomOperations(f, vms, c.operations, c.parallel, random);
      const pace = { minMs: 500, maxMs: 2500, random, minimum: c.perRound };
      let done = 0;
      await disturbUntil(ops, pace, async () => {
        if (done >= c.perRound) return;
        await disturb();
        done++;
      });
      const counts: RunCounts = await ops;
      const sent = Date.now();
      // Settled means the volumes are at rest too, so this poll ends by the settle's end.
      const converged = volumesConverged(f, c.settleS * 1000, {
        afterMs: c.explainAfterS * 1000,
        log: (msg) => log(`round ${round}: ${msg}`),
      });
      try {
        await settle(f, { timeoutMs: c.settleS * 1000 });
      } catch (err) {
        log(`round ${round} did not settle within ${c.settleS} s: ${String(err)}`);
        failed = true;
        await converged;
        break;
      }
      const drained = Date.now() - sent;
      const volumes = ((await converged) ?? Date.now()) - sent;
      settleTimes.push(drained);
      convergeTimes.push(volumes);
      log(
        `round ${round}: ${counts.operations} requests (${counts.plugs} plugs, ${counts.unplugs} unplugs, ` +
          `${counts.rejected} refused), ${done} × ${c.disturb}, volumes at rest in ${seconds(volumes)} s, ` +
          `work drained in ${seconds(drained)} s`,
      );
    }
  } finally {
    const settled = percentiles(settleTimes);
    const atRest = percentiles(convergeTimes);
    const banked = await tally.total(f.stack.services).catch(() => undefined);
    const counters = await liveCounters(f, [
      'plugline_work_requeued_total',
      'plugline_consume_restarts_total',
      'plugline_consumer_stalls_total',
    ]);
    log(
      `summary ${JSON.stringify({
        seed: c.seed,
        disturb: c.disturb,
        busy: c.busy,
        roundsSettled: settleTimes.length,
        failed,
        volumesAtRestS: {
          median: Number(seconds(atRest.p50)),
          p90: Number(seconds(atRest.p90)),
          max: Number(seconds(atRest.max)),
        },
        settleS: {
          median: Number(seconds(settled.p50)),
          p90: Number(seconds(settled.p90)),
          max: Number(seconds(settled.max)),
        },
        ...banked,
        ...counters,
      })}`,
    );
    await f.stop();
    for (const hog of hogs) hog.kill('SIGKILL');
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
