import type { WorkItem } from '@plugline/contracts';
import { startNats, waitFor, type NatsServer } from '@plugline/testkit';
import { fromPromise } from 'xstate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStage, type Bus } from '../src/index.js';
import {
  backlog,
  metricValue,
  newMetrics,
  persistedState,
  provisionedBus,
  sendWork,
} from './helpers.js';
import { effectTakes, unitKey, unitMachine, workItem } from './support.js';

let nats: NatsServer;
let buses: Bus[] = [];

beforeAll(async () => {
  nats = await startNats();
  buses = [await provisionedBus(nats.url), await provisionedBus(nats.url)];
});
afterAll(async () => {
  await Promise.all(buses.map((b) => b.close()));
  await nats?.stop();
});

describe('two replicas racing on one unit', () => {
  it('run exactly one effect per unit in 100 races; the loser yields', async () => {
    const RACES = 100;
    const effects = new Map<string, number>();
    const active = new Set<string>();
    let overlaps = 0;
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(async ({ input }: { input: { item: WorkItem } }) => {
          const unit = unitKey(input.item);
          if (active.has(unit)) overlaps++;
          active.add(unit);
          effects.set(unit, (effects.get(unit) ?? 0) + 1);
          await effectTakes(5);
          active.delete(unit);
          return 'ok';
        }),
      },
    });
    const metrics = [newMetrics(), newMetrics()];
    const replicas = await Promise.all(
      buses.map((bus, i) =>
        runStage({
          bus,
          stage: 'spec-watcher',
          machine,
          keyOf: unitKey,
          metrics: metrics[i]!,
          concurrency: 1,
          busyDelayMs: 20,
          leaseTtlMs: 5000,
          workerId: `replica-${i}`,
        }),
      ),
    );
    try {
      const items: WorkItem[] = [];
      for (let i = 0; i < RACES; i++) {
        const item = workItem(`race-${i}`);
        items.push(item);
        // two nudges for the same unit, back to back: one per replica
        await sendWork(buses[0]!, item, `${item.operationId}:a`);
        await sendWork(buses[0]!, { ...item, cause: 'resync' }, `${item.operationId}:b`);
      }
      await waitFor(async () => (await backlog(buses[0]!)) === 0, {
        timeout: 60_000,
        interval: 100,
      });
      for (const item of items) {
        expect((await persistedState(buses[0]!, unitKey(item)))?.value).toBe('applied');
      }
      expect(overlaps).toBe(0);
      expect([...effects.values()].every((n) => n === 1)).toBe(true);
      expect(effects.size).toBe(RACES);
      const contended = await Promise.all(
        metrics.map(
          async (m) =>
            (await metricValue(m, 'messagesHandled', { outcome: 'busy' })) +
            (await metricValue(m, 'messagesHandled', { outcome: 'conflict' })),
        ),
      );
      const handledBy = await Promise.all(
        metrics.map((m) => metricValue(m, 'messagesHandled', { outcome: 'done' })),
      );
      // both replicas took part, and they really did collide on units
      expect(handledBy.every((n) => n > 0)).toBe(true);
      expect(contended[0]! + contended[1]!).toBeGreaterThan(0);
      console.log(`races: done per replica ${handledBy.join('/')}, yielded ${contended.join('/')}`);
    } finally {
      await Promise.all(replicas.map((r) => r.stop()));
    }
  }, 90_000);
});
