/** The measured sections, grouped by the stack they run on. */
import { cp, mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  createPvc,
  ensureNamespace,
  startStack,
  ServiceName,
  type ServiceRuntime,
  type Stack,
  type StackOptions,
} from '@plugline/cli';
import { KubeClient } from '@plugline/kube';
import { EventType } from '@plugline/contracts';
import { tempDir, waitFor } from '@plugline/testkit';
import {
  bounded,
  burst,
  plug,
  plugEach,
  unplug,
  unplugEach,
  type BurstIssue,
  type OpResult,
} from './chain.js';
import { cliSection, type CliFigures } from './cli.js';
import { Floor, type FloorOp } from './floor.js';
import { Observer } from './observer.js';
import type { BurstFigures } from './report-types.js';
import { childrenOf, cpuOf, rssOf, type ProcRef } from './procs.js';
import {
  apiPerOperation,
  natsPerOperation,
  scrapeNats,
  apiPerPair,
  handledByOutcome,
  scrapeApiServer,
  scrapeMetrics,
  stepsPerOperation,
} from './service-metrics.js';
import { summarizeProfile } from './profile.js';
import { cpuQuiet, rssSteady, workDrained } from './quiet.js';
import {
  medianRound,
  percentiles,
  repeated,
  round,
  sweepFigures,
  type Percentiles,
  type Repeated,
} from './stats.js';

export interface BenchConfig {
  ops: number;
  repeat: number;
  warmup: number;
  vmis: number;
  volumesPerVmi: number;
  concurrency: number;
  /**
   * More client concurrencies the throughput section runs `repeat` rounds at each, after its
   * own (`--sweep-concurrency`): throughput against p99 latency, for the most that keeps p99 ≤ 1 s.
   */
  sweepConcurrency: readonly number[];
  burst: number;
  burstPodStartMs: number;
  /** Section 8: rounds of plugctl's commands as processes, each way (bundle, sources). */
  cliRuns: number;
  profile: ServiceName | '';
  /** Which stack runs the profiled service: the main one (sections 1-3) or the burst's (4). */
  profileStack: 'main' | 'burst';
  sections: Set<string>;
  logLevel: string;
  /** How the services run: bundled, as `plugctl up` runs them, or from source (`--from-source`). */
  runtime: ServiceRuntime;
  /** `node` flags for every service (`--node-args`), before any the section adds (profiling). */
  nodeArgs: readonly string[];
  out: string;
}

type Log = (msg: string) => void;
const DETACH_DELAY_MS = 50;
/**
 * Section 4's `addvolume`s in flight at once. Each is a guarded read-modify-patch of the one VMI,
 * so concurrent ones only conflict and retry (75 at once: about 1,400 conflicts); two keep one
 * patch on the wire while the other reads.
 */
const BURST_ADDVOLUME_CONCURRENCY = 2;
const BURST_DRAIN_TIMEOUT_MS = 180_000;
/** The bench's own process among the measured ones (its requests, watches, event decoding). */
const BENCH_PROCESS = 'bench (this process)';
/** kube-sim's volume controller binds a new claim within milliseconds; this is far beyond. */
const BIND_TIMEOUT_MS = 10_000;

export interface Harness {
  stack: Stack;
  client: KubeClient;
  obs: Observer;
  procs: () => ProcRef[];
  /** Copies the stack's logs where they outlive it (a failed section), and says where. */
  keepLogs(): Promise<void>;
  stop(): Promise<void>;
}

/** The stack's processes: the services, and nats-server and kube-sim (children of this process). */
async function processesOf(stack: Stack): Promise<ProcRef[]> {
  const refs: ProcRef[] = stack.services.map((s) => ({ id: s.id, pid: s.pid }));
  for (const pid of childrenOf(process.pid)) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('nats-server')) refs.push({ id: 'nats-server', pid });
    else if (cmd.includes('kube-sim')) refs.push({ id: 'kube-sim', pid });
  }
  return refs;
}

export async function harness(
  options: Partial<StackOptions>,
  namespaces: string[],
  cfg: BenchConfig,
  log: Log,
): Promise<Harness> {
  const dir = await tempDir('plugline-bench-');
  const t = performance.now();
  const stack = await startStack({
    dir: dir.path,
    demo: false,
    readyTimeoutMs: 120_000,
    logLevel: cfg.logLevel,
    runtime: cfg.runtime,
    serviceEnv: { PLUGLINE_SIM_DETACH_DELAY_MS: String(DETACH_DELAY_MS) },
    ...options,
    nodeArgs: withCommonNodeArgs(cfg.nodeArgs, options.nodeArgs),
  }).catch(async (err: unknown) => {
    await dir.remove();
    throw err;
  });
  log(`stack up in ${Math.round(performance.now() - t)} ms (${stack.services.length} services)`);
  const client = new KubeClient({ kc: stack.kc, fieldManager: 'plugline-bench' });
  for (const ns of namespaces) await ensureNamespace(stack.kc, ns);
  const obs = await Observer.start(stack.kc, stack.natsUrl, namespaces);
  const procs = await processesOf(stack);
  return {
    stack,
    client,
    obs,
    procs: () => procs,
    keepLogs: async () => {
      const kept = await mkdtemp(join(tmpdir(), 'plugline-bench-logs-'));
      await cp(join(dir.path, 'logs'), kept, { recursive: true });
      log(`kept the stack's logs in ${kept}`);
    },
    stop: async () => {
      await obs.stop().catch(() => undefined);
      await stack.stop();
      await dir.remove();
    },
  };
}

/** Runs a section on `h`'s stack, then stops it; a failed section's logs are kept first. */
export async function onStack<T>(h: Harness, section: () => Promise<T>): Promise<T> {
  try {
    return await section();
  } catch (err) {
    await h.keepLogs();
    throw err;
  } finally {
    await h.stop();
  }
}

/** `common` flags first for every service, then each service's own. */
function withCommonNodeArgs(
  common: readonly string[],
  own: StackOptions['nodeArgs'],
): StackOptions['nodeArgs'] {
  if (common.length === 0) return own;
  return Object.fromEntries(
    Object.values(ServiceName).map((name) => [name, [...common, ...(own?.[name] ?? [])]]),
  );
}

/** The PV the claim is bound to, once it is. */
async function boundPv(client: KubeClient, ns: string, claim: string): Promise<string> {
  return waitFor(
    async () => {
      const pvc = await client.getPvc(ns, claim);
      const pv = pvc.status?.phase === 'Bound' ? pvc.spec?.volumeName : undefined;
      return pv === '' ? undefined : pv;
    },
    { timeout: BIND_TIMEOUT_MS, interval: 25, description: `PVC ${ns}/${claim} bound` },
  );
}

/** Per-stage percentiles over a set of operations. */
function stagePercentiles(ops: { stages: Record<string, number> }[]): Record<string, Percentiles> {
  const names = [...new Set(ops.flatMap((o) => Object.keys(o.stages)))];
  return Object.fromEntries(
    names.map((n) => [n, percentiles(ops.map((o) => o.stages[n] ?? Number.NaN))]),
  );
}

interface RoundFigures {
  plug: Percentiles;
  unplug: Percentiles;
}

function acrossRounds(rounds: RoundFigures[]) {
  const pick = (dir: 'plug' | 'unplug', q: 'p50' | 'p90' | 'p99'): Repeated =>
    repeated(rounds.map((r) => r[dir][q]));
  return {
    plug: { p50: pick('plug', 'p50'), p90: pick('plug', 'p90'), p99: pick('plug', 'p99') },
    unplug: { p50: pick('unplug', 'p50'), p90: pick('unplug', 'p90'), p99: pick('unplug', 'p99') },
  };
}

/** Sections 1 and 2, interleaved round by round so that drift of the machine hits both. */
async function sequential(h: Harness, cfg: BenchConfig, log: Log) {
  const { stack, client, obs } = h;
  const seq = await stack.createVmi({ namespace: 'bench-seq', name: 'vm' });
  await createPvc(stack.kc, { namespace: 'bench-seq', name: 'disk', mode: 'Filesystem' });
  const floorVmi = await stack.createVmi({ namespace: 'bench-floor', name: 'vm' });
  await createPvc(stack.kc, { namespace: 'bench-floor', name: 'disk', mode: 'Filesystem' });
  const pv = await boundPv(client, 'bench-floor', 'disk');
  const floor = await Floor.start({
    kc: stack.kc,
    client,
    obs,
    target: {
      ns: 'bench-floor',
      vmi: 'vm',
      node: stack.nodes[0] ?? 'node-1',
      launcherUid: floorVmi.launcher.metadata?.uid ?? '',
      kubeletRoot: stack.kubeletRoot,
      claim: 'disk',
      pv,
    },
    stateDir: stack.dir,
    detachDelayMs: DETACH_DELAY_MS,
  });
  void seq;
  const where = { ns: 'bench-seq', vmi: 'vm', volume: 'disk', claim: 'disk' };
  const stuck: { op: number; error: string; statusPhase: string | null }[] = [];
  let opIndex = 0;
  /** A plug and an unplug; an operation that does not finish in 30 s is recorded, not fatal. */
  const chainOp = async (): Promise<[OpResult, OpResult] | undefined> => {
    const op = opIndex++;
    try {
      return [await plug(client, obs, where, 30_000), await unplug(client, obs, where, 30_000)];
    } catch (err) {
      const vmi = await client.getVmi(where.ns, where.vmi);
      const entry = vmi.status?.volumeStatus?.find((e) => e.name === where.volume);
      stuck.push({ op, error: String(err), statusPhase: entry?.phase ?? null });
      log(`chain op ${op} did not finish: ${String(err)} (status phase ${entry?.phase ?? 'none'})`);
      if ((vmi.spec.volumes ?? []).some((v) => v.name === where.volume)) {
        await unplug(client, obs, where, 60_000).catch(() => undefined);
      } else {
        await obs.untilVolume(`bench-seq/vm/disk`, (v) => v?.present === false, 60_000);
      }
      return undefined;
    }
  };
  let podSeq = 0;
  const floorOp = async (): Promise<[FloorOp, FloorOp]> => {
    const pod = `hp-floor-${podSeq++}`;
    return [await floor.plug('disk', pod), await floor.unplug('disk', pod)];
  };
  for (let i = 0; i < cfg.warmup; i++) {
    await chainOp();
    await floorOp();
  }
  const chainPlugs: OpResult[] = [];
  const chainUnplugs: OpResult[] = [];
  const floorPlugs: FloorOp[] = [];
  const floorUnplugs: FloorOp[] = [];
  const chainRounds: RoundFigures[] = [];
  const floorRounds: RoundFigures[] = [];
  const floorStepRounds: RoundFigures[] = [];
  const ratioRounds: number[] = [];
  /** The services' metrics around each round's chain operations (not the floor's). */
  const chainIntervals: [Record<string, string>, Record<string, string>][] = [];
  /** kube-sim's counters around the same operations. */
  const apiIntervals: [string, string][] = [];
  const cpuRounds: CpuPerPair[] = [];
  for (let r = 0; r < cfg.repeat; r++) {
    const cp: OpResult[] = [];
    const cu: OpResult[] = [];
    const before = await scrapeMetrics(stack.services);
    const apiBefore = await scrapeApiServer(stack.apiUrl);
    const cpuAtStart = stackCpu(h);
    for (let i = 0; i < cfg.ops; i++) {
      const pair = await chainOp();
      if (pair === undefined) continue;
      cp.push(pair[0]);
      cu.push(pair[1]);
    }
    const cpuAfterChain = stackCpu(h);
    chainIntervals.push([before, await scrapeMetrics(stack.services)]);
    apiIntervals.push([apiBefore, await scrapeApiServer(stack.apiUrl)]);
    const fp: FloorOp[] = [];
    const fu: FloorOp[] = [];
    const cpuBeforeFloor = stackCpu(h);
    for (let i = 0; i < cfg.ops; i++) {
      const [p, u] = await floorOp();
      fp.push(p);
      fu.push(u);
    }
    cpuRounds.push(
      cpuPerPair(
        { from: cpuAtStart, to: cpuAfterChain, pairs: cp.length },
        { from: cpuBeforeFloor, to: stackCpu(h), pairs: fp.length },
      ),
    );
    const c = {
      plug: percentiles(cp.map((o) => o.latencyMs)),
      unplug: percentiles(cu.map((o) => o.latencyMs)),
    };
    const f = {
      plug: percentiles(fp.map((o) => o.latencyMs)),
      unplug: percentiles(fu.map((o) => o.latencyMs)),
    };
    chainRounds.push(c);
    floorRounds.push(f);
    floorStepRounds.push({
      plug: percentiles(fp.map((o) => o.stepsMs)),
      unplug: percentiles(fu.map((o) => o.stepsMs)),
    });
    ratioRounds.push(c.plug.p50 / f.plug.p50);
    log(
      `round ${r + 1}/${cfg.repeat}: chain plug p50 ${c.plug.p50} p99 ${c.plug.p99}, unplug p50 ${c.unplug.p50}; floor plug p50 ${f.plug.p50}, unplug p50 ${f.unplug.p50}`,
    );
    chainPlugs.push(...cp);
    chainUnplugs.push(...cu);
    floorPlugs.push(...fp);
    floorUnplugs.push(...fu);
  }
  await floor.close();
  return {
    oneVolume: {
      podStartLatencyMs: 0,
      opsPerRound: cfg.ops,
      rounds: cfg.repeat,
      acrossRounds: acrossRounds(chainRounds),
      pooled: {
        plug: percentiles(chainPlugs.map((o) => o.latencyMs)),
        unplug: percentiles(chainUnplugs.map((o) => o.latencyMs)),
      },
      plugStages: stagePercentiles(chainPlugs),
      unplugStages: stagePercentiles(chainUnplugs),
      stepsPerOperation: stepsPerOperation(chainIntervals, chainPlugs.length),
      apiPerPair: apiPerPair(apiIntervals, chainPlugs.length),
      cpuPerPair: medianCpuPerPair(cpuRounds),
      conflicts: chainPlugs.reduce((s, o) => s + o.conflicts, 0),
      stuck,
      samples: {
        plug: chainPlugs.map((o) => round(o.latencyMs)),
        unplug: chainUnplugs.map((o) => round(o.latencyMs)),
      },
    },
    floor: {
      acrossRounds: acrossRounds(floorRounds),
      pooled: {
        plug: percentiles(floorPlugs.map((o) => o.latencyMs)),
        unplug: percentiles(floorUnplugs.map((o) => o.latencyMs)),
      },
      plugStages: stagePercentiles(floorPlugs),
      unplugStages: stagePercentiles(floorUnplugs),
      overheadRatio: repeated(ratioRounds),
      unplugOverheadRatio: repeated(
        chainRounds.map((c, i) => c.unplug.p50 / (floorRounds[i]?.unplug.p50 ?? Number.NaN)),
      ),
      stepsAlone: {
        acrossRounds: acrossRounds(floorStepRounds),
        overheadRatio: repeated(
          chainRounds.map((c, i) => c.plug.p50 / (floorStepRounds[i]?.plug.p50 ?? Number.NaN)),
        ),
        unplugOverheadRatio: repeated(
          chainRounds.map((c, i) => c.unplug.p50 / (floorStepRounds[i]?.unplug.p50 ?? Number.NaN)),
        ),
      },
    },
  };
}

/** CPU seconds so far of each of the stack's processes and of this one (the floor's script). */
function stackCpu(h: Harness): Record<string, number> {
  const own = process.cpuUsage();
  return { ...cpuOf(h.procs()), bench: (own.user + own.system) / 1e6 };
}

/** CPU ms per plug + unplug pair, by process and in all, over the chain's and the floor's ops. */
type CpuPerPair = Record<string, { chainMs: number; floorMs: number }>;

interface CpuInterval {
  from: Record<string, number>;
  to: Record<string, number>;
  pairs: number;
}

/**
 * What each process spent over a round's sequential pairs, the chain's and the floor's: every
 * process wakes for what the other one does too (a watch sees the floor's pods), and that counts
 * where it happens. One plug at a time on two cores, this is what the chain's latency waits on.
 */
function cpuPerPair(chain: CpuInterval, floor: CpuInterval): CpuPerPair {
  const perPair = (i: CpuInterval, id: string): number =>
    (((i.to[id] ?? 0) - (i.from[id] ?? 0)) / Math.max(1, i.pairs)) * 1000;
  const rows: CpuPerPair = {};
  let chainMs = 0;
  let floorMs = 0;
  for (const id of Object.keys(chain.from)) {
    const c = perPair(chain, id);
    const f = perPair(floor, id);
    chainMs += c;
    floorMs += f;
    rows[id] = { chainMs: round(c), floorMs: round(f) };
  }
  rows['all processes'] = { chainMs: round(chainMs), floorMs: round(floorMs) };
  return rows;
}

/** Per process, the median over rounds of each figure. */
function medianCpuPerPair(rounds: readonly CpuPerPair[]): CpuPerPair {
  const ids = Object.keys(rounds[0] ?? {});
  return Object.fromEntries(
    ids.map((id) => [
      id,
      {
        chainMs: repeated(rounds.map((r) => r[id]?.chainMs ?? Number.NaN)).median,
        floorMs: repeated(rounds.map((r) => r[id]?.floorMs ?? Number.NaN)).median,
      },
    ]),
  );
}

/** The slowest operations with the time each stage took: where an outlier waited. */
function slowest(ops: readonly OpResult[], count = 5) {
  return [...ops]
    .sort((a, b) => b.latencyMs - a.latencyMs)
    .slice(0, count)
    .map((o) => ({
      key: o.key,
      latencyMs: round(o.latencyMs),
      stages: Object.fromEntries(Object.entries(o.stages).map(([k, v]) => [k, round(v)])),
    }));
}

/**
 * Rounds one set of throughput VMIs serves. The spec-watcher's recorder gives each VMI a burst of
 * 25 Events (then one per 5 minutes), and a round plugs and unplugs each of a VMI's two volumes
 * with 12 Events; a third round on the same VMIs would write almost none and cost ~20 % less
 * CPU per plug, unlike a cluster whose VMIs are not re-plugged every few seconds.
 */
const ROUNDS_PER_VMI_SET = 2;

type ThroughputItem = { ns: string; vmi: string; volume: string; claim: string };

/**
 * Section 3 (and 5): M VMIs × K volumes plugged, then unplugged, with bounded concurrency, in
 * `cfg.repeat` rounds, each set of VMIs serving {@link ROUNDS_PER_VMI_SET} (a round re-adds what
 * the one before removed). A warm-up round on VMIs of its own comes first and is reported apart:
 * a fresh stack's first plugs run the services' code cold (24-29 ms of CPU per plug against 16-18
 * after, with this section alone; less after section 1), which a service that runs for days pays
 * once. The figures are the median round's (by plug ops/s), with
 * every round's headline figures beside them: the two cores are shared, and one round can read
 * far from the next.
 */
async function throughput(h: Harness, cfg: BenchConfig, log: Log, sweep = false) {
  const { stack } = h;
  const ns = 'bench-tp';
  let sets = 0;
  let items: readonly ThroughputItem[] = [];
  /** Measured rounds so far: every ROUNDS_PER_VMI_SET-th starts on fresh VMIs. */
  let measured = 0;
  const freshVmis = async (): Promise<ThroughputItem[]> => {
    const set = `s${sets++}`;
    const t = performance.now();
    await bounded(cfg.vmis, 4, async (i) => {
      await stack.createVmi({ namespace: ns, name: `${set}-vm-${i}` });
      for (let k = 0; k < cfg.volumesPerVmi; k++) {
        await createPvc(stack.kc, {
          namespace: ns,
          name: `${set}-vm-${i}-d${k}`,
          mode: 'Filesystem',
        });
      }
    });
    log(
      `throughput: ${cfg.vmis} VMIs (${set}) and their PVCs in ${Math.round(performance.now() - t)} ms`,
    );
    return Array.from({ length: cfg.vmis * cfg.volumesPerVmi }, (_, j) => {
      const vmi = `${set}-vm-${Math.floor(j / cfg.volumesPerVmi)}`;
      const k = j % cfg.volumesPerVmi;
      return { ns, vmi, volume: `d${k}`, claim: `${vmi}-d${k}` };
    });
  };
  const runRound = async (
    concurrency: number,
    label: string,
    on: readonly ThroughputItem[],
  ): Promise<ThroughputRound> => {
    // Neither the setup's tail nor the previous round's (its last work items) may slow this
    // round's start, or be billed to its operations.
    await workDrained(stack.natsUrl, BURST_DRAIN_TIMEOUT_MS, log);
    await cpuQuiet(h.procs(), log);
    const round = await throughputRound(h, { ...cfg, concurrency }, on);
    log(
      `throughput at concurrency ${concurrency}, ${label}: plug ${round.plug.opsPerSecond}/s p99 ${round.plug.latency.p99} ms; unplug ${round.unplug.opsPerSecond}/s p99 ${round.unplug.latency.p99} ms; failed ${round.correctness.failedEvents}`,
    );
    return round;
  };
  const roundsAt = async (concurrency: number): Promise<ThroughputRound[]> => {
    const rounds: ThroughputRound[] = [];
    for (let r = 0; r < cfg.repeat; r++) {
      if (measured++ % ROUNDS_PER_VMI_SET === 0) items = await freshVmis();
      rounds.push(await runRound(concurrency, `round ${r + 1}/${cfg.repeat}`, items));
    }
    return rounds;
  };
  const warmup = warmupFigures(await runRound(cfg.concurrency, 'warm-up round', await freshVmis()));
  const main = { ...acrossThroughputRounds(await roundsAt(cfg.concurrency)), warmup };
  if (!sweep) return main;
  const points = [sweepPoint(cfg.concurrency, main)];
  for (const concurrency of cfg.sweepConcurrency.filter((c) => c !== cfg.concurrency)) {
    points.push(sweepPoint(concurrency, acrossThroughputRounds(await roundsAt(concurrency))));
  }
  return { ...main, sweep: sweepFigures(points) };
}

/** Every volume `Ready`, then every one removed, and no `failed` event. */
function wasCorrect(c: { allReady: boolean; allRemoved: boolean; failedEvents: number }): boolean {
  return c.allReady && c.allRemoved && c.failedEvents === 0;
}

/** The warm-up round's headline figures. */
function warmupFigures(r: ThroughputRound) {
  return {
    concurrency: r.concurrency,
    plugOpsPerSecond: r.plug.opsPerSecond,
    plugP99Ms: r.plug.latency.p99,
    stackCpuMsPerPlug: round(stackCpuPerPlug(r)),
    correct: wasCorrect(r.correctness),
  };
}

/** One client concurrency of the sweep: its rounds' medians, min and max. */
function sweepPoint(concurrency: number, figures: ReturnType<typeof acrossThroughputRounds>) {
  const { rounds: r, correctness } = figures;
  return {
    concurrency,
    plugOpsPerSecond: r.plugOpsPerSecond,
    plugP99Ms: r.plugP99Ms,
    unplugOpsPerSecond: r.unplugOpsPerSecond,
    unplugP99Ms: r.unplugP99Ms,
    stackCpuMsPerPlug: r.stackCpuMsPerPlug,
    eventWritesPerPlug: r.eventWritesPerPlug,
    correct: wasCorrect(correctness),
  };
}

type ThroughputRound = Awaited<ReturnType<typeof throughputRound>>;

/** Event writes per plug: POSTs of new Events and PATCHes of repeats' counts, any status. */
function eventWritesPerPlug(r: ThroughputRound): number {
  return round(
    Object.entries(r.apiPerOperation)
      .filter(([request]) => /^(POST|PATCH) events\b/.test(request))
      .reduce((sum, [, v]) => sum + (v.plug ?? 0), 0),
  );
}

/** CPU per plug summed over the stack's processes (the bench's own left out). */
function stackCpuPerPlug(r: ThroughputRound): number {
  return Object.entries(r.cpuMsPerOperation)
    .filter(([id]) => id !== BENCH_PROCESS)
    .reduce((sum, [, v]) => sum + v.plugMs, 0);
}

/** The median round's figures, each round's headline figures, and correctness over all rounds. */
function acrossThroughputRounds(rounds: readonly ThroughputRound[]) {
  const byPlugRate = medianRound(rounds, (r) => r.plug.opsPerSecond);
  return {
    ...byPlugRate.round,
    rounds: {
      count: rounds.length,
      perVmiSet: ROUNDS_PER_VMI_SET,
      medianRound: byPlugRate.number,
      plugOpsPerSecond: byPlugRate.figure,
      plugP99Ms: repeated(rounds.map((r) => r.plug.latency.p99)),
      unplugOpsPerSecond: repeated(rounds.map((r) => r.unplug.opsPerSecond)),
      unplugP99Ms: repeated(rounds.map((r) => r.unplug.latency.p99)),
      stackCpuMsPerPlug: repeated(rounds.map(stackCpuPerPlug)),
      eventWritesPerPlug: repeated(rounds.map(eventWritesPerPlug)),
    },
    correctness: {
      allReady: rounds.every((r) => r.correctness.allReady),
      allRemoved: rounds.every((r) => r.correctness.allRemoved),
      failedEvents: rounds.reduce((sum, r) => sum + r.correctness.failedEvents, 0),
      distinctReadyOperations: rounds.reduce(
        (sum, r) => sum + r.correctness.distinctReadyOperations,
        0,
      ),
      volumesWithReadyEventInEveryRound: Math.min(
        ...rounds.map((r) => r.correctness.volumesWithReadyEvent),
      ),
    },
  };
}

/** One round of section 3: every item plugged, then every item unplugged. */
async function throughputRound(h: Harness, cfg: BenchConfig, items: readonly ThroughputItem[]) {
  const { stack, client, obs } = h;
  const since = performance.now();
  // The bench's own share of the two cores (its requests, watches and event decoding): what the
  // stack did not get.
  const measured = (): ProcRef[] => [...h.procs(), { id: BENCH_PROCESS, pid: process.pid }];
  // The counters read at the start, between plug and unplug, and at the end.
  const counters = async () => ({
    cpu: cpuOf(measured()),
    handled: await scrapeMetrics(stack.services),
    api: await scrapeApiServer(stack.apiUrl),
    nats: await scrapeNats(stack.natsMonitorUrl),
  });
  const c0 = await counters();
  const p0 = performance.now();
  const plugs = await bounded(items.length, cfg.concurrency, (j) =>
    plug(client, obs, items[j]!, 300_000),
  );
  const plugWall = (performance.now() - p0) / 1000;
  const rssLoaded = rssOf(h.procs());
  const c1 = await counters();
  const u0 = performance.now();
  const unplugs = await bounded(items.length, cfg.concurrency, (j) =>
    unplug(client, obs, items[j]!, 300_000),
  );
  const unplugWall = (performance.now() - u0) / 1000;
  const c2 = await counters();
  const ops = items.length;
  const cpuPerOp = Object.fromEntries(
    Object.keys(c0.cpu).map((id) => [
      id,
      {
        plugMs: round((((c1.cpu[id] ?? 0) - (c0.cpu[id] ?? 0)) / ops) * 1000),
        unplugMs: round((((c2.cpu[id] ?? 0) - (c1.cpu[id] ?? 0)) / ops) * 1000),
      },
    ]),
  );
  const failed = obs.eventsOfType('failed', since).length;
  const readyOps = new Set(obs.eventsOfType('ready', since).map((m) => m.event.data.operationId));
  const readyKeys = new Set(obs.eventsOfType('ready', since).map((m) => m.event.subject));
  const figures = {
    vmis: cfg.vmis,
    volumesPerVmi: cfg.volumesPerVmi,
    concurrency: cfg.concurrency,
    podStartLatencyMs: 0,
    plug: {
      ops,
      wallS: round(plugWall),
      opsPerSecond: round(ops / plugWall),
      latency: percentiles(plugs.map((o) => o.latencyMs)),
      stages: stagePercentiles(plugs),
      slowest: slowest(plugs),
      conflicts: plugs.reduce((s, o) => s + o.conflicts, 0),
    },
    unplug: {
      ops,
      wallS: round(unplugWall),
      opsPerSecond: round(ops / unplugWall),
      latency: percentiles(unplugs.map((o) => o.latencyMs)),
      stages: stagePercentiles(unplugs),
      slowest: slowest(unplugs),
    },
    cpuMsPerOperation: cpuPerOp,
    handlingsPerOperation: handlingsPerOp([c0.handled, c1.handled, c2.handled], ops),
    apiPerOperation: apiPerOperation([c0.api, c1.api, c2.api], ops),
    natsPerOperation: natsPerOperation([c0.nats, c1.nats, c2.nats], ops),
    rssWhileTrackingMiB: { volumes: ops, ...rssLoaded },
    correctness: {
      allReady: plugs.length === ops,
      allRemoved: unplugs.length === ops,
      failedEvents: failed,
      distinctReadyOperations: readyOps.size,
      volumesWithReadyEvent: readyKeys.size,
    },
  };
  return figures;
}

/**
 * Work items each service ran (any outcome but `coalesced`) and acknowledged unrun
 * (`coalesced`), per operation, from its `plugline_messages_handled_total` at the start, between
 * plug and unplug, and at the end; and of the runs, those that found their unit's lease held
 * elsewhere (`busy`) or lost the snapshot write (`conflict`), per operation over both directions.
 */
function handlingsPerOp(
  [start, plugged, end]: Record<string, string>[],
  ops: number,
): Record<string, Record<string, number>> {
  const counts = (text: string | undefined) => {
    const by = handledByOutcome(text ?? '');
    const coalesced = by.coalesced ?? 0;
    const all = Object.values(by).reduce((a, b) => a + b, 0);
    // busy: the unit's lease was held elsewhere (another replica); conflict: lost the snapshot CAS
    return { runs: all - coalesced, coalesced, busy: by.busy ?? 0, conflict: by.conflict ?? 0 };
  };
  return Object.fromEntries(
    Object.keys(end ?? {}).map((id) => {
      const [a, b, c] = [start, plugged, end].map((m) => counts(m?.[id]));
      return [
        id,
        {
          plugRuns: round((b!.runs - a!.runs) / ops),
          plugCoalesced: round((b!.coalesced - a!.coalesced) / ops),
          unplugRuns: round((c!.runs - b!.runs) / ops),
          unplugCoalesced: round((c!.coalesced - b!.coalesced) / ops),
          busy: round((c!.busy - a!.busy) / ops / 2),
          conflict: round((c!.conflict - a!.conflict) / ops / 2),
        },
      ];
    }),
  );
}

/** `--cpu-prof` for the profiled service of one stack, and the summary of what it wrote. */
async function cpuProfiler(cfg: BenchConfig, stack: BenchConfig['profileStack']) {
  const profDir = join(cfg.out, 'profiles');
  const service = cfg.profileStack === stack ? cfg.profile : '';
  const before = new Set(await readdir(profDir).catch(() => [] as string[]));
  const nodeArgs =
    service === ''
      ? undefined
      : { [service]: ['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=1000'] };
  return {
    options: nodeArgs === undefined ? {} : { nodeArgs },
    /** Read after the stack stopped: node writes the profile as the process exits. */
    summary: async () => {
      if (service === '') return undefined;
      const files = (await readdir(profDir).catch(() => [] as string[])).filter(
        // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread.
        (f) => f.endsWith('.cpuprofile') && !before.has(f) && /\.\d+\.0\.\d+\.cpuprofile$/.test(f),
      );
      const file = files.sort().at(-1);
      return file === undefined ? undefined : summarizeProfile(join(profDir, file), service);
    },
  };
}

/** Stack A: idle memory, sections 1, 2, 3, and the CPU profile of one service. */
export async function runMainStack(cfg: BenchConfig, log: Log) {
  const profiler = await cpuProfiler(cfg, 'main');
  const h = await harness(
    { podStartLatencyMs: 0, ...profiler.options },
    ['bench-seq', 'bench-floor', 'bench-tp'],
    cfg,
    log,
  );
  const result = await onStack(h, async () => {
    await rssSteady(h.procs(), log);
    const result: {
      rssIdleMiB: Record<string, number>;
      oneVolume?: Awaited<ReturnType<typeof sequential>>['oneVolume'];
      floor?: Awaited<ReturnType<typeof sequential>>['floor'];
      throughput?: Awaited<ReturnType<typeof throughput>>;
      cli?: CliFigures;
    } = { rssIdleMiB: rssOf(h.procs()) };
    log(`idle RSS ${JSON.stringify(result.rssIdleMiB)}`);
    if (cfg.sections.has('1') || cfg.sections.has('2')) {
      Object.assign(result, await sequential(h, cfg, log));
    }
    if (cfg.sections.has('3')) result.throughput = await throughput(h, cfg, log, true);
    if (cfg.sections.has('8')) result.cli = await cliSection(h.stack, cfg.cliRuns, log);
    return result;
  });
  return { ...result, profile: await profiler.summary() };
}

const BURST_STEPS = [
  EventType.Requested,
  EventType.Bound,
  EventType.AttachedToNode,
  EventType.MountedToPod,
  EventType.Ready,
] as const;

/** When the burst's volumes reached each step of the plug, from `since` (the first request). */
function burstSteps(
  obs: Observer,
  ns: string,
  vmi: string,
  volumes: readonly { volume: string }[],
  since: number,
): NonNullable<BurstFigures['steps']> {
  const steps: NonNullable<BurstFigures['steps']> = {};
  for (const step of BURST_STEPS) {
    const times = volumes
      .map((v) => obs.firstEvents(`${ns}/${vmi}/${v.volume}`, since).get(step)?.t)
      .filter((t) => t !== undefined)
      .map((t) => t - since)
      .sort((a, b) => a - b);
    if (times.length === 0) continue;
    steps[step] = {
      first: round(times[0]!),
      p50: round(times[Math.floor(times.length / 2)]!),
      last: round(times[times.length - 1]!),
    };
  }
  return steps;
}

/** Section 4: many volumes at once on one VMI, with a realistic pod start. */
export async function runBurstStack(cfg: BenchConfig, log: Log) {
  const ns = 'bench-burst';
  const profiler = await cpuProfiler(cfg, 'burst');
  const h = await harness(
    { podStartLatencyMs: cfg.burstPodStartMs, ...profiler.options },
    [ns],
    cfg,
    log,
  );
  const ways = [
    { vmi: 'vm', how: { kind: 'addvolume', concurrency: BURST_ADDVOLUME_CONCURRENCY } },
    { vmi: 'vm-one-patch', how: { kind: 'one-patch' } },
  ] as const satisfies readonly { vmi: string; how: BurstIssue }[];
  // Per way of issuing, its rounds' figures, in order.
  const byWay: BurstFigures[][] = ways.map(() => []);
  await onStack(h, async () => {
    // A fresh VMI per way and round: the attachment pod names hash the VMI and the volume set.
    const runs = Array.from({ length: cfg.repeat }, (_, n) =>
      ways.map((w, way) => ({ ...w, way, vmi: n === 0 ? w.vmi : `${w.vmi}-r${n + 1}` })),
    ).flat();
    for (const r of runs) await h.stack.createVmi({ namespace: ns, name: r.vmi });
    const volumes = Array.from({ length: cfg.burst }, (_, i) => ({
      volume: `disk-${i}`,
      claim: `disk-${i}`,
    }));
    const claims = runs.flatMap((r) => volumes.map((v) => `${r.vmi}-${v.claim}`));
    await bounded(claims.length, 8, (i) =>
      createPvc(h.stack.kc, { namespace: ns, name: claims[i]!, mode: 'Filesystem' }),
    );
    for (const r of runs) {
      // The previous run's tail (its unplug's last work items) must not delay this one.
      await workDrained(h.stack.natsUrl, BURST_DRAIN_TIMEOUT_MS, log);
      const mine = volumes.map((v) => ({ volume: v.volume, claim: `${r.vmi}-${v.claim}` }));
      const where = { ns, vmi: r.vmi, volumes: mine };
      const podsBefore = new Set(h.obs.podNames(ns, 'hp-volume-'));
      const since = performance.now();
      const run = { how: r.how, timeoutMs: 300_000 };
      const cpu0 = cpuOf(h.procs());
      const api0 = await scrapeApiServer(h.stack.apiUrl);
      const handled0 = await scrapeMetrics(h.stack.services);
      const plugged = await burst(h.client, h.obs, where, run, plugEach(h.client, where));
      const cpu1 = cpuOf(h.procs());
      const api1 = await scrapeApiServer(h.stack.apiUrl);
      const handled1 = await scrapeMetrics(h.stack.services);
      const cpuMs = Object.fromEntries(
        Object.keys(cpu0).map((id) => [id, round(((cpu1[id] ?? 0) - (cpu0[id] ?? 0)) * 1000)]),
      );
      const attachPods = new Set(
        h.obs
          .eventsOfType('attached-to-node', since)
          .filter((m) => m.event.subject.startsWith(`${ns}/${r.vmi}/`))
          .map((m) => m.event.data.attachPod?.uid)
          .filter((u) => u !== undefined),
      );
      const podsCreated = h.obs.podNames(ns, 'hp-volume-').filter((n) => !podsBefore.has(n));
      const steps = burstSteps(h.obs, ns, r.vmi, mine, since);
      const pods = podsCreated.map((name) => {
        const times = h.obs.podTimesOf(ns, name);
        const at = (t: number | undefined) => (t === undefined ? undefined : round(t - since));
        return { name, seenMs: at(times?.seen), runningMs: at(times?.running) };
      });
      const unplugged = await burst(h.client, h.obs, where, run, unplugEach(h.client, where));
      const api2 = await scrapeApiServer(h.stack.apiUrl);
      const handled2 = await scrapeMetrics(h.stack.services);
      const f: BurstFigures = {
        issue:
          r.how.kind === 'one-patch'
            ? 'one guarded VMI patch adding all volumes'
            : `plugctl addvolume (virtctl's read, validate, guarded patch, retry on conflict) per volume, ${r.how.concurrency} at a time`,
        volumes: cfg.burst,
        podStartLatencyMs: cfg.burstPodStartMs,
        allReadyMs: round(plugged.allMs),
        issuedMs: round(plugged.issuedMs),
        perVolume: percentiles(plugged.latencies),
        attachmentPodsInEvents: attachPods.size,
        attachmentPodsCreated: podsCreated.length,
        attachmentPods: pods,
        patchConflicts: plugged.conflicts + unplugged.conflicts,
        allRemovedMs: round(unplugged.allMs),
        failedEvents: h.obs.eventsOfType('failed', since).length,
        steps,
        cpuMs,
        api: apiPerOperation([api0, api1, api2], 1),
        handlingsPerVolume: handlingsPerOp([handled0, handled1, handled2], cfg.burst),
      };
      log(`burst (${r.how.kind}, ${r.vmi}): ${JSON.stringify(f)}`);
      byWay[r.way]!.push(f);
    }
  });
  const [first, ...others] = byWay.map(acrossBurstRounds);
  return { figures: { ...first!, others }, profile: await profiler.summary() };
}

/** One way of issuing the burst: its median round (by all `Ready`), with every round's figures. */
function acrossBurstRounds(rounds: readonly BurstFigures[]): BurstFigures {
  const byAllReady = medianRound(rounds, (f) => f.allReadyMs);
  if (rounds.length < 2) return byAllReady.round;
  return {
    ...byAllReady.round,
    rounds: {
      count: rounds.length,
      medianRound: byAllReady.number,
      allReadyMs: byAllReady.figure,
      attachmentPodsCreated: repeated(rounds.map((f) => f.attachmentPodsCreated)),
      allRemovedMs: repeated(rounds.map((f) => f.allRemovedMs)),
      failedEvents: rounds.reduce((sum, f) => sum + f.failedEvents, 0),
    },
  };
}

/** Section 5: the throughput run with 2 replicas of spec-watcher and attachment-orchestrator. */
export async function runScaleOutStack(cfg: BenchConfig, log: Log) {
  const h = await harness(
    {
      podStartLatencyMs: 0,
      replicas: { [ServiceName.SpecWatcher]: 2, [ServiceName.AttachmentOrchestrator]: 2 },
    },
    ['bench-tp'],
    cfg,
    log,
  );
  return onStack(h, async () => {
    await rssSteady(h.procs(), log);
    const rssIdleMiB = rssOf(h.procs());
    return { replicas: 2, rssIdleMiB, throughput: await throughput(h, cfg, log) };
  });
}
