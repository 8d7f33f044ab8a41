import {
  AckPolicy,
  DiscardPolicy,
  jetstream,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { NoRespondersError, RequestError, TimeoutError } from '@nats-io/nats-core';
import { ConfigError, PluglineError, workFilter, type Stage } from '@plugline/contracts';
import type { Bus } from './connection.js';
import { abortableDelay } from './publish.js';
import { ReplyLostError } from './errors.js';
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
  /**
   * Timeout of each provisioning API call. Default 5 s on one server, 30 s with replicas > 1: a
   * fresh 2.9 cluster takes longer than the client's 5 s to place an R3 stream while other
   * services provision at the same time.
   */
  apiTimeoutMs?: number;
  /** How long a call failing transiently (timeout, no leader yet, a race) is retried. Default 60 s. */
  retryForMs?: number;
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
  /**
   * Messages delivered but not yet acked, across all replicas. Default
   * {@link DEFAULT_WORK_MAX_ACK_PENDING}.
   */
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

/** Provisioning kept failing transiently (timeouts, no leader) for the whole retry period. */
export class ProvisionError extends PluglineError {
  override name = 'ProvisionError';
  constructor(
    readonly what: string,
    retriedMs: number,
    cause: unknown,
  ) {
    super('ProvisionFailed', `could not provision ${what} within ${retriedMs} ms`, { cause });
  }
}

/**
 * JetStream API error codes worth another try: the cluster has no leader yet (10008), cannot
 * place the replicas yet (10005 no suitable peers, 10023 insufficient resources), or another
 * service created the same stream (10058; or 10065 "subjects overlap with an existing stream",
 * which nats-server 2.9 answers to the loser of two creates of one stream) or consumer (10013,
 * 10148) a moment before us. The retry reads the stream the winner made.
 */
const TRANSIENT_API_CODES = new Set([10005, 10008, 10013, 10023, 10058, 10065, 10148]);

/** True for failures that go away by themselves on a cluster forming or failing over. */
export function isTransientProvisionError(err: unknown): boolean {
  if (err instanceof TimeoutError || err instanceof NoRespondersError) return true;
  if (err instanceof ReplyLostError) return true;
  // A request error is as transient as its cause (a permission violation is not).
  if (err instanceof RequestError) return isTransientProvisionError(err.cause);
  if (err instanceof JetStreamApiError) {
    return TRANSIENT_API_CODES.has(err.code) || err.status >= 500;
  }
  return err instanceof Error && /timeout|temporarily unavailable|no responders/i.test(err.message);
}

/** The provisioning handles: the bus's own, or ones with a longer API timeout on a cluster. */
interface Provisioner {
  jsm: JetStreamManager;
  kvm: Kvm;
  retryForMs: number;
}

async function provisioner(bus: Bus, o: StreamOptions): Promise<Provisioner> {
  const retryForMs = o.retryForMs ?? 60_000;
  const timeout = o.apiTimeoutMs ?? ((o.replicas ?? 1) > 1 ? 30_000 : undefined);
  if (timeout === undefined) return { jsm: bus.jsm, kvm: bus.kvm, retryForMs };
  const js = jetstream(bus.nc, { timeout });
  return { jsm: await js.jetstreamManager(), kvm: new Kvm(js), retryForMs };
}

/**
 * Runs `attempt` again after transient failures (see {@link isTransientProvisionError}), with a
 * doubling delay, for up to `retryForMs`. Every attempt re-reads the current state, so a retry
 * after a lost answer or a racing creator finds the object and does not create it twice.
 */
async function withRetries<T>(what: string, p: Provisioner, attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + p.retryForMs;
  let delay = 100;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (!isTransientProvisionError(err)) throw err;
      if (Date.now() + delay > deadline) throw new ProvisionError(what, p.retryForMs, err);
      await abortableDelay(delay);
      delay = Math.min(delay * 2, 2000);
    }
  }
}

/** True when `actual` has every field of `wanted` (deep, as JSON). */
function hasSettings(actual: object, wanted: object): boolean {
  const a = actual as Record<string, unknown>;
  return Object.entries(wanted).every(
    ([k, v]) => v === undefined || JSON.stringify(a[k]) === JSON.stringify(v),
  );
}

/**
 * Creates the three streams, or updates them to the given settings (replicas included); a stream
 * that already has them is left alone, so services starting after `plugctl up` (or a test)
 * provisioned only read. Idempotent, and safe to run from several services at once.
 */
export async function ensureStreams(bus: Bus, options: StreamOptions = {}): Promise<void> {
  const p = await provisioner(bus, options);
  for (const config of streamConfigs(options)) {
    checkStreamConfig(bus.serverVersion, config);
    await withRetries(`stream ${config.name}`, p, () => ensureStream(p.jsm, config));
  }
}

async function ensureStream(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
): Promise<void> {
  const { storage: _storage, retention: _retention, ...changeable } = config;
  try {
    const info = await jsm.streams.info(config.name);
    if (hasSettings(info.config, changeable)) return;
    await jsm.streams.update(config.name, { ...info.config, ...changeable });
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add(config);
  }
}

/**
 * The work consumers' default bound on unacknowledged messages. A unit that waits (a detach the
 * guest has not finished, a pod still starting) keeps its work item unacknowledged until its
 * deadline (a delayed `nak`), so every unit may hold one at once. With JetStream's default of 1,000
 * the consumer stopped delivering once 1,000 units waited, and the nudge that would have woken a
 * unit sat behind them until the first deadlines passed: the last unplugs of 1,000 at once took
 * 40 s instead of 0.3 s. Pull consumers fetch in small batches, so a high bound costs nothing.
 */
export const DEFAULT_WORK_MAX_ACK_PENDING = 100_000;

/** The consumer config of a stage (a single filter subject: all 2.9 allows). */
export function consumerConfig(o: ConsumerOptions): Partial<ConsumerConfig> {
  const config: Partial<ConsumerConfig> = {
    durable_name: durableName(o.stage, o.node),
    filter_subject: workFilter(o.stage, o.node),
    ack_policy: AckPolicy.Explicit,
    ack_wait: ms(o.ackWaitMs ?? 30_000),
    max_ack_pending: o.maxAckPending ?? DEFAULT_WORK_MAX_ACK_PENDING,
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
export async function ensureConsumer(
  bus: Bus,
  options: ConsumerOptions,
  streamOptions: StreamOptions = {},
): Promise<string> {
  const config = consumerConfig(options);
  checkConsumerConfig(bus.serverVersion, config);
  const name = config.durable_name!;
  const p = await provisioner(bus, streamOptions);
  await withRetries(`consumer ${name}`, p, async () => {
    const { durable_name: _d, filter_subject: _f, ack_policy: _a, ...changeable } = config;
    try {
      const info = await p.jsm.consumers.info(StreamName.Work, name);
      // With a backoff the server keeps its own ack wait: compare the rest.
      const { ack_wait: _w, ...compared } = changeable;
      if (hasSettings(info.config, config.backoff ? compared : changeable)) return;
      await p.jsm.consumers.update(StreamName.Work, name, changeable);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await p.jsm.consumers.add(StreamName.Work, config);
    }
  });
  return name;
}

/** The KV buckets of one stage. */
export interface StageBuckets {
  snapshots: KV;
  leases: KV;
}

/** The replicas of the work stream (1 when it cannot be read): what a stage's buckets follow. */
export async function workStreamReplicas(bus: Bus): Promise<number> {
  try {
    const info = await bus.jsm.streams.info(StreamName.Work);
    return Math.max(1, info.config.num_replicas);
  } catch {
    return 1;
  }
}

/**
 * Creates (or opens) a stage's snapshot and lease buckets. Idempotent. Without `replicas` the
 * buckets get the work stream's. With more than one replica the returned handles read through
 * the bucket's stream leader (no direct get): a follower, e.g. a node just back, can answer a
 * direct get with a value older than the last write, and a stale lease or snapshot read would
 * only end in compare-and-set conflicts (or worse, an unchanged snapshot is not even written).
 */
export async function ensureStageBuckets(
  bus: Bus,
  stage: Stage,
  options: StreamOptions = {},
): Promise<StageBuckets> {
  const replicas = options.replicas ?? (await workStreamReplicas(bus));
  const o = { ...options, replicas };
  const p = await provisioner(bus, o);
  const common = {
    replicas,
    history: 1,
    storage: options.memory ? StorageType.Memory : StorageType.File,
    ...(replicas > 1 ? { allow_direct: false } : {}),
  };
  const create = (name: string, description: string): Promise<KV> =>
    withRetries(`bucket ${name}`, p, () => p.kvm.create(name, { ...common, description }));
  const [snapshots, leases] = await Promise.all([
    create(snapshotBucket(stage), `Plugline ${stage} machine snapshots`),
    create(leaseBucket(stage), `Plugline ${stage} unit leases`),
  ]);
  if (replicas === 1 && p.kvm === bus.kvm) return { snapshots, leases };
  // The handles of the provisioning timeout would make every lease renewal wait that long.
  const [s2, l2] = await Promise.all([
    bus.kvm.open(snapshotBucket(stage)),
    bus.kvm.open(leaseBucket(stage)),
  ]);
  return { snapshots: s2, leases: l2 };
}

/**
 * Provisions everything of ARCHITECTURE.md §2: the work, event and dead-letter streams, and for
 * each consumer spec its durable consumer and its stage's KV buckets. Safe to run at every start
 * of every replica; what already has the wanted settings is only read.
 */
export async function provision(bus: Bus, options: ProvisionOptions = {}): Promise<void> {
  await ensureStreams(bus, options);
  const stages = new Set<Stage>();
  for (const consumer of options.consumers ?? []) {
    await ensureConsumer(bus, consumer, options);
    stages.add(consumer.stage);
  }
  for (const stage of stages) await ensureStageBuckets(bus, stage, options);
}
