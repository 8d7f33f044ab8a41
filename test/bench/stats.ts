/** Percentiles and summaries of the benchmark's samples (milliseconds). */

export interface Percentiles {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of sorted values (`q` in 0..1). */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

export function percentiles(values: readonly number[]): Percentiles {
  const sorted = [...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  const sum = sorted.reduce((s, v) => s + v, 0);
  return {
    n: sorted.length,
    p50: round(percentile(sorted, 0.5)),
    p90: round(percentile(sorted, 0.9)),
    p99: round(percentile(sorted, 0.99)),
    min: round(sorted[0] ?? Number.NaN),
    max: round(sorted.at(-1) ?? Number.NaN),
    mean: round(sorted.length === 0 ? Number.NaN : sum / sorted.length),
  };
}

/** A figure over repeated runs: the median, with min and max. */
export interface Repeated {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export function repeated(runs: readonly number[]): Repeated {
  const sorted = [...runs].filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return {
    median: round(percentile(sorted, 0.5)),
    min: round(sorted[0] ?? Number.NaN),
    max: round(sorted.at(-1) ?? Number.NaN),
    runs: runs.map((v) => round(v)),
  };
}

/**
 * Of repeated rounds, the one whose `value` is the median (nearest rank: a round that ran), its
 * 1-based number, and the figure over all rounds.
 */
export function medianRound<T>(
  rounds: readonly T[],
  value: (r: T) => number,
): { round: T; number: number; figure: Repeated } {
  const figure = repeated(rounds.map(value));
  const i = Math.max(
    0,
    rounds.findIndex((r) => round(value(r)) === figure.median),
  );
  return { round: rounds[i] as T, number: i + 1, figure };
}

export function round(v: number, digits = 2): number {
  if (!Number.isFinite(v)) return v;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** The p99 bound of the throughput target. */
export const THROUGHPUT_P99_BOUND_MS = 1000;

/** One client concurrency of the throughput sweep. */
export interface SweepPoint {
  concurrency: number;
  plugOpsPerSecond: Repeated;
  plugP99Ms: Repeated;
  correct: boolean;
}

/**
 * The sweep, and of its concurrencies the one with the most plug ops/s whose rounds were correct
 * and kept plug p99 within the bound (medians over rounds): the throughput the target asks for.
 */
export function sweepFigures<P extends SweepPoint>(
  points: readonly P[],
  p99BoundMs = THROUGHPUT_P99_BOUND_MS,
): { p99BoundMs: number; points: P[]; bestWithinBound?: number } {
  let best: P | undefined;
  for (const p of points) {
    if (!p.correct || p.plugP99Ms.median > p99BoundMs) continue;
    if (best === undefined || p.plugOpsPerSecond.median > best.plugOpsPerSecond.median) best = p;
  }
  return {
    p99BoundMs,
    points: [...points],
    ...(best === undefined ? {} : { bestWithinBound: best.concurrency }),
  };
}
