/**
 * What the stage runtime itself costs per work item, with no Kubernetes and no effect: a real
 * nats-server, one stage in this process, and a machine whose effect resolves at once. Every
 * durable hop of the chain pays this (lease, snapshot read, snapshot write, outbox publish, ack,
 * release), so it is what a change to the runtime is measured by (issue 10). Items are in the
 * work stream before the stage starts; the figures cover only their handling.
 *
 * Two passes over the same units, each timed on its own:
 *   first  — a unit handled for the first time: its effect runs, a fact is published;
 *   again  — a nudge of a finished unit: the machine counts it (the snapshot is written), no fact.
 *
 *   pnpm --filter @plugline/e2e bench:runtime [-- --units 2000 --rounds 3 --concurrency 16]
 */
import { parseArgs } from 'node:util';
import {
  connectBus,
  fact,
  provision,
  runStage,
  type Bus,
  type StageContext,
  type StageRunner,
  type StageEmitted,
  type WorkEvent,
} from '@plugline/bus';
import { encodeMessage, Stage, workSubject, type WorkItem } from '@plugline/contracts';
import { createMetrics, type PluglineMetrics } from '@plugline/telemetry';
import { startNats, waitFor } from '@plugline/testkit';
import { assign, emit, fromPromise, setup } from 'xstate';
import { cpuSeconds } from './procs.js';

const { values } = parseArgs({
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: {
    units: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
  },
});
const units = Number(values.units);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);

const STAGE = Stage.SpecWatcher;

/** idle → applying (an effect that resolves at once, then one fact) → applied, counting nudges. */
const benchMachine = setup({
  types: {
    context: {} as StageContext & { handled: number; item?: WorkItem },
    events: {} as WorkEvent,
    emitted: {} as StageEmitted,
  },
  actors: { apply: fromPromise(() => Promise.resolve()) },
}).createMachine({
  id: 'bench',
  initial: 'idle',
  context: { handled: 0 },
  states: {
    idle: {
      on: {
        work: {
          target: 'applying',
          actions: assign({ item: ({ event }) => event.item, handled: 1 }),
        },
      },
    },
    applying: {
      invoke: {
        src: 'apply',
        onDone: {
          target: 'applied',
          actions: emit(({ context }) => {
            const item = context.item!;
            return fact({
              namespace: item.namespace,
              vmi: item.vmi,
              volume: item.volume,
              type: 'ready',
              data: {
                operationId: item.operationId,
                operation: item.operation,
                vmiUID: item.vmiUID,
                phase: 'Ready',
                target: 'sda',
              },
            });
          }),
        },
      },
    },
    applied: {
      on: { work: { actions: assign({ handled: ({ context }) => context.handled + 1 }) } },
    },
  },
});

function item(round: number, unit: number, cause: string): WorkItem {
  return {
    v: 1,
    stage: STAGE,
    namespace: 'bench',
    vmi: `vm-${round}-${unit}`,
    vmiUID: `00000000-0000-4000-8000-${String(round * 100_000 + unit).padStart(12, '0')}`,
    volume: 'data',
    operation: 'plug',
    operationId: `op-${round}-${unit}`,
    cause,
    issuedAt: new Date().toISOString(),
  };
}

async function handled(metrics: PluglineMetrics): Promise<number> {
  const m = await metrics.messagesHandled.get();
  return (m.values as { value: number }[]).reduce((sum, v) => sum + v.value, 0);
}

interface Cpu {
  stageUs: number;
  natsUs: number;
}

/** CPU used by `body` in this process and in nats-server, per item. */
async function cpuPerItem(natsPid: number, n: number, body: () => Promise<void>): Promise<Cpu> {
  const cpu = process.cpuUsage();
  const nats = cpuSeconds(natsPid);
  await body();
  const used = process.cpuUsage(cpu);
  return {
    stageUs: (used.user + used.system) / n,
    natsUs: ((cpuSeconds(natsPid) - nats) * 1e6) / n,
  };
}

function publishAll(bus: Bus, items: readonly WorkItem[]): Promise<unknown> {
  return Promise.all(
    items.map((w) =>
      bus.js.publish(workSubject(w), encodeMessage(w), { msgID: `${w.operationId}:${w.cause}` }),
    ),
  );
}

const show = (label: string, itemsPerS: number, c: Cpu): string =>
  `${label.padEnd(6)} ${itemsPerS.toFixed(0).padStart(6)} items/s   stage CPU ${c.stageUs
    .toFixed(0)
    .padStart(5)} µs/item   nats-server CPU ${c.natsUs.toFixed(0).padStart(5)} µs/item`;

async function main(): Promise<void> {
  await using nats = await startNats();
  const natsPid = nats.pid;
  if (natsPid === undefined) throw new Error('cannot find the nats-server process');
  const bus = await connectBus({ servers: nats.url, name: 'bench-runtime' });
  try {
    await provision(bus, { consumers: [{ stage: STAGE, maxAckPending: 10_000 }] });
    const metrics = createMetrics(undefined, { processMetrics: false });
    console.log(
      `stage runtime: ${units} units, concurrency ${concurrency}, ${rounds} rounds (nats-server pid ${natsPid})`,
    );
    for (let round = 0; round < rounds; round++) {
      const ids = Array.from({ length: units }, (_, i) => i);
      const allHandled = async (n: number): Promise<void> => {
        await waitFor(async () => (await handled(metrics)) >= n, {
          timeout: 600_000,
          interval: 5,
        });
      };
      const before = await handled(metrics);
      // The first pass's items go in before the stage starts: that measures publishing alone,
      // which the second pass (published while the stage runs) has subtracted.
      const firstItems = ids.map((i) => item(round, i, 'requested'));
      const publishing = await cpuPerItem(natsPid, units, () => publishAll(bus, firstItems).then());
      let started = performance.now();
      let stage: StageRunner | undefined;
      try {
        const first = await cpuPerItem(natsPid, units, async () => {
          stage = await runStage({
            bus,
            stage: STAGE,
            machine: benchMachine,
            keyOf: (w) => `${w.namespace}/${w.vmi}/${w.volume}`,
            metrics,
            concurrency,
          });
          await allHandled(before + units);
        });
        const firstRate = units / ((performance.now() - started) / 1000);
        started = performance.now();
        const total = await cpuPerItem(natsPid, units, async () => {
          await publishAll(
            bus,
            ids.map((i) => item(round, i, 'informer-vmi')),
          );
          await allHandled(before + 2 * units);
        });
        const againRate = units / ((performance.now() - started) / 1000);
        const again = {
          stageUs: total.stageUs - publishing.stageUs,
          natsUs: total.natsUs - publishing.natsUs,
        };
        console.log(
          `round ${round + 1}\n  ${show('first', firstRate, first)}\n  ${show('again', againRate, again)}` +
            `\n  (publishing alone: ${publishing.stageUs.toFixed(0)} / ${publishing.natsUs.toFixed(0)} µs/item)`,
        );
      } finally {
        await stage?.stop();
      }
    }
  } finally {
    await bus.close();
  }
}

await main();
