/** The parts of a results document the Markdown summary and the chart read. */
import type { Percentiles, Repeated } from './stats.js';

interface Directional<T> {
  plug: T;
  unplug: T;
}

interface ThroughputFigures {
  vmis: number;
  volumesPerVmi: number;
  concurrency: number;
  plug: { ops: number; opsPerSecond: number; latency: Percentiles; wallS: number };
  unplug: { ops: number; opsPerSecond: number; latency: Percentiles; wallS: number };
  cpuMsPerOperation: Record<string, { plugMs: number; unplugMs: number }>;
  rssWhileTrackingMiB: Record<string, number>;
  correctness: Record<string, number | boolean>;
}

export interface Results {
  date: string;
  durationS: number;
  machine: Record<string, unknown>;
  rssIdleMiB: Record<string, number>;
  oneVolume?: {
    opsPerRound: number;
    rounds: number;
    acrossRounds: Directional<{ p50: Repeated; p90: Repeated; p99: Repeated }>;
    pooled: Directional<Percentiles>;
    plugStages: Record<string, Percentiles>;
    unplugStages: Record<string, Percentiles>;
  };
  floor?: {
    acrossRounds: Directional<{ p50: Repeated; p90: Repeated; p99: Repeated }>;
    pooled: Directional<Percentiles>;
    plugStages: Record<string, Percentiles>;
    unplugStages: Record<string, Percentiles>;
    overheadRatio: Repeated;
    unplugOverheadRatio: Repeated;
  };
  throughput?: ThroughputFigures;
  burst?: {
    volumes: number;
    podStartLatencyMs: number;
    allReadyMs: number;
    perVolume: Percentiles;
    attachmentPodsInEvents: number;
    attachmentPodsCreated: number;
    patchConflicts: number;
    allRemovedMs: number;
    failedEvents: number;
  };
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
  };
  guest: { run: boolean; reason: string };
}
