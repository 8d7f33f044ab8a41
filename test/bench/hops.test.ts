/** Section 9 of the benchmark: four hops alone, each way on a real nats-server and processes. */
import { describe, expect, it } from 'vitest';
import { HopVariant } from './hop-names.js';
import { hopWays, runHopsSection, type HopsFigures, type HopsRound } from './hops.js';
import { hopsLines } from './markdown-sections.js';
import { childrenOf } from './procs.js';

describe('--hop-ways', () => {
  it('measures every way when empty, else the ones named, in the order named', () => {
    expect(hopWays('')).toEqual(Object.values(HopVariant));
    expect(hopWays(' runtime, core ')).toEqual([HopVariant.Runtime, HopVariant.Core]);
  });

  it('refuses a way it does not know, naming the ones it does', () => {
    expect(() => hopWays('runtime,grpc')).toThrow(/core, jetstream, exchanges, runtime/);
  });
});

describe('four hops alone', () => {
  it('hands every item through four processes each way, and leaves no process behind', async () => {
    const ways = Object.values(HopVariant);
    const figures = await runHopsSection({ ops: 5, repeat: 1, ways }, () => undefined);
    expect(figures.hops).toBe(4);
    for (const way of ways) {
      const measured = figures.variants[way]?.medianRound;
      expect(measured?.latencyMs.n, way).toBe(5);
      expect(measured?.latencyMs.p50, way).toBeGreaterThan(0);
    }
    expect(childrenOf(process.pid)).toEqual([]);
  }, 120_000);
});

describe('its Markdown', () => {
  const measured = (variant: HopVariant, p50: number): HopsRound => ({
    variant,
    latencyMs: { n: 200, p50, p90: p50, p99: p50 * 2, min: p50, max: p50 * 3, mean: p50 },
    cpuMs: { perHop: p50 / 4, natsServer: p50 / 2, driver: 0.5 },
  });
  const figure = (variant: HopVariant, p50: number) => ({
    p50: { median: p50, min: p50, max: p50, runs: [p50] },
    p99: { median: p50 * 2, min: p50 * 2, max: p50 * 2, runs: [p50 * 2] },
    medianRound: measured(variant, p50),
  });

  it('splits the chain over its floor into the runtime hops and the rest, with bare hops beside', () => {
    const h: HopsFigures = {
      hops: 4,
      ops: 200,
      variants: {
        [HopVariant.JetStream]: figure(HopVariant.JetStream, 2),
        [HopVariant.Runtime]: figure(HopVariant.Runtime, 9),
      },
      rounds: [[measured(HopVariant.JetStream, 2), measured(HopVariant.Runtime, 9)]],
    };
    const text = hopsLines(h, { chainPlugP50: 20, floorPlugP50: 7 }).join('\n');
    // A row per way measured, none for the ways not measured.
    expect(text).toMatch(/\| bare JetStream .* \| 2 \(2–2\) \| 4 \(4–4\) \| 0\.5 \| 1 \|/);
    expect(text).toMatch(/\| the stage runtime .* \| 9 \(9–9\) \|/);
    expect(text).not.toMatch(/core NATS/);
    // (20 - 9 + 2) / 7
    expect(text).toContain('plus 13 ms');
    expect(text).toContain('at about 1.86× its floor');
  });

  it('leaves the split out without sections 1–2', () => {
    const h: HopsFigures = {
      hops: 4,
      ops: 200,
      variants: { [HopVariant.Runtime]: figure(HopVariant.Runtime, 9) },
      rounds: [[measured(HopVariant.Runtime, 9)]],
    };
    const text = hopsLines(h, { chainPlugP50: undefined, floorPlugP50: undefined }).join('\n');
    expect(text).toContain('## 9. Four hops alone');
    expect(text).not.toContain('its floor');
  });
});
