// Benchmark of the stage runtime against a real nats-server (not a test). Run:
//   node_modules/.bin/tsx packages/bus/bench/runtime.ts [messages] [concurrency]
// Prints the no-op machine's throughput and the p50/p99 latency of one work item through one
// stage (publish → pull → lease → restore → settle → CAS persist → publish fact → ack).
import { randomUUID } from 'node:crypto';
import { Stage, eventFilter, type WorkItem } from '@plugline/contracts';
import { startNats } from '@plugline/testkit';
import { assign, emit, setup } from 'xstate';
import {
  connectBus,
  durableName,
  fact,
  provision,
  Publisher,
  runStage,
  StreamName,
  type Bus,
  type StageEmitted,
  type WorkEvent,
} from '../src/index.js';

const TOTAL = Number(process.argv[2] ?? 3000);
const CONCURRENCY = Number(process.argv[3] ?? 16);
const LATENCY_SAMPLES = 300;

/** No effects: one transition per work item, nothing emitted. */
const noopMachine = setup({
  types: { context: {} as { n: number }, events: {} as WorkEvent },
}).createMachine({
  context: { n: 0 },
  initial: 'idle',
  states: { idle: { on: { work: { actions: assign({ n: ({ context }) => context.n + 1 }) } } } },
});

/** Emits one fact per work item, so the end of the stage is observable. */
const factMachine = setup({
  types: { events: {} as WorkEvent, emitted: {} as StageEmitted },
}).createMachine({
  initial: 'idle',
  states: {
    idle: {
      on: {
        work: {
          actions: emit(({ event }) =>
            fact({
              namespace: event.item.namespace,
              vmi: event.item.vmi,
              volume: event.item.volume,
              type: 'bound',
              data: {
                operationId: event.item.operationId,
                operation: 'plug',
                vmiUID: event.item.vmiUID,
              },
            }),
          ),
        },
      },
    },
  },
});

function item(i: number): WorkItem {
  return {
    v: 1,
    stage: Stage.SpecWatcher,
    namespace: 'bench',
    vmi: 'vm',
    vmiUID: 'uid-bench',
    volume: `vol-${i}`,
    operationId: `op-${randomUUID()}`,
    operation: 'plug',
    cause: 'bench',
    issuedAt: new Date().toISOString(),
  };
}

async function pending(bus: Bus): Promise<number> {
  const info = await bus.jsm.consumers.info(StreamName.Work, durableName(Stage.SpecWatcher));
  return info.num_pending + info.num_ack_pending;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

await using nats = await startNats();
const bus = await connectBus({ servers: nats.url });
await provision(bus, { consumers: [{ stage: Stage.SpecWatcher, ackWaitMs: 30_000 }] });
const publisher = new Publisher(bus);
const unitKey = (w: WorkItem): string => `${w.namespace}/${w.vmi}/${w.volume}`;

// 1. Throughput: a backlog of TOTAL items (distinct units) drained by one process.
await Promise.all(Array.from({ length: TOTAL }, (_, i) => publisher.publishWork(item(i))));
const started = performance.now();
const stage = await runStage({
  bus,
  stage: Stage.SpecWatcher,
  machine: noopMachine,
  keyOf: unitKey,
  concurrency: CONCURRENCY,
});
while ((await pending(bus)) > 0) await new Promise((r) => setTimeout(r, 20));
const seconds = (performance.now() - started) / 1000;
await stage.stop();
console.log(
  `throughput (no-op machine, ${TOTAL} units, concurrency ${CONCURRENCY}, R1 file store): ${Math.round(TOTAL / seconds)} msgs/s`,
);

// 2. Latency: one item at a time, publish → its fact observed on the event stream.
const latencyStage = await runStage({
  bus,
  stage: Stage.SpecWatcher,
  machine: factMachine,
  keyOf: unitKey,
  concurrency: 1,
});
const sub = bus.nc.subscribe(eventFilter({ namespace: 'lat' }));
const seen = sub[Symbol.asyncIterator]();
const samples: number[] = [];
for (let i = 0; i < LATENCY_SAMPLES + 20; i++) {
  const w = { ...item(i), namespace: 'lat' };
  const t0 = performance.now();
  await publisher.publishWork(w);
  await seen.next();
  if (i >= 20) samples.push(performance.now() - t0); // 20 warm-up items
}
sub.unsubscribe();
await latencyStage.stop();
samples.sort((a, b) => a - b);
console.log(
  `latency (one work item through one stage, ${LATENCY_SAMPLES} samples): p50 ${percentile(samples, 50).toFixed(1)} ms, p99 ${percentile(samples, 99).toFixed(1)} ms`,
);
await bus.close();
