/**
 * How fast this machine runs right now: a fixed single-threaded workload timed in the bench's own
 * process (and the share of a core it got), and a round trip to another process through a pipe
 * (what every hop over NATS on loopback costs: a write that wakes another process). These
 * machines share their cores with other jobs that no counter here shows (steal time reads 0):
 * while the test suites ran beside it the probe got 0.3-0.5 of a core. It does not catch
 * everything: on 2026-12-05 a run whose six processes each spent 1.6-2 times the CPU of the
 * evening before on the same work items probed as fast (13 ms at a full core, 36 µs), two probes
 * at once too. A probe that differs explains a difference; one that reads the same proves nothing.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { percentiles, round } from './stats.js';

/** Rounds per probe (~0.5 s in all): the median round is the core's speed when we have it. */
const ROUNDS = 40;
/** Work per round: ~13 ms on a core of these machines. */
const JSON_ROUND_TRIPS = 150;
const HASHED_BYTES = 2 * 2 ** 20;

/** A VMI-shaped document (40 hotplugged volumes): what the services spend their time on. */
function sampleDocument(): unknown {
  const volumes = Array.from({ length: 40 }, (_, i) => ({
    name: `volume-${i}`,
    persistentVolumeClaim: { claimName: `claim-${i}`, hotpluggable: true },
  }));
  const statuses = volumes.map((v, i) => ({
    name: v.name,
    target: `sd${String.fromCharCode(97 + (i % 26))}`,
    phase: 'Ready',
    reason: 'VolumeReady',
    message: `Successfully attach hotplugged volume ${v.name} to VM`,
    hotplugVolume: { attachPodName: `hp-volume-${i}`, attachPodUID: `uid-${i}` },
  }));
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: { name: 'probe', namespace: 'default', generation: 7, labels: { app: 'probe' } },
    spec: { volumes, domain: { devices: { disks: volumes.map((v) => ({ name: v.name })) } } },
    status: { phase: 'Running', volumeStatus: statuses },
  };
}

function oneRoundMs(document: unknown, bytes: Buffer): number {
  const t0 = performance.now();
  let text = JSON.stringify(document);
  for (let i = 0; i < JSON_ROUND_TRIPS; i++) text = JSON.stringify(JSON.parse(text));
  createHash('sha256').update(bytes).update(text).digest();
  return performance.now() - t0;
}

/** Pipe round trips timed, after as many untimed (the echoing child warms up). */
const ROUND_TRIPS = 2000;

/** The median round trip in µs of one byte to a child process that echoes it. */
async function roundTripUs(): Promise<number> {
  const echo = spawn(process.execPath, ['-e', 'process.stdin.pipe(process.stdout)'], {
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  const ended = once(echo, 'exit').then(() => {
    throw new Error("the speed probe's echo process ended");
  });
  ended.catch(() => undefined);
  try {
    const times: number[] = [];
    for (let i = 0; i < 2 * ROUND_TRIPS; i++) {
      const t0 = performance.now();
      const answered = once(echo.stdout, 'data');
      echo.stdin.write('x');
      await Promise.race([answered, ended]);
      if (i >= ROUND_TRIPS) times.push(performance.now() - t0);
    }
    return Math.round(percentiles(times).p50 * 1000);
  } finally {
    echo.kill();
  }
}

/**
 * The compute probe: the median round in ms (how fast a core is), and the share of a core the
 * process got while it ran all rounds (CPU time / wall time; 1 when no one else wanted the core).
 */
function compute(): { computeMs: number; cpuShare: number } {
  const document = sampleDocument();
  const bytes = Buffer.alloc(HASHED_BYTES, 7);
  // Compiles the path before it is timed (one round is not always enough).
  for (let i = 0; i < 2; i++) oneRoundMs(document, bytes);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const rounds = Array.from({ length: ROUNDS }, () => oneRoundMs(document, bytes));
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return {
    computeMs: round(percentiles(rounds).p50, 1),
    cpuShare: round((cpu.user + cpu.system) / 1000 / wallMs),
  };
}

export interface SpeedProbe {
  computeMs: number;
  cpuShare: number;
  pipeRoundTripUs: number;
}

/** Both probes: a faster machine has lower times and a share nearer 1. */
export async function speedProbe(): Promise<SpeedProbe> {
  return { ...compute(), pipeRoundTripUs: await roundTripUs() };
}
