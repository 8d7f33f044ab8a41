/**
 * Section 9: what four hand-overs cost on this machine, with no Kubernetes and no effect, so the
 * chain's overhead over its floor can be split into what the hops cost and what the stages add.
 * Four processes in a row (hop-stage.ts), an item sent to the first, timed until the last hop's
 * hand-over reaches this process; sequential, one item at a time, as section 1 plugs. Four
 * ways (see hop-stage.ts): core NATS, bare JetStream (publish, consume, ack), bare JetStream with
 * the runtime's other trips to NATS, and the stage runtime, whose last hop's fact this process
 * consumes as the status projector does.
 */
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  type ConsumerMessages,
} from '@nats-io/jetstream';
import { connectBus, provision, StreamName, type Bus } from '@plugline/bus';
import {
  encodeMessage,
  EventType,
  eventSubject,
  decodeEvent,
  STAGES,
  workMsgId,
  workSubject,
  type WorkItem,
} from '@plugline/contracts';
import { spawnService, startNats, type ServiceProcess } from '@plugline/testkit';
import { HOP_STREAM, HopVariant, hopConsumer, hopSubject, nodeOf } from './hop-names.js';
import { childrenOf, cpuSeconds } from './procs.js';
import {
  medianRound,
  percentiles,
  repeated,
  round,
  type Percentiles,
  type Repeated,
} from './stats.js';

const HOP_STAGE = fileURLToPath(new URL('./hop-stage.ts', import.meta.url));
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const HOPS = STAGES.length;
const WARMUP = 20;
const ARRIVAL_TIMEOUT_MS = 10_000;

export interface HopsConfig {
  ops: number;
  repeat: number;
  /** The ways to measure (`--hop-ways`), each round in this order. */
  ways: readonly HopVariant[];
}

/** `--hop-ways core,runtime` (empty: all four). */
export function hopWays(value: string | undefined): HopVariant[] {
  const all = Object.values(HopVariant);
  const names = (value ?? '')
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
  if (names.length === 0) return all;
  return names.map((name) => {
    const way = all.find((v) => v === name);
    if (way === undefined) throw new Error(`--hop-ways takes ${all.join(', ')}, comma-separated`);
    return way;
  });
}

/** CPU milliseconds per item sent: a hop process's (the mean of the four), nats-server's, ours. */
export interface HopsCpu {
  perHop: number;
  natsServer: number;
  driver: number;
}

export interface HopsRound {
  variant: HopVariant;
  latencyMs: Percentiles;
  cpuMs: HopsCpu;
}

export interface HopsFigures {
  hops: number;
  ops: number;
  /** Per variant: p50 and p99 over rounds (median, min–max), and the median round (by p50). */
  variants: Partial<Record<HopVariant, { p50: Repeated; p99: Repeated; medianRound: HopsRound }>>;
  rounds: HopsRound[][];
}

/** Waits for one arrival per key, in the order they are asked for (one at a time here). */
class Arrivals {
  readonly #waiting = new Map<string, () => void>();

  expect(key: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(key);
        reject(new Error(`section 9: ${key} did not arrive within ${ARRIVAL_TIMEOUT_MS} ms`));
      }, ARRIVAL_TIMEOUT_MS);
      this.#waiting.set(key, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  arrived(key: string): void {
    const resolve = this.#waiting.get(key);
    this.#waiting.delete(key);
    resolve?.();
  }
}

/** One way of handing over: how to send an item to the first hop and hear it past the last. */
interface Route {
  send(op: number): Promise<void>;
  close(): void;
}

async function coreRoute(bus: Bus, arrivals: Arrivals): Promise<Route> {
  const sub = bus.nc.subscribe(hopSubject(HopVariant.Core, HOPS), {
    callback: (_err, m) => arrivals.arrived(m.string()),
  });
  await bus.nc.flush();
  return {
    send: (op) => {
      bus.nc.publish(hopSubject(HopVariant.Core, 0), String(op));
      return Promise.resolve();
    },
    close: () => sub.unsubscribe(),
  };
}

async function consumeInto(
  messages: ConsumerMessages,
  keyOf: (data: Uint8Array) => string | undefined,
  arrivals: Arrivals,
): Promise<void> {
  for await (const m of messages) {
    const key = keyOf(m.data);
    m.ack();
    if (key !== undefined) arrivals.arrived(key);
  }
}

async function jetStreamRoute(
  variant: typeof HopVariant.JetStream | typeof HopVariant.Exchanges,
  bus: Bus,
  arrivals: Arrivals,
): Promise<Route> {
  await bus.jsm.streams.add({
    name: HOP_STREAM,
    subjects: [`bench.hops.${variant}.*`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
  });
  for (let hop = 0; hop <= HOPS; hop++) {
    await bus.jsm.consumers.add(HOP_STREAM, {
      durable_name: hopConsumer(hop),
      filter_subject: hopSubject(variant, hop),
      ack_policy: AckPolicy.Explicit,
    });
  }
  const consumer = await bus.js.consumers.get(HOP_STREAM, hopConsumer(HOPS));
  const messages = await consumer.consume({ max_messages: 16 });
  const decoder = new TextDecoder();
  void consumeInto(messages, (data) => decoder.decode(data), arrivals);
  return {
    send: async (op) => {
      await bus.js.publish(hopSubject(variant, 0), String(op), { msgID: `0:${op}` });
    },
    close: () => messages.stop(),
  };
}

/** The one unit every item of the runtime variant is about, as a plug's volume is in section 1. */
const HOPS_VOLUME = { namespace: 'bench-hops', vmi: 'vm-hops', volume: 'data' } as const;

/** The operation the runtime variant's item `op` is, which its last fact names. */
function operationIdOf(op: number): string {
  return `op-${String(op).padStart(8, '0')}`;
}

function workItem(op: number): WorkItem {
  const stage = STAGES[0]!;
  return {
    v: 1,
    stage,
    ...nodeOf(stage),
    ...HOPS_VOLUME,
    vmiUID: '00000000-0000-4000-8000-000000000009',
    operationId: operationIdOf(op),
    operation: 'plug',
    cause: 'requested',
    issuedAt: new Date().toISOString(),
  };
}

async function runtimeRoute(bus: Bus, arrivals: Arrivals): Promise<Route> {
  await provision(bus, { consumers: STAGES.map((stage) => ({ stage, ...nodeOf(stage) })) });
  const consumerName = 'bench-hops-facts';
  await bus.jsm.consumers.add(StreamName.Events, {
    durable_name: consumerName,
    // Only the last hop's fact, as the projector would be woken by each.
    filter_subject: eventSubject(HOPS_VOLUME, EventType.Ready),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.New,
  });
  const consumer = await bus.js.consumers.get(StreamName.Events, consumerName);
  const messages = await consumer.consume({ max_messages: 16 });
  void consumeInto(
    messages,
    (data) => {
      const decoded = decodeEvent(data);
      return decoded.ok ? decoded.value.data.operationId : undefined;
    },
    arrivals,
  );
  return {
    send: async (op) => {
      const item = workItem(op);
      await bus.js.publish(workSubject(item), encodeMessage(item), { msgID: workMsgId(item) });
    },
    close: () => messages.stop(),
  };
}

const ROUTES: Record<HopVariant, (bus: Bus, arrivals: Arrivals) => Promise<Route>> = {
  [HopVariant.Core]: coreRoute,
  [HopVariant.JetStream]: (bus, arrivals) => jetStreamRoute(HopVariant.JetStream, bus, arrivals),
  [HopVariant.Exchanges]: (bus, arrivals) => jetStreamRoute(HopVariant.Exchanges, bus, arrivals),
  [HopVariant.Runtime]: runtimeRoute,
};

/** The key an item's arrival is heard by (see each route). */
function arrivalKey(variant: HopVariant, op: number): string {
  return variant === HopVariant.Runtime ? operationIdOf(op) : String(op);
}

async function startHops(variant: HopVariant, servers: string): Promise<ServiceProcess[]> {
  const started: ServiceProcess[] = [];
  try {
    for (let hop = 0; hop < HOPS; hop++) {
      started.push(
        await spawnService(process.execPath, {
          args: [
            '--import',
            TSX_LOADER,
            HOP_STAGE,
            ...['--variant', variant, '--hop', String(hop), '--hops', String(HOPS)],
            ...['--servers', servers],
          ],
          readyPattern: /^ready$/m,
          readyTimeout: 30_000,
        }),
      );
    }
    return started;
  } catch (err) {
    await Promise.all(started.map((p) => p.stop()));
    throw err;
  }
}

/** CPU seconds so far: each hop process (with any child), nats-server, and this process. */
function cpuNow(hops: readonly ServiceProcess[], natsPid: number): CpuReading {
  const ofTree = (pid: number): number =>
    childrenOf(pid).reduce((sum, child) => sum + cpuSeconds(child), cpuSeconds(pid));
  return {
    hops: hops.map((h) => ofTree(h.pid)),
    nats: cpuSeconds(natsPid),
    driver: process.cpuUsage(),
  };
}

interface CpuReading {
  hops: number[];
  nats: number;
  driver: NodeJS.CpuUsage;
}

function cpuPerItem(from: CpuReading, to: CpuReading, ops: number): HopsCpu {
  const perOp = (seconds: number): number => round((seconds * 1000) / ops);
  const hopSeconds = to.hops.reduce((sum, t, i) => sum + t - (from.hops[i] ?? t), 0);
  const driver = process.cpuUsage(from.driver);
  return {
    perHop: perOp(hopSeconds / to.hops.length),
    natsServer: perOp(to.nats - from.nats),
    driver: perOp((driver.user + driver.system) / 1e6),
  };
}

/** One variant, one round: a fresh server, four processes, warm-up, then `ops` timed items. */
async function measure(variant: HopVariant, ops: number): Promise<HopsRound> {
  await using nats = await startNats();
  const bus = await connectBus({ servers: nats.url, name: 'bench-hops' });
  try {
    const arrivals = new Arrivals();
    const route = await ROUTES[variant](bus, arrivals);
    const hops = await startHops(variant, nats.url);
    try {
      const natsPid = nats.pid;
      if (natsPid === undefined) throw new Error('section 9 needs a nats-server process here');
      const latencies: number[] = [];
      let from = cpuNow(hops, natsPid);
      for (let op = 0; op < WARMUP + ops; op++) {
        if (op === WARMUP) from = cpuNow(hops, natsPid);
        const arrived = arrivals.expect(arrivalKey(variant, op));
        // Awaited below; a send that fails must not leave it to reject unheard.
        arrived.catch(() => undefined);
        const t0 = performance.now();
        await route.send(op);
        await arrived;
        if (op >= WARMUP) latencies.push(performance.now() - t0);
      }
      return {
        variant,
        latencyMs: percentiles(latencies),
        cpuMs: cpuPerItem(from, cpuNow(hops, natsPid), ops),
      };
    } finally {
      await Promise.all(hops.map((p) => p.stop()));
      route.close();
    }
  } finally {
    await bus.close();
  }
}

export async function runHopsSection(
  cfg: HopsConfig,
  log: (msg: string) => void,
): Promise<HopsFigures> {
  const variants = cfg.ways;
  const rounds: HopsRound[][] = [];
  for (let r = 0; r < cfg.repeat; r++) {
    const round: HopsRound[] = [];
    for (const variant of variants) {
      const measured = await measure(variant, cfg.ops);
      round.push(measured);
      const { latencyMs: l, cpuMs: c } = measured;
      log(
        `section 9 round ${r + 1}/${cfg.repeat}: ${variant} p50 ${l.p50} p99 ${l.p99} ms; ` +
          `CPU per item ${c.perHop} ms a hop, nats-server ${c.natsServer}, bench ${c.driver}`,
      );
    }
    rounds.push(round);
  }
  const figures = Object.fromEntries(
    variants.map((variant) => {
      const ofVariant = rounds.map((r) => r.find((x) => x.variant === variant)!);
      const { round: median, figure: p50 } = medianRound(ofVariant, (r) => r.latencyMs.p50);
      const p99 = repeated(ofVariant.map((r) => r.latencyMs.p99));
      return [variant, { p50, p99, medianRound: median }];
    }),
  ) as HopsFigures['variants'];
  return { hops: HOPS, ops: cfg.ops, variants: figures, rounds };
}
