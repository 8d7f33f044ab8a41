// Benchmark of the stage runtime against a real nats-server (not a test). Run:
//   node_modules/.bin/tsx packages/bus/bench/runtime.ts [messages] [concurrency]
// Prints the no-op machine's throughput, the p50/p99 latency of one work item through one
// stage (publish → pull → lease → restore → settle → CAS persist → publish fact → ack), and the
// CPU per work item (this process and nats-server) of units worked on again and again with two
// facts each time, as a chain's stages do.
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
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

/** Emits two facts per work item: an outbox of two, as a stage's fact and next work item. */
const twoFactsMachine = setup({
  types: { events: {} as WorkEvent, emitted: {} as StageEmitted },
}).createMachine({
  initial: 'idle',
  states: {
    idle: {
      on: {
        work: {
          actions: [
            emit(({ event }) => benchFact(event, 'bound')),
            emit(({ event }) => benchFact(event, 'attached-to-node')),
          ],
        },
      },
    },
  },
});

function benchFact(event: WorkEvent, type: 'bound' | 'attached-to-node'): StageEmitted {
  return fact({
    namespace: event.item.namespace,
    vmi: event.item.vmi,
    volume: event.item.volume,
    type,
    data: { operationId: event.item.operationId, operation: 'plug', vmiUID: event.item.vmiUID },
  });
}

/** CPU milliseconds used so far by the nats-server storing in `storeDir` (from /proc). */
function natsCpuMs(storeDir: string): number {
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    const args = cmdline.split('\0');
    if (!args[0]?.endsWith('nats-server') || !args.some((a) => a.startsWith(storeDir))) continue;
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, in ticks
  }
  return Number.NaN;
}

function ownCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

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

// 3. CPU per work item: REVISITS rounds over UNITS units, two facts per item, concurrency 16.
const UNITS = 50;
const REVISITS = 10;
const cpuStage = await runStage({
  bus,
  stage: Stage.SpecWatcher,
  machine: twoFactsMachine,
  keyOf: unitKey,
  concurrency: CONCURRENCY,
});
// Waits on the facts (two per item) rather than polling the consumer, whose cost grows with time.
const facts = bus.nc.subscribe(eventFilter({ namespace: 'cpu' }));
const factsSeen = facts[Symbol.asyncIterator]();
const cpu0 = { own: ownCpuMs(), nats: natsCpuMs(nats.storeDir), at: performance.now() };
for (let round = 0; round < REVISITS; round++) {
  await Promise.all(
    Array.from({ length: UNITS }, (_, u) =>
      publisher.publishWork({ ...item(u), namespace: 'cpu' }),
    ),
  );
  for (let n = 0; n < 2 * UNITS; n++) await factsSeen.next();
}
facts.unsubscribe();
const items = UNITS * REVISITS;
const cpu1 = { own: ownCpuMs(), nats: natsCpuMs(nats.storeDir), at: performance.now() };
await cpuStage.stop();
console.log(
  `cpu per work item (${UNITS} units × ${REVISITS} visits, two facts each): this process ${((cpu1.own - cpu0.own) / items).toFixed(2)} ms, nats-server ${((cpu1.nats - cpu0.nats) / items).toFixed(2)} ms; ${Math.round(items / ((cpu1.at - cpu0.at) / 1000))} items/s`,
);
await bus.close();
