/**
 * One hop of `pnpm bench`'s section 9 (hops.ts), as its own process: it takes what reaches hop
 * `--hop` and hands it to the next, with no effect in between. Four ways, from the least a hop
 * can cost to what a Plugline stage pays:
 *
 *   core       a core NATS subscription that publishes on (no durability);
 *   jetstream  a pull consumer on a work-queue stream that publishes on with JetStream (waiting
 *              for its PubAck), then acks: a durable hand-over, nothing more;
 *   exchanges  the same, with the stage runtime's other trips to NATS around it (lease, snapshot
 *              read and write, a fact, release; see RuntimeExchanges) but no machine;
 *   runtime    the stage runtime (`runStage`) as the services run it: lease, snapshot, outbox (a
 *              fact and the next stage's work item, as the chain's stages emit them), ack,
 *              release; alone on its consumer, it keeps the unit's lease between handlings.
 *
 * Prints `ready` once it consumes, and stops on SIGTERM.
 *
 *   tsx test/bench/hop-stage.ts --variant runtime --hop 0 --hops 4 --servers nats://127.0.0.1:4222
 */
import { parseArgs } from 'node:util';
import {
  connectBus,
  fact,
  nextWork,
  runStage,
  type Bus,
  type StageContext,
  type StageEmitted,
  type WorkEvent,
} from '@plugline/bus';
import { EventType, STAGES, type WorkItem } from '@plugline/contracts';
import { StorageType, type JsMsg } from '@nats-io/jetstream';
import { assign, enqueueActions, fromPromise, setup } from 'xstate';
import {
  HOP_NODE,
  HOP_STREAM,
  HopVariant,
  hopConsumer,
  hopFactSubject,
  hopSubject,
  nodeOf,
} from './hop-names.js';

const FACT_OF_HOP = [
  EventType.Requested,
  EventType.AttachedToNode,
  EventType.MountedToPod,
  EventType.Ready,
] as const;

/** A stage that forwards: idle → applying (an effect that resolves at once) → applied. */
function forwardingMachine(hop: number, hops: number) {
  return setup({
    types: {
      context: {} as StageContext & { item: WorkItem | undefined },
      events: {} as WorkEvent,
      emitted: {} as StageEmitted,
    },
    actors: { apply: fromPromise(() => Promise.resolve()) },
  }).createMachine({
    id: 'hop',
    initial: 'idle',
    context: { item: undefined },
    on: { work: { target: '.applying', actions: assign({ item: ({ event }) => event.item }) } },
    states: {
      idle: {},
      applying: {
        invoke: {
          src: 'apply',
          onDone: {
            target: 'applied',
            actions: enqueueActions(({ context, enqueue }) => {
              const item = context.item!;
              enqueue.emit(
                fact({
                  namespace: item.namespace,
                  vmi: item.vmi,
                  volume: item.volume,
                  type: FACT_OF_HOP[hop % FACT_OF_HOP.length]!,
                  data: {
                    operationId: item.operationId,
                    operation: item.operation,
                    vmiUID: item.vmiUID,
                    // What the chain's facts carry, so that every type is a valid one.
                    node: HOP_NODE,
                    attachPod: { name: 'hp-volume-bench', uid: item.vmiUID },
                    target: 'sda',
                  },
                }),
              );
              const next = STAGES[hop + 1];
              if (hop + 1 < hops && next !== undefined) {
                const { v: _v, issuedAt: _issuedAt, ...spec } = item;
                enqueue.emit(nextWork({ ...spec, stage: next, ...nodeOf(next) }));
              }
            }),
          },
        },
      },
      applied: {},
    },
  });
}

async function forwardCore(bus: Bus, hop: number, stopped: Promise<void>): Promise<void> {
  const sub = bus.nc.subscribe(hopSubject(HopVariant.Core, hop));
  await bus.nc.flush();
  console.log('ready');
  void stopped.then(() => sub.unsubscribe());
  for await (const m of sub) bus.nc.publish(hopSubject(HopVariant.Core, hop + 1), m.data);
}

/** A KV bucket, as the bus's manager opens it. */
type KV = Awaited<ReturnType<Bus['kvm']['create']>>;

const LEASE_HELD = JSON.stringify({ owner: 'bench-hop', expiresAt: Number.MAX_SAFE_INTEGER });
const LEASE_RELEASED = JSON.stringify({ owner: 'bench-hop', expiresAt: 0 });

/**
 * The stage runtime's trips to NATS for one item, in its order, with nothing else: the lease
 * (compare-and-set against this process's release) beside the snapshot's read, the snapshot's
 * write, the fact and the next item published together, the ack, the release.
 */
class RuntimeExchanges {
  #released = 0;
  #written = 0;

  private constructor(
    private readonly leases: KV,
    private readonly snapshots: KV,
  ) {}

  static async open(bus: Bus, hop: number): Promise<RuntimeExchanges> {
    const options = { history: 1, storage: StorageType.File };
    return new RuntimeExchanges(
      await bus.kvm.create(`BENCH_HOPS_LEASES_${hop}`, options),
      await bus.kvm.create(`BENCH_HOPS_SNAPSHOTS_${hop}`, options),
    );
  }

  async handOn(bus: Bus, m: JsMsg, next: string, fact: string): Promise<void> {
    const [held] = await Promise.all([
      this.leases.put('unit', LEASE_HELD, { previousSeq: this.#released }),
      this.snapshots.get('unit'),
    ]);
    const record = JSON.stringify({ v: 1, snapshot: { value: 'applied', item: m.string() } });
    this.#written = await this.snapshots.put('unit', record, { previousSeq: this.#written });
    await Promise.all([
      bus.js.publish(fact, m.data, { msgID: `fact:${m.seq}` }),
      bus.js.publish(next, m.data, { msgID: `${next}:${m.seq}` }),
    ]);
    m.ack();
    this.#released = await this.leases.put('unit', LEASE_RELEASED, { previousSeq: held });
  }
}

async function forwardJetStream(
  bus: Bus,
  variant: typeof HopVariant.JetStream | typeof HopVariant.Exchanges,
  hop: number,
  stopped: Promise<void>,
): Promise<void> {
  const exchanges =
    variant === HopVariant.Exchanges ? await RuntimeExchanges.open(bus, hop) : undefined;
  const consumer = await bus.js.consumers.get(HOP_STREAM, hopConsumer(hop));
  const messages = await consumer.consume({ max_messages: 16 });
  console.log('ready');
  void stopped.then(() => messages.stop());
  const next = hopSubject(variant, hop + 1);
  for await (const m of messages) {
    if (exchanges !== undefined) {
      await exchanges.handOn(bus, m, next, hopFactSubject(variant));
      continue;
    }
    await bus.js.publish(next, m.data, { msgID: `${next}:${m.seq}` });
    m.ack();
  }
}

async function forwardRuntime(
  bus: Bus,
  hop: number,
  hops: number,
  stopped: Promise<void>,
): Promise<void> {
  const stage = STAGES[hop];
  if (stage === undefined) throw new Error(`the runtime variant has ${STAGES.length} hops`);
  const runner = await runStage({
    bus,
    stage,
    ...nodeOf(stage),
    machine: forwardingMachine(hop, hops),
    keyOf: (w) => `${w.namespace}/${w.vmi}/${w.volume}`,
    // As a service's stage does (it runs with an instance name): every item here is one unit's,
    // and its lease comes back without a round trip, as a volume's does in sections 1-2.
    keepLeases: true,
  });
  console.log('ready');
  await stopped;
  await runner.stop();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      variant: { type: 'string' },
      hop: { type: 'string' },
      hops: { type: 'string', default: '4' },
      servers: { type: 'string' },
    },
  });
  const hop = Number(values.hop);
  const hops = Number(values.hops);
  if (!Number.isInteger(hop) || hop < 0 || !Number.isInteger(hops) || hop >= hops)
    throw new Error('--hop must be a whole number below --hops');
  if (values.servers === undefined) throw new Error('--servers is required');
  const bus = await connectBus({ servers: values.servers, name: `bench-hop-${hop}` });
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  process.once('SIGTERM', stop);
  try {
    switch (values.variant) {
      case HopVariant.Core:
        await forwardCore(bus, hop, stopped);
        break;
      case HopVariant.JetStream:
      case HopVariant.Exchanges:
        await forwardJetStream(bus, values.variant, hop, stopped);
        break;
      case HopVariant.Runtime:
        await forwardRuntime(bus, hop, hops, stopped);
        break;
      default:
        throw new Error(`--variant must be one of ${Object.values(HopVariant).join(', ')}`);
    }
  } finally {
    await bus.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
