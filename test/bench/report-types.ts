/** The parts of a results document the Markdown summary and the chart read. */
import type { Percentiles, Repeated } from './stats.js';
import type { CliFigures } from './cli.js';
import type { HopsFigures } from './hops.js';
import type { GuestFigures } from './guest.js';
import type { MemoryFigures } from './memory.js';
import type { SpeedProbe } from './speed.js';

interface Directional<T> {
  plug: T;
  unplug: T;
}

interface DirectionFigures {
  ops: number;
  opsPerSecond: number;
  latency: Percentiles;
  wallS: number;
  /** The slowest operations, with each stage's time: where an outlier waited. */
  slowest?: { key: string; latencyMs: number; stages: Record<string, number> }[];
}

interface ThroughputFigures {
  vmis: number;
  volumesPerVmi: number;
  concurrency: number;
  plug: DirectionFigures;
  unplug: DirectionFigures;
  cpuMsPerOperation: Record<string, { plugMs: number; unplugMs: number }>;
  /** Work items run and coalesced per operation, by service (absent in older results). */
  handlingsPerOperation?: Record<string, Record<string, number>>;
  /** Kubernetes API requests and watch events per operation (absent in older results). */
  apiPerOperation?: Record<string, { plug: number; unplug: number }>;
  /** Messages and bytes through the NATS server per operation (absent in older results). */
  natsPerOperation?: Record<string, { plug: number; unplug: number }>;
  rssWhileTrackingMiB: Record<string, number>;
  correctness: Record<string, number | boolean>;
  /**
   * The rounds the figures above come from (they are the median round's, by plug ops/s), with
   * each round's headline figures; absent in results of one round.
   */
  rounds?: {
    count: number;
    /** Rounds each set of VMIs served (absent in older results: all on the same VMIs). */
    perVmiSet?: number;
    medianRound: number;
    plugOpsPerSecond: Repeated;
    plugP99Ms: Repeated;
    unplugOpsPerSecond: Repeated;
    unplugP99Ms: Repeated;
    /** CPU per plug summed over the stack's processes (the bench's own left out). */
    stackCpuMsPerPlug: Repeated;
    /** Event writes (POST or PATCH) per plug: they stop as each VMI's Event budget runs out. */
    eventWritesPerPlug?: Repeated;
  };
  /**
   * The round run first on a fresh stack, on VMIs of its own, and left out of the figures: the
   * services' code runs cold (absent in older results, whose first round was counted).
   */
  warmup?: {
    concurrency: number;
    plugOpsPerSecond: number;
    plugP99Ms: number;
    stackCpuMsPerPlug: number;
    correct: boolean;
  };
  /**
   * The same rounds at more client concurrencies (the first point is the section's own): plug
   * throughput against p99, and the concurrency with the most plug ops/s within the p99 bound
   * (absent in older results).
   */
  sweep?: {
    p99BoundMs: number;
    points: {
      concurrency: number;
      plugOpsPerSecond: Repeated;
      plugP99Ms: Repeated;
      unplugOpsPerSecond: Repeated;
      unplugP99Ms: Repeated;
      stackCpuMsPerPlug: Repeated;
      /** Absent in older results, whose later rounds ran on VMIs whose Event budget was spent. */
      eventWritesPerPlug?: Repeated;
      correct: boolean;
    }[];
    bestWithinBound?: number;
  };
}

/** Section 4: one burst of volumes on one VMI. */
export interface BurstFigures {
  /** How the requests were issued. */
  issue?: string;
  volumes: number;
  podStartLatencyMs: number;
  /** First request → every volume `Ready`. */
  allReadyMs: number;
  /** First request → every request answered. */
  issuedMs?: number;
  /** Each volume: its request → its `Ready`. */
  perVolume: Percentiles;
  attachmentPodsInEvents: number;
  attachmentPodsCreated: number;
  /** Each attachment pod created: first seen, and first seen Running (first request → then). */
  attachmentPods?: { name: string; seenMs?: number; runningMs?: number }[];
  patchConflicts: number;
  allRemovedMs: number;
  failedEvents: number;
  /**
   * When the volumes reached each step of the plug (first request → that step's event): the
   * first volume, the median, the last. Shows which stage a burst waits on.
   */
  steps?: Record<string, { first: number; p50: number; last: number }>;
  /** CPU time each process spent from the first request until all were `Ready`. */
  cpuMs?: Record<string, number>;
  /**
   * Kubernetes API requests and watch events of the whole burst: `plug` until all were
   * `Ready`, `unplug` until all were removed (absent in older results).
   */
  api?: Record<string, { plug: number; unplug: number }>;
  /**
   * Work items each service ran and acknowledged unrun (coalesced), per volume, plug and
   * unplug (absent in older results): how often a unit of a 75-volume VMI was handled.
   */
  handlingsPerVolume?: Record<string, Record<string, number>>;
  /**
   * The rounds the figures above come from (they are the median round's, by all `Ready`), each
   * on a fresh VMI; absent in results of one round.
   */
  rounds?: {
    count: number;
    medianRound: number;
    allReadyMs: Repeated;
    attachmentPodsCreated: Repeated;
    allRemovedMs: Repeated;
    /** Over every round. */
    failedEvents: number;
  };
}

export interface Results {
  date: string;
  durationS: number;
  /** `speedProbe`: absent in results before it. */
  machine: Record<string, unknown> & { speedProbe?: { start: SpeedProbe; end: SpeedProbe } };
  /** `runtime`: how the services ran (`bundled` or `source`); absent in results before it. */
  config?: { runtime?: string };
  rssIdleMiB: Record<string, number>;
  oneVolume?: {
    opsPerRound: number;
    rounds: number;
    acrossRounds: Directional<{ p50: Repeated; p90: Repeated; p99: Repeated }>;
    pooled: Directional<Percentiles>;
    plugStages: Record<string, Percentiles>;
    unplugStages: Record<string, Percentiles>;
    /**
     * Per plug + unplug pair, by service: work items its stage runtime ran, and ms in each step
     * (`plugline_work_step_seconds`); absent in older results.
     */
    stepsPerOperation?: Record<string, Record<string, number>>;
    /** Kubernetes API requests and watch events per plug + unplug pair (absent in older results). */
    apiPerPair?: Record<string, number>;
    /**
     * CPU ms per plug + unplug pair by process (the services, nats-server, kube-sim, and `bench`:
     * the floor's script and the watches), over the chain's pairs and over the floor's; the
     * median over rounds. Absent in older results.
     */
    cpuPerPair?: Record<string, { chainMs: number; floorMs: number }>;
  };
  floor?: {
    acrossRounds: Directional<{ p50: Repeated; p90: Repeated; p99: Repeated }>;
    pooled: Directional<Percentiles>;
    plugStages: Record<string, Percentiles>;
    unplugStages: Record<string, Percentiles>;
    overheadRatio: Repeated;
    unplugOverheadRatio: Repeated;
    /**
     * The floor's steps alone, without its request and its status being seen (what `acrossRounds`
     * measured before 2026-12-06), and the chain against them; absent in older results.
     */
    stepsAlone?: {
      acrossRounds: Directional<{ p50: Repeated; p90: Repeated; p99: Repeated }>;
      overheadRatio: Repeated;
      unplugOverheadRatio: Repeated;
    };
  };
  throughput?: ThroughputFigures;
  /** Section 4, issued through `addvolume`; `others`: the same burst issued otherwise. */
  burst?: BurstFigures & { others?: BurstFigures[] };
  scaleOut?: {
    replicas: number;
    rssIdleMiB: Record<string, number>;
    throughput: ThroughputFigures;
    throughputRatio: number | null;
  };
  profile?: {
    service: string;
    wallS: number;
    busyMs: number;
    idleMs: number;
    topFunctions: { name: string; selfMs: number; percent: number }[];
    topAreas: { name: string; selfMs: number; percent: number }[];
    topOwnTotals?: { name: string; selfMs: number; percent: number }[];
  };
  memory?: MemoryFigures;
  guest: GuestFigures;
  /** Section 8 (absent in older results). */
  cli?: CliFigures;
  /** Section 9 (absent in older results). */
  hops?: HopsFigures;
}
