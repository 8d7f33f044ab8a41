import {
  AckPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type StreamConfig,
} from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { ConfigError, workFilter, type Stage } from '@plugline/contracts';
import type { Bus } from './connection.js';
import { durableName, leaseBucket, snapshotBucket, STREAM_SUBJECTS, StreamName } from './names.js';
import { checkConsumerConfig, checkStreamConfig } from './version.js';

const ms = (n: number): number => n * 1_000_000; // milliseconds → nanoseconds
const HOUR = 3_600_000;

export interface StreamOptions {
  /** Replicas of every stream and bucket (1, or 3 in a cluster). Default 1. */
  replicas?: number;
  /** How long events are kept. Default 72 h. */
  eventsMaxAgeMs?: number;
  /** How long dead letters are kept. Default 7 days. */
  deadLettersMaxAgeMs?: number;
  /** `Nats-Msg-Id` duplicate window. Default 2 minutes. */
  duplicateWindowMs?: number;
  /** Memory instead of file storage (tests, benchmarks). Default false. */
  memory?: boolean;
}

export interface ConsumerOptions {
  stage: Stage;
  /** The node of a node stage. */
  node?: string;
  /** Time to ack before redelivery; long effects call `working()`. Default 30 s. */
  ackWaitMs?: number;
  /**
   * Redelivery delays after ack timeouts (JetStream `backoff`); default none. The server then
   * uses the first step as the ack wait, and requires `maxDeliver` > the number of steps.
   */
  backoffMs?: readonly number[];
  /** Messages delivered but not yet acked, across all replicas. Default 1000. */
  maxAckPending?: number;
  /** Deliveries before JetStream stops redelivering. Default -1 (unlimited). */
  maxDeliver?: number;
}

export interface ProvisionOptions extends StreamOptions {
  /** Consumers (and per-stage KV buckets) to create. */
  consumers?: readonly ConsumerOptions[];
}

function streamConfigs(o: StreamOptions): (Partial<StreamConfig> & { name: string })[] {
  const common = {
    num_replicas: o.replicas ?? 1,
    storage: o.memory ? StorageType.Memory : StorageType.File,
    duplicate_window: ms(o.duplicateWindowMs ?? 120_000),
    discard: DiscardPolicy.Old,
  };
  return [
    {
      ...common,
      name: StreamName.Work,
      subjects: [STREAM_SUBJECTS[StreamName.Work]],
      retention: RetentionPolicy.Workqueue,
      description: 'Plugline work items: one nudge per stage per unit',
    },
    {
      ...common,
      name: StreamName.Events,
      subjects: [STREAM_SUBJECTS[StreamName.Events]],
      retention: RetentionPolicy.Limits,
      max_age: ms(o.eventsMaxAgeMs ?? 72 * HOUR),
      description: 'Plugline volume events (CloudEvents)',
    },
    {
      ...common,
      name: StreamName.DeadLetters,
      subjects: [STREAM_SUBJECTS[StreamName.DeadLetters]],
      retention: RetentionPolicy.Limits,
      max_age: ms(o.deadLettersMaxAgeMs ?? 7 * 24 * HOUR),
      description: 'Plugline messages a stage could not decode, with the reason in headers',
    },
  ];
}

function isNotFound(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    code === 10059 || code === 10014 || (err instanceof Error && /not found/i.test(err.message))
  );
}

/** Creates the three streams, or updates them to the given settings. Idempotent. */
export async function ensureStreams(bus: Bus, options: StreamOptions = {}): Promise<void> {
  for (const config of streamConfigs(options)) {
    checkStreamConfig(bus.serverVersion, config);
    const name = config.name;
    try {
      const info = await bus.jsm.streams.info(name);
      const { storage: _storage, retention: _retention, ...changeable } = config;
      await bus.jsm.streams.update(name, { ...info.config, ...changeable });
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await bus.jsm.streams.add(config);
    }
  }
}

/** The consumer config of a stage (a single filter subject: all 2.9 allows). */
export function consumerConfig(o: ConsumerOptions): Partial<ConsumerConfig> {
  const config: Partial<ConsumerConfig> = {
    durable_name: durableName(o.stage, o.node),
    filter_subject: workFilter(o.stage, o.node),
    ack_policy: AckPolicy.Explicit,
    ack_wait: ms(o.ackWaitMs ?? 30_000),
    max_ack_pending: o.maxAckPending ?? 1000,
    max_deliver: o.maxDeliver ?? -1,
    description: `Plugline ${o.stage}${o.node === undefined ? '' : ` on ${o.node}`}`,
  };
  if (o.backoffMs && o.backoffMs.length > 0) {
    const maxDeliver = o.maxDeliver ?? -1;
    if (maxDeliver <= o.backoffMs.length) {
      throw new ConfigError(
        'maxDeliver',
        `must be greater than the ${o.backoffMs.length} backoff steps (JetStream requires it)`,
      );
    }
    config.backoff = o.backoffMs.map(ms);
  }
  return config;
}

/** Creates a stage's durable pull consumer, or updates its settings. Idempotent. */
export async function ensureConsumer(bus: Bus, options: ConsumerOptions): Promise<string> {
  const config = consumerConfig(options);
  checkConsumerConfig(bus.serverVersion, config);
  const name = config.durable_name!;
  try {
    await bus.jsm.consumers.info(StreamName.Work, name);
    const { durable_name: _d, filter_subject: _f, ack_policy: _a, ...changeable } = config;
    await bus.jsm.consumers.update(StreamName.Work, name, changeable);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await bus.jsm.consumers.add(StreamName.Work, config);
  }
  return name;
}

/** The KV buckets of one stage. */
export interface StageBuckets {
  snapshots: KV;
  leases: KV;
}

/** Creates (or opens) a stage's snapshot and lease buckets. Idempotent. */
export async function ensureStageBuckets(
  bus: Bus,
  stage: Stage,
  options: StreamOptions = {},
): Promise<StageBuckets> {
  const common = {
    replicas: options.replicas ?? 1,
    history: 1,
    storage: options.memory ? StorageType.Memory : StorageType.File,
  };
  const [snapshots, leases] = await Promise.all([
    bus.kvm.create(snapshotBucket(stage), {
      ...common,
      description: `Plugline ${stage} machine snapshots`,
    }),
    bus.kvm.create(leaseBucket(stage), { ...common, description: `Plugline ${stage} unit leases` }),
  ]);
  return { snapshots, leases };
}

/**
 * Provisions everything of ARCHITECTURE.md §2: the work, event and dead-letter streams, and for
 * each consumer spec its durable consumer and its stage's KV buckets. Safe to run at every start
 * of every replica.
 */
export async function provision(bus: Bus, options: ProvisionOptions = {}): Promise<void> {
  await ensureStreams(bus, options);
  const stages = new Set<Stage>();
  for (const consumer of options.consumers ?? []) {
    await ensureConsumer(bus, consumer);
    stages.add(consumer.stage);
  }
  for (const stage of stages) await ensureStageBuckets(bus, stage, options);
}
