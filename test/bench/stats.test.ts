/** The benchmark's summaries: what its results files and README figures are made of. */
import { describe, expect, it } from 'vitest';
import { medianRound, percentiles, repeated, sweepFigures } from './stats.js';

describe('repeated (a figure over rounds)', () => {
  it('is the median with min and max, and keeps every round as measured, in order', () => {
    const r = repeated([36.154, 29.171, 33.246, 41.5]);
    expect(r).toEqual({ median: 33.25, min: 29.17, max: 41.5, runs: [36.15, 29.17, 33.25, 41.5] });
  });

  it('leaves out rounds that measured nothing from the summary, not from the runs', () => {
    const r = repeated([Number.NaN, 12, 10]);
    expect(r.median).toBe(10);
    expect(r.min).toBe(10);
    expect(r.max).toBe(12);
    expect(r.runs).toEqual([Number.NaN, 12, 10]);
  });
});

describe('medianRound', () => {
  it('picks the round whose figure is the median, so its details match its headline', () => {
    const rounds = [{ rate: 36.15 }, { rate: 29.17 }, { rate: 33.24 }];
    const m = medianRound(rounds, (r) => r.rate);
    expect(m.round).toBe(rounds[2]);
    expect(m.number).toBe(3);
    expect(m.figure).toMatchObject({ median: 33.24, min: 29.17, max: 36.15 });
  });
});

describe('percentiles', () => {
  it('takes the nearest rank of the finite samples', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    const p = percentiles([...values, Number.POSITIVE_INFINITY]);
    expect(p).toMatchObject({ n: 100, p50: 50, p90: 90, p99: 99, min: 1, max: 100, mean: 50.5 });
  });
});

describe('sweepFigures (throughput against client concurrency)', () => {
  const point = (concurrency: number, ops: number[], p99: number[], correct = true) => ({
    concurrency,
    plugOpsPerSecond: repeated(ops),
    plugP99Ms: repeated(p99),
    correct,
  });

  it('names the concurrency with the most plug ops/s whose median p99 stays within the bound', () => {
    const sweep = sweepFigures([
      point(16, [80, 84, 83], [300, 310, 290]),
      point(32, [95, 99, 101], [520, 990, 1400]),
      point(64, [110, 112, 108], [1100, 1200, 900]),
    ]);
    expect(sweep.bestWithinBound).toBe(32);
    expect(sweep.points.map((p) => p.concurrency)).toEqual([16, 32, 64]);
    expect(sweep.p99BoundMs).toBe(1000);
  });

  it('never picks an incorrect run, and names none when nothing stays within the bound', () => {
    expect(
      sweepFigures([point(16, [80], [300]), point(32, [120], [400], false)]).bestWithinBound,
    ).toBe(16);
    expect(sweepFigures([point(64, [120], [1500])])).not.toHaveProperty('bestWithinBound');
  });
});
