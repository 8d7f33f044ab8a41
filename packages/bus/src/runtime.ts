import { randomUUID } from 'node:crypto';
import type { ConsumerMessages, JsMsg } from '@nats-io/jetstream';
import type { KV, KvEntry } from '@nats-io/kv';
import {
  asError,
  deadLetterSubject,
  decodeWorkItem,
  EventType,
  MalformedMessageError,
  TerminalError,
  workSubject,
  type ParseResult,
  type Stage,
  type WorkItem,
} from '@plugline/contracts';
import {
  childLogger,
  createMetrics,
  extractTrace,
  inTrace,
  Outcome,
  recordSpan,
  ROOT_CONTEXT,
  SpanStatusCode,
  withSpan,
  WorkStep,
  type Logger,
  type PluglineMetrics,
  type Span,
  underSpan,
} from '@plugline/telemetry';
import {
  createActor,
  type AnyActorRef,
  type AnyMachineSnapshot,
  type AnyStateMachine,
  type EventFromLogic,
  type InputFrom,
} from 'xstate';
import type { Bus } from './connection.js';
import { LeaseLostError, SettleTimeoutError, isReplyLost } from './errors.js';
import { BoundedMap } from './bounded-map.js';
import { StageReplicas } from './replicas.js';
import {
  isCasFailure,
  leaseHandover,
  LeaseManager,
  type Lease,
  type LeaseResult,
} from './lease.js';
import { durableName, kvKey, StreamName } from './names.js';
import { ServerFeature, supportsFeature } from './version.js';
import { failedEvent, toOutboxEntry, type OutboxEntry } from './outbox.js';
import { ensureStageBuckets, type StageBuckets } from './provision.js';
import { HeldItems } from './held.js';
import { ParkedItems } from './parked.js';
import { Slots } from './slots.js';
import { eventMessage, Publisher, workMessage } from './publish.js';
import { ackWaitMsOf, KeptConsumption } from './consume.js';
import { ReapRefusedError } from './work-items.js';
import { logWorkRepairs, requeuedCount, WorkQueueRepair } from './work-repair.js';
import { StepTimer } from './step-timer.js';

/**
 * Context fields the default disposition reads. A stage machine's context may extend this.
 * `wakeAt` is the deadline (epoch ms) of a `waiting` or `retry` state: timers live in context,
 * not in XState `after` delays, so they survive a restart.
 */
export interface StageContext {
  wakeAt?: number | undefined;
  failure?: { reason: string; message: string } | undefined;
}

/** The event the runtime sends for each work message (unless `toEvent` maps it differently). */
export interface WorkEvent {
  type: 'work';
  item: WorkItem;
  /** JetStream delivery count (1 on first delivery). */
  attempt: number;
  /** Epoch ms when this delivery was received; compare with `wakeAt` deadlines. */
  receivedAt: number;
  /** What `load` returned, when the stage gave one. */
  observed?: unknown;
}

/** What becomes of a work message once the machine has settled. */
export type Disposition =
  /** `ack` */
  | { kind: 'done' }
  /** `nak(delayMs)`: a precondition is not met yet; not an error. */
  | { kind: 'waiting'; delayMs: number }
  /** `nak(delayMs ?? backoff)`: transient failure (`failure`: what the machine recorded of it). */
  | {
      kind: 'retry';
      delayMs?: number;
      error?: Error;
      failure?: { reason: string; message: string };
    }
  /** `term(reason)` + a `failed` event (unless the machine emitted one). */
  | { kind: 'terminal'; reason: string; message: string };

/** Tags a stage machine puts on its states to tell the runtime what a resting state means. */
export const StageTag = {
  /** Rest here and re-deliver at `context.wakeAt` (default: `waitingDelayMs`). */
  Waiting: 'waiting',
  /** A transient failure: re-deliver at `context.wakeAt` or with the runtime's backoff. */
  Retry: 'retry',
  /** Given up: `term` and a `failed` event with `context.failure`. */
  Failed: 'failed',
  /** Treat as settled even while invoked actors run (they are stopped). */
  Settled: 'settled',
} as const;
export type StageTag = (typeof StageTag)[keyof typeof StageTag];

/**
 * The default reading of a settled snapshot: `failed` tag → terminal, `retry` tag → retry,
 * `waiting` tag → waiting until `context.wakeAt`, anything else (including a final state) → done.
 */
export function defaultDisposition(
  snapshot: AnyMachineSnapshot,
  now: number,
  waitingDelayMs = 1000,
): Disposition {
  const context = (snapshot.context ?? {}) as StageContext;
  const untilWake = context.wakeAt === undefined ? undefined : Math.max(0, context.wakeAt - now);
  if (snapshot.hasTag(StageTag.Failed)) {
    return {
      kind: 'terminal',
      reason: context.failure?.reason ?? 'Failed',
      message: context.failure?.message ?? 'the stage gave up',
    };
  }
  if (snapshot.hasTag(StageTag.Retry)) {
    return {
      kind: 'retry',
      ...(untilWake === undefined ? {} : { delayMs: untilWake }),
      ...(context.failure === undefined ? {} : { failure: context.failure }),
    };
  }
  if (snapshot.hasTag(StageTag.Waiting)) {
    return { kind: 'waiting', delayMs: untilWake ?? waitingDelayMs };
  }
  return { kind: 'done' };
}

/**
 * True when the unit waits on nothing: tagged neither `waiting`, `retry` nor `failed`, whatever
 * the disposition of the item that brought it there.
 */
export function waitsOnNothing(snapshot: AnyMachineSnapshot): boolean {
  return defaultDisposition(snapshot, Date.now()).kind === 'done';
}

/** True when nothing is left to run: not active, no invoked actor running, or tagged `settled`. */
export function isSettled(snapshot: AnyMachineSnapshot): boolean {
  return (
    snapshot.status !== 'active' ||
    Object.keys(snapshot.children as Record<string, unknown>).length === 0 ||
    snapshot.hasTag(StageTag.Settled)
  );
}

/** What a delivery looks like to `toEvent` and `load`. */
export interface Delivery {
  attempt: number;
  receivedAt: number;
  signal: AbortSignal;
}

export interface StageOptions<TMachine extends AnyStateMachine> {
  bus: Bus;
  stage: Stage;
  /** The node of a node stage (selects its consumer). */
  node?: string;
  /**
   * The stage machine, created with `setup({...}).createMachine(...)`, with its effect actors
   * provided (`machine.provide({ actors })`). Its persisted snapshot must be JSON.
   */
  machine: TMachine;
  /** The unit a work item is about, e.g. `ns/vmi/volume`; one unit runs at a time, cluster-wide. */
  keyOf: (item: WorkItem) => string;
  /** The input of a fresh actor for a unit with no snapshot. */
  input?: (item: WorkItem) => InputFrom<TMachine>;
  /** Re-reads the truth before the event is sent; its result is the event's `observed`. */
  load?: (item: WorkItem, delivery: Delivery) => Promise<unknown>;
  /**
   * True for an item that only asks for its unit to be looked at again, and whose cause this
   * process has seen already (an informer nudge it published itself): it carries nothing the
   * machine keeps. Such an item is acknowledged without a run while a handling of its unit is
   * queued here and has not started: that handling starts after this item arrived and reads the
   * truth then, so it sees what this item would have made it look at. Under load the stage's
   * own nudges otherwise queue one full handling each behind the unit's running one.
   */
  coalesce?: (item: WorkItem) => boolean;
  /** Maps a work item to the event sent to the machine (default: a {@link WorkEvent}). */
  toEvent?: (
    item: WorkItem,
    delivery: Delivery & { observed: unknown },
  ) => EventFromLogic<TMachine>;
  /** Reads the settled snapshot (default {@link defaultDisposition}). */
  disposition?: (snapshot: AnyMachineSnapshot, now: number) => Disposition;
  /**
   * Whether the snapshot a handling of the unit settled in has served `waiting`, an item this
   * process left waiting on that unit: it is then acked rather than coming back at its delay
   * (see {@link ParkedItems}). Default: none is. The orchestrator: the unit waits on nothing
   * ({@link waitsOnNothing}), since it plans from the caches and the operations its snapshot
   * keeps of every item. The domain-updater: the item's unplug has its `detached-from-domain`
   * reported; a unit at rest is not enough there, since a nudge read against a lagging cache
   * changes nothing and leaves it untagged, and only the waiting item reads fresh enough.
   */
  servedWaiting?: (snapshot: AnyMachineSnapshot, waiting: WorkItem) => boolean;
  /** Units in flight in this process (default 4). */
  concurrency?: number;
  /** Lease time-to-live; renewed every third of it while a unit runs (default 30 s). */
  leaseTtlMs?: number;
  /** How often `working()` is sent during long effects (default a third of the ack wait). */
  workingIntervalMs?: number;
  /** Longest a machine may take to settle before the attempt is abandoned (default 10 min). */
  settleTimeoutMs?: number;
  /** Backoff of `retry`: initial (default 1 s), doubled per delivery, up to max (default 60 s). */
  retryBackoff?: { initialMs?: number; maxMs?: number };
  /** Delay before a unit whose lease is held elsewhere is tried again (max; default 250 ms). */
  busyDelayMs?: number;
  /** Deliveries after which an unhandled machine error becomes terminal (default 100). */
  maxDeliveries?: number;
  /**
   * Lifetime of each pull request (default 5 s, min 1 s). A crashed worker's open pull requests
   * can still absorb redeliveries on nats-server 2.9 until they expire, so keep it short.
   */
  pullExpiresMs?: number;
  /** Default `waiting` delay when the context has no `wakeAt` (default 1 s). */
  waitingDelayMs?: number;
  /**
   * The longest a waiting item is put back for, even when its unit's `wakeAt` is later (default:
   * no bound). Another handling may finish the unit meanwhile (an event nudged it); its waiting
   * item is then acknowledged at its next delivery, which without a bound comes at the deadline,
   * and until then the work stream holds an item for a volume that is done.
   */
  waitingRecheckMs?: number;
  /** How long `stop()` lets running units finish before aborting them (default 10 s). */
  shutdownTimeoutMs?: number;
  logger?: Logger;
  metrics?: PluglineMetrics;
  publisher?: Publisher;
  /** Identifies this worker in leases (default a random id). */
  workerId?: string;
  /**
   * This process's instance (`PLUGLINE_INSTANCE`): the leases an earlier process of it left held
   * are taken over at once (see {@link LeaseManager}).
   */
  instance?: string;
  /**
   * Keep a unit's lease between handlings while this process is the only one on its consumer
   * (see {@link LeaseManager.keeping}, {@link StageReplicas}): the unit's next handling here then
   * waits for no round trip to take the lease or read the snapshot. Default: on when `instance`
   * is set (so a crashed holder's next process takes its leases over at once).
   */
  keepLeases?: boolean;
  /** How often the replicas on the consumer are counted (default 2000 ms; see {@link StageReplicas}). */
  replicaCheckMs?: number;
}

/** A running stage loop. */
export interface StageRunner extends AsyncDisposable {
  readonly stage: Stage;
  readonly consumer: string;
  /** True while the consumer is bound and the connection is up (for `/readyz`). */
  bound(): boolean;
  /** Units being worked on now. */
  inFlight(): number;
  /**
   * Handles here, without the stream, a work item this process made: a nudge from its own
   * informers, whose change its caches hold already. Level-triggered, a nudge needs no durable
   * copy while it is handled (one lost in a crash is made again by the restarted process's
   * first look at its caches), and skips the publish, the stream's write and the delivery. One
   * that ends waiting, retrying, busy or in conflict goes to the stream after the delay its
   * delivery would have been given; while the stage stops, at once. Resolves once handled
   * (or published); rejects only when that publish failed.
   */
  handleHere(item: WorkItem): Promise<void>;
  /** Stops pulling, lets running units finish (then aborts them), and resolves when idle. */
  stop(): Promise<void>;
  /** Resolves when the loop has ended (after `stop()`, or when the connection closed). */
  readonly done: Promise<void>;
}

interface UnitRecord {
  v: 1;
  snapshot: AnyMachineSnapshot & { status: string };
  outbox: OutboxEntry[];
}

/**
 * The context of the snapshot a stage last wrote for `unit` in its bucket (`snapshots`, from
 * {@link ensureStageBuckets}); undefined when it has none. For a reader beside the stage: the
 * spec-watcher's status projector learns from its decision units which operation of a volume is
 * the newest, after a restart. The shape is the stage machine's own; validate it.
 */
export async function readUnitContext(snapshots: KV, unit: string): Promise<unknown> {
  return recordOf(await snapshots.get(kvKey(unit)))?.record.snapshot?.context;
}

/** What a reader beside a stage can tell of one of its units (see {@link readUnitState}). */
export interface UnitState {
  /** The context of the snapshot the stage last wrote (the machine's own shape). */
  readonly context: unknown;
  /**
   * The facts and work that snapshot's handling emitted may never have gone out: its writer
   * stopped between writing the snapshot and publishing them (a crash), so the unit's lease does
   * not hand over its revision. The unit's next handling publishes them (see #loadAndObserve);
   * a unit that nothing will handle again needs a nudge.
   */
  readonly outboxUnpublished: boolean;
}

/**
 * The unit's snapshot context and whether its outbox may be unpublished (two reads, side by side;
 * undefined when the unit has no snapshot), from the stage's buckets ({@link ensureStageBuckets}).
 */
export async function readUnitState(
  buckets: StageBuckets,
  unit: string,
): Promise<UnitState | undefined> {
  const [entry, handover] = await Promise.all([
    buckets.snapshots.get(kvKey(unit)),
    leaseHandover(buckets.leases, unit),
  ]);
  const read = recordOf(entry);
  if (read === undefined) return undefined;
  const outbox = read.record.outbox;
  return {
    context: read.record.snapshot?.context,
    outboxUnpublished: Array.isArray(outbox) && outbox.length > 0 && handover !== read.revision,
  };
}

/** A unit record as a reader beside the stage parses it: any field may be missing. */
type LooseRecord = Partial<Omit<UnitRecord, 'snapshot'>> & { snapshot?: { context?: unknown } };

/** A snapshot entry's record, parsed loosely (a reader beside the stage must not throw). */
function recordOf(entry: KvEntry | null): { record: LooseRecord; revision: number } | undefined {
  if (entry === null || entry.operation !== 'PUT') return undefined;
  try {
    const record = JSON.parse(decoder.decode(entry.value)) as LooseRecord | null;
    if (typeof record !== 'object' || record === null) return undefined;
    return { record, revision: entry.revision };
  } catch {
    return undefined;
  }
}

/**
 * How a work item's handling ends, whichever way the item came: a JetStream delivery, or a nudge
 * handled here (see {@link StageRunner.handleHere}).
 */
interface Settler {
  /** The delivery count: 1 for an item handled here. */
  readonly attempt: number;
  ack(): void;
  nak(delayMs?: number): void;
  term(reason: string): void;
  working(): void;
  /** A stream delivery's stream sequence; undefined for an item handled here. */
  readonly seq?: number;
  /** Acks the item after a `nak` (nats.js ignores a second settle); a stream delivery's only. */
  readonly lateAck?: () => void;
}

interface LoadedUnit {
  record: UnitRecord | undefined;
  /** 0 when the unit has no snapshot (or a deleted one). */
  revision: number;
}

/** A unit's snapshot and truth being read for one handling (see #read in StageRuntime). */
interface UnitReading {
  readonly loading: Promise<LoadedUnit>;
  readonly observing: Promise<unknown> | undefined;
  discard(): Promise<void>;
}

type Settled = {
  disposition: Disposition;
  outcome: Outcome;
  /** The snapshot the unit settled in (none when the machine failed). */
  settled?: AnyMachineSnapshot;
};

type RunResult =
  | (Settled & {
      /** The unit's snapshot revision whose outbox is published (none when unknown). */
      published: number | undefined;
      /** The unit's record as it is stored now (none when the machine failed). */
      stored?: LoadedUnit;
    })
  | { conflict: true };

/**
 * A lease a handling passed on to the next handling of its unit, queued behind it in this
 * process, instead of releasing it for that one to take again: two round trips to NATS less for
 * a unit whose next item came while it ran (the orchestrator's VMI, when the pod it created runs
 * before the handling that created it ends). With it goes the record the handling stored, which
 * is the unit's latest: no one else can have written it while the lease stayed here.
 */
interface PassedLease {
  readonly lease: Lease;
  /** Its revision's outbox is published: the handover the lease would have carried. */
  readonly stored: LoadedUnit;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();
/** JetStream's ack, as sent to a delivery's reply subject. */
const LATE_ACK = '+ACK';

type TraceContext = ReturnType<typeof extractTrace>;
/**
 * How long a unit's traced handling is continued by the handlings no message starts: long enough
 * for the attachment pod a plug waits for to start. The unit's next traced message starts afresh.
 */
const TRACE_CONTINUATION_MS = 120_000;
/**
 * Records kept for the units whose leases this process keeps (see {@link StageRuntime}'s
 * `#keptRecords`): the units a busy stage handles within a lease's keeping time. A unit left out
 * reads its snapshot, beside nothing, when it takes its lease back.
 */
const KEPT_RECORDS = 1000;
/** Units whose last trace is remembered (a few minutes of a busy stage's units). */
const TRACE_CONTINUATIONS = 10_000;

/**
 * Runs one stage: pulls work items from the stage's durable consumer and, for each, takes the
 * unit's lease, restores the unit's actor from its KV snapshot (or creates it), sends the event,
 * waits until the machine settles (its invoked effect actors done), persists the snapshot with
 * compare-and-set together with the facts and work items it emitted, publishes those, and then
 * acks, naks (waiting / retry) or terms (giving up, with a `failed` event).
 *
 * Malformed messages are dead-lettered on `plugline.v1.dlq.<stage>` with the reason in headers,
 * terminated, counted, and the loop goes on.
 *
 * Exactly-once effects under racing replicas: a unit runs under a KV lease (see
 * {@link LeaseManager}) and its snapshot is written with `update(key, value, revision)`; a loser
 * naks and later restores the winner's snapshot, so it never repeats a finished effect. Effects
 * must still be idempotent: a crash mid-effect re-runs it on another worker.
 */
export async function runStage<TMachine extends AnyStateMachine>(
  options: StageOptions<TMachine>,
): Promise<StageRunner> {
  const runtime = new StageRuntime(options);
  await runtime.start();
  return runtime;
}

class StageRuntime<TMachine extends AnyStateMachine> implements StageRunner {
  readonly stage: Stage;
  readonly consumer: string;
  readonly done: Promise<void>;
  readonly #o: StageOptions<TMachine>;
  readonly #log: Logger;
  readonly #metrics: PluglineMetrics;
  readonly #publisher: Publisher;
  readonly #slots: Slots;
  readonly #shutdown = new AbortController();
  readonly #tails = new Map<string, Promise<void>>();
  /** Handlings waiting in {@link #serially} that have not started, by {@link queuedKey}. */
  readonly #queued = new Map<string, number>();
  /**
   * Leases a handling left to the next handling of its unit queued behind it in this process,
   * with what it stored (see {@link PassedLease}); taken at once, so at most a few.
   */
  readonly #passed = new Map<string, PassedLease>();
  /**
   * What each unit's last handling here stored, while this process keeps the unit's lease (see
   * {@link LeaseManager.keeping}): the next handling that takes the lease back starts from it.
   */
  readonly #keptRecords = new BoundedMap<string, LoadedUnit>(KEPT_RECORDS);
  #replicas: StageReplicas | undefined;
  readonly #running = new Set<Promise<void>>();
  /**
   * Each unit's last handling that a traced message started. A handling no message starts (an
   * informer's nudge, a reconcile: the pod a plug waits for runs) continues its trace for a while,
   * so one operation stays one trace across its waits. Empty while no tracer is registered.
   */
  readonly #traces = new BoundedMap<string, { parent: TraceContext; at: number }>(
    TRACE_CONTINUATIONS,
  );
  /** Items handled here that go to the stream after their delay (see {@link handleHere}). */
  readonly #deferred = new Map<NodeJS.Timeout, WorkItem>();
  readonly #parked = new ParkedItems();
  #resolveDone!: () => void;
  #consumption: KeptConsumption | undefined;
  #snapshots!: KV;
  #leases!: LeaseManager;
  #workingMs = 10_000;
  readonly #termReason: boolean;
  #inFlight = 0;
  #stopping: Promise<void> | undefined;
  #reaper: NodeJS.Timeout | undefined;
  /** Repairs what the server gets wrong about this consumer's items (made at the first check). */
  #repair: WorkQueueRepair | undefined;
  /** What this process holds, which the stuck-work repair leaves alone (grace: one ack wait). */
  #held!: HeldItems;
  /** The items held here that the last stuck-work check found keeping the floor (logged once). */
  #lastKeeping = '';
  /** The message of the last periodic repair check's failure; empty after a check that worked. */
  #lastRepairFailure = '';

  constructor(options: StageOptions<TMachine>) {
    this.#o = options;
    this.stage = options.stage;
    this.consumer = durableName(options.stage, options.node);
    this.#log = childLogger(options.logger ?? options.bus.logger, {
      stage: options.stage,
      node: options.node,
    });
    this.#metrics = options.metrics ?? createMetrics(undefined, { processMetrics: false });
    this.#publisher =
      options.publisher ??
      new Publisher(options.bus, { logger: this.#log, metrics: this.#metrics });
    this.#slots = new Slots(options.concurrency ?? 4);
    this.#termReason = supportsFeature(options.bus.serverVersion, ServerFeature.TermReason);
    this.done = new Promise((resolve) => (this.#resolveDone = resolve));
  }

  async start(): Promise<void> {
    const { bus } = this.#o;
    const buckets = await ensureStageBuckets(bus, this.stage);
    this.#snapshots = buckets.snapshots;
    const ttl = this.#o.leaseTtlMs ?? 30_000;
    this.#leases = new LeaseManager(
      buckets.leases,
      this.#o.workerId ?? randomUUID(),
      ttl,
      this.#o.instance,
    );
    if (this.#o.keepLeases ?? this.#o.instance !== undefined) {
      const leases = this.#leases;
      this.#replicas = new StageReplicas({
        kv: buckets.leases,
        consumer: this.consumer,
        owner: leases.owner,
        instance: this.#o.instance,
        intervalMs: this.#o.replicaCheckMs ?? 2000,
        log: this.#log,
        onChange: (alone) => {
          leases.keeping = alone;
          if (!alone) void leases.releaseKept();
        },
      });
      // Before the first pull: a replica already running learns of this one within an interval.
      await this.#replicas.join();
    }
    const info = await bus.jsm.consumers.info(StreamName.Work, this.consumer);
    const ackWaitMs = ackWaitMsOf(info.config);
    this.#workingMs = this.#o.workingIntervalMs ?? Math.max(50, Math.floor(ackWaitMs / 3));
    this.#held = new HeldItems(ackWaitMs);
    this.#consumption = await KeptConsumption.open({
      bus,
      stream: StreamName.Work,
      consumer: this.consumer,
      maxMessages: this.#o.concurrency ?? 4,
      expiresMs: Math.max(1000, this.#o.pullExpiresMs ?? 5000),
      handle: (messages) => this.#loop(messages),
      idle: () => this.#running.size === 0,
      checkEveryMs: ackWaitMs,
      stage: this.stage,
      metrics: this.#metrics,
      log: this.#log,
      what: 'the work stream',
    });
    void this.#consumption.done.then(async () => {
      await Promise.allSettled([...this.#running]);
      this.#resolveDone();
    });
    await this.#repairWorkQueue().catch((err: unknown) => this.#repairFailed(err));
    this.#reaper = setInterval(
      () => {
        this.#repairWorkQueue().then(
          () => (this.#lastRepairFailure = ''),
          (err: unknown) => this.#repairFailed(err),
        );
      },
      Math.max(1000, ackWaitMs),
    );
    this.#reaper.unref();
  }

  /**
   * nats-server 2.9 can come back from a crash behind its consumer, keep work items its consumer
   * is done with, and hold items it never delivers ({@link WorkQueueRepair}). Checked at start,
   * then every ack wait.
   * Under least-privilege users (deploy/nats/plugline.conf) the by-sequence calls are refused:
   * said once, then the timer stops (no refusal per check), and the cleanup identity
   * (`plugline-janitor`, running `startWorkJanitor`) repairs the queue instead.
   */
  async #repairWorkQueue(): Promise<void> {
    this.#repair ??= new WorkQueueRepair(this.#o.bus);
    try {
      // One read of the consumer for all repairs.
      const info = await this.#o.bus.jsm.consumers.info(StreamName.Work, this.consumer);
      const heldHere: string[] = [];
      const repairs = await this.#repair.check(info, (seq) => {
        const holds = this.#held.holds(seq);
        if (holds) heldHere.push(`${seq}: ${this.#held.describe(seq)}`);
        return holds;
      });
      const keeping = heldHere.join(', ');
      if (keeping !== this.#lastKeeping && keeping !== '') {
        this.#log.warn(
          { heldHere },
          "items this process holds keep its consumer's ack floor where it is",
        );
      }
      this.#lastKeeping = keeping;
      logWorkRepairs(this.#log, this.consumer, repairs);
      const requeued = requeuedCount(repairs);
      if (requeued > 0) this.#metrics.workRequeued.inc({ stage: this.stage }, requeued);
      if (repairs.leaderSteppedDown) this.#metrics.consumerStalls.inc({ stage: this.stage });
    } catch (err) {
      if (!(err instanceof ReapRefusedError)) throw err;
      clearInterval(this.#reaper);
      this.#log.warn(
        { err },
        'not allowed to repair work items by sequence: left to the cleanup identity (plugline-janitor)',
      );
    }
  }

  /**
   * A periodic check that failed: said at `warn` when its reason is new (the repairs are what
   * frees items the server holds, so an operator looking for a stuck item needs to know they
   * stopped), at `debug` while it repeats (a NATS outage fails every check).
   */
  #repairFailed(err: unknown): void {
    const reason = err instanceof Error ? err.message : String(err);
    const repeated = reason === this.#lastRepairFailure;
    this.#lastRepairFailure = reason;
    const message = 'could not check the work queue for items the server mishandled';
    if (repeated) this.#log.debug({ err }, message);
    else this.#log.warn({ err }, message);
  }

  bound(): boolean {
    return (
      this.#consumption?.bound() === true &&
      !this.#shutdown.signal.aborted &&
      this.#o.bus.connected()
    );
  }

  inFlight(): number {
    return this.#inFlight;
  }

  /** Handles one consumption's messages until it ends. */
  async #loop(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const msg of messages) {
        this.#consumption?.delivered();
        if (this.#shutdown.signal.aborted) {
          msg.nak();
          continue;
        }
        this.#held.inHand(msg.seq);
        // Its `queued` step starts now: the wait for a slot is part of it.
        const steps = new StepTimer(this.#metrics, this.stage);
        const keepAlive = setInterval(() => msg.working(), this.#workingMs);
        await this.#slots.acquire();
        clearInterval(keepAlive);
        const task = this.#handle(msg, steps).finally(() => {
          this.#slots.release();
          this.#running.delete(task);
        });
        this.#running.add(task);
      }
    } catch (err) {
      this.#log.error({ err }, 'the consume loop failed');
    }
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#shutdown.abort(new Error('stage stopping'));
      clearInterval(this.#reaper);
      // Nudges handled here that were to go to the stream later go now (another replica, or
      // this one restarted, takes them).
      for (const [timer, item] of this.#deferred) {
        clearTimeout(timer);
        this.#publishDeferred(item);
      }
      this.#deferred.clear();
      const timeout = this.#o.shutdownTimeoutMs ?? 10_000;
      const timer = setTimeout(() => {
        this.#forcedStop = new Error(`stage stopping: units still running after ${timeout} ms`);
        for (const aborter of this.#aborters) aborter.abort(this.#forcedStop);
      }, timeout);
      await this.#consumption?.stop();
      await this.done;
      clearTimeout(timer);
      // The next process (a replica, or this one's successor) need not wait for them. (No
      // leases when the stage stopped before it started.)
      const leases = this.#leases as LeaseManager | undefined;
      if (leases !== undefined) {
        leases.keeping = false;
        await leases.releaseKept();
      }
      await this.#replicas?.leave();
    })();
    return this.#stopping;
  }

  /** Set when graceful shutdown took too long: running handlings are aborted with it. */
  #forcedStop: Error | undefined;
  /** Each running handling's abort: its lease lost, or the stage stopping too slowly. */
  readonly #aborters = new Set<AbortController>();

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  #decode(msg: JsMsg): ParseResult<WorkItem> {
    const decoded = decodeWorkItem(msg.data);
    if (!decoded.ok) return decoded;
    if (workSubject(decoded.value) !== msg.subject) {
      return {
        ok: false,
        error: new MalformedMessageError(
          'subject-mismatch',
          `work item for ${workSubject(decoded.value)} arrived on ${msg.subject}`,
        ),
      };
    }
    return decoded;
  }

  async #handle(msg: JsMsg, steps: StepTimer): Promise<void> {
    if (msg.info.deliveryCount > 1) this.#metrics.redeliveries.inc({ stage: this.stage });
    const decoded = this.#decode(msg);
    if (!decoded.ok) {
      await this.#deadLetter(msg, decoded.error);
      return;
    }
    // The delivery's ack subject: JsMsg's implementation has it, its type does not say so.
    const reply = (msg as { reply?: unknown }).reply;
    const settler: Settler = {
      attempt: msg.info.deliveryCount,
      ack: () => {
        this.#held.done(msg.seq);
        msg.ack();
      },
      nak: (delayMs) => {
        this.#held.sentBack(msg.seq, delayMs ?? 0);
        msg.nak(delayMs);
      },
      term: (reason) => {
        this.#held.done(msg.seq);
        this.#term(msg, reason);
      },
      working: () => msg.working(),
      seq: msg.seq,
      ...(typeof reply === 'string' && reply !== ''
        ? {
            lateAck: () => {
              this.#held.done(msg.seq);
              this.#lateAck(reply);
            },
          }
        : {}),
    };
    // Its trace is its headers' (none without them): not the consume loop's active context.
    const parent = extractTrace(msg.headers, ROOT_CONTEXT);
    await this.#handleItem(settler, decoded.value, steps, parent);
  }

  /** Acks a delivery after its nak; on a closed connection the item comes back at its delay. */
  #lateAck(reply: string): void {
    try {
      this.#o.bus.nc.publish(reply, LATE_ACK);
    } catch (err) {
      this.#log.debug({ err }, 'could not ack a waiting item early; it comes back at its delay');
    }
  }

  async handleHere(item: WorkItem): Promise<void> {
    if (this.#shutdown.signal.aborted) {
      await this.#publisher.publishWork(item);
      return;
    }
    const steps = new StepTimer(this.#metrics, this.stage);
    await this.#slots.acquire();
    let deferMs: number | undefined;
    const settler: Settler = {
      attempt: 1,
      ack: () => undefined,
      nak: (delayMs) => (deferMs = delayMs ?? 0),
      // As the stream would: a terminal outcome is final (its failed fact is out).
      term: () => undefined,
      working: () => undefined,
    };
    // No parent: an informer's change caused it, not the span active where its watch was opened.
    const task = this.#handleItem(settler, item, steps, ROOT_CONTEXT).finally(() => {
      this.#slots.release();
      this.#running.delete(task);
    });
    this.#running.add(task);
    await task;
    if (deferMs === undefined) return;
    if (deferMs <= 0 || this.#shutdown.signal.aborted) {
      await this.#publisher.publishWork(item);
      return;
    }
    const timer = setTimeout(() => {
      this.#deferred.delete(timer);
      this.#publishDeferred(item);
    }, deferMs);
    timer.unref();
    this.#deferred.set(timer, item);
  }

  #publishDeferred(item: WorkItem): void {
    this.#publisher.publishWork(item).catch((err: unknown) => {
      this.#log.warn(
        { err, unit: this.#o.keyOf(item), cause: item.cause },
        'could not publish a nudge handled here to the stream; the next look at the caches repeats it',
      );
    });
  }

  async #handleItem(
    settler: Settler,
    item: WorkItem,
    steps: StepTimer,
    parent: TraceContext,
  ): Promise<void> {
    const unit = this.#o.keyOf(item);
    const queued = queuedKey(unit, item);
    if ((this.#queued.get(queued) ?? 0) > 0 && this.#o.coalesce?.(item) === true) {
      settler.ack();
      this.#metrics.messagesHandled.inc({ stage: this.stage, outcome: Outcome.Coalesced });
      this.#log.debug(
        { unit, operationId: item.operationId, cause: item.cause },
        'work item coalesced into a queued handling of its unit',
      );
      return;
    }
    const traced = inTrace(parent);
    const kept = traced ? undefined : this.#traces.peek(unit);
    const continued =
      kept !== undefined && Date.now() - kept.at <= TRACE_CONTINUATION_MS ? kept.parent : parent;
    const keepAlive = setInterval(() => settler.working(), this.#workingMs);
    try {
      await this.#serially(unit, queued, (queuedBehind) =>
        withSpan(
          `${this.stage} work`,
          (span) => {
            if (traced) this.#traces.set(unit, { parent: underSpan(span), at: Date.now() });
            return this.#handleUnit(settler, item, { unit, queuedBehind }, steps, span);
          },
          {
            parent: continued,
            attributes: {
              'plugline.stage': this.stage,
              'plugline.unit': unit,
              'plugline.operation': item.operation,
              'plugline.operation_id': item.operationId,
              'plugline.cause': item.cause,
              'plugline.attempt': settler.attempt,
            },
          },
        ),
      );
    } finally {
      clearInterval(keepAlive);
    }
  }

  /**
   * Runs `fn` after the unit's earlier handlings in this process; `fn` is told whether another
   * handling of the unit is queued behind it (it may pass its lease on: see {@link PassedLease}).
   */
  async #serially(
    unit: string,
    queued: string,
    fn: (queuedBehind: () => boolean) => Promise<void>,
  ): Promise<void> {
    const previous = this.#tails.get(unit) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.#tails.set(unit, tail);
    this.#queued.set(queued, (this.#queued.get(queued) ?? 0) + 1);
    try {
      await previous;
    } finally {
      const left = (this.#queued.get(queued) ?? 1) - 1;
      if (left > 0) this.#queued.set(queued, left);
      else this.#queued.delete(queued);
    }
    try {
      await fn(() => this.#tails.get(unit) !== tail);
    } finally {
      release();
      if (this.#tails.get(unit) === tail) {
        this.#tails.delete(unit);
        // No one is behind to take a lease passed on (it was queued when passed): release it.
        const orphan = this.#passed.get(unit);
        this.#passed.delete(unit);
        if (orphan !== undefined) {
          this.#keepRecord(unit, orphan.stored);
          await orphan.lease.release(orphan.stored.revision);
        }
      }
    }
  }

  /**
   * Remembers what a handling stored for the unit's next handling here, when its lease is about
   * to be kept (see {@link #keptRecords}); forgets the unit otherwise.
   */
  #keepRecord(unit: string, stored: LoadedUnit | undefined): void {
    if (stored !== undefined && this.#leases.keeping) this.#keptRecords.set(unit, stored);
    else this.#keptRecords.delete(unit);
  }

  async #deadLetter(msg: JsMsg, error: MalformedMessageError): Promise<void> {
    const log = this.#log;
    log.warn(
      { subject: msg.subject, malformed: error.malformed, err: error },
      'dead-lettering a malformed message',
    );
    try {
      await this.#publisher.publish(
        {
          subject: deadLetterSubject(this.stage),
          data: msg.data,
          msgId: `dlq:${this.consumer}:${msg.info.streamSequence}`,
          headers: {
            'Plugline-Reason': error.malformed,
            'Plugline-Error': error.message.slice(0, 1024).replace(/[\r\n]+/g, ' '),
            'Plugline-Subject': msg.subject,
            'Plugline-Stream-Seq': String(msg.info.streamSequence),
          },
        },
        'dead-letter',
        this.#shutdown.signal,
      );
      this.#held.done(msg.seq);
      this.#term(msg, `${error.malformed}: ${error.message}`);
      this.#metrics.deadLetters.inc({ stage: this.stage, reason: error.malformed });
      this.#metrics.messagesHandled.inc({ stage: this.stage, outcome: Outcome.DeadLetter });
    } catch (err) {
      log.error({ err }, 'could not dead-letter; will retry');
      this.#held.sentBack(msg.seq, 1000);
      msg.nak(1000);
    }
  }

  /** `term`, with the reason only where the server understands it (2.9 would ignore the term). */
  #term(msg: JsMsg, reason: string): void {
    if (this.#termReason) msg.term(reason.slice(0, 256));
    else msg.term();
  }

  /**
   * The backoff before the next delivery, doubling per delivery; none when the failure was a
   * reply lost with the connection (nothing is wrong with the item, and the connection is back).
   */
  #retryDelay(attempt: number, error?: unknown): number {
    if (isReplyLost(error)) return 0;
    const initial = this.#o.retryBackoff?.initialMs ?? 1000;
    const max = this.#o.retryBackoff?.maxMs ?? 60_000;
    const base = Math.min(max, initial * 2 ** Math.min(30, Math.max(0, attempt - 1)));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  async #handleUnit(
    settler: Settler,
    item: WorkItem,
    { unit, queuedBehind }: { unit: string; queuedBehind: () => boolean },
    steps: StepTimer,
    span: Span,
  ): Promise<void> {
    const log = childLogger(this.#log, {
      namespace: item.namespace,
      vmi: item.vmi,
      volume: item.volume,
      operationId: item.operationId,
      unit,
    });
    this.#inFlight++;
    this.#metrics.inFlight.inc({ stage: this.stage });
    let outcome: Outcome = Outcome.Retry;
    this.#parked.delivered(unit, settler.seq);
    steps.lap(WorkStep.Queued);
    // One controller, which a forced stop reaches through #aborters: `AbortSignal.any` of it and
    // a stage-wide signal cost more on every item.
    const aborter = new AbortController();
    this.#aborters.add(aborter);
    if (this.#forcedStop !== undefined) aborter.abort(this.#forcedStop);
    const delivery: Delivery = {
      attempt: settler.attempt,
      receivedAt: Date.now(),
      signal: aborter.signal,
    };
    // A lease at hand (passed on, or kept here) takes no round trip, and comes with the record
    // its unit's last handling here stored when there is one. Else read beside the lease's
    // write, for a lease won uncontested (see Lease.uncontested); any other outcome reads again
    // once the lease is ours.
    const atHand = this.#leaseAtHand(unit);
    let reading = this.#read(unit, item, delivery, atHand?.stored);
    try {
      const acquired: LeaseResult =
        atHand === undefined ? await this.#leases.acquire(unit) : { ok: true, lease: atHand.lease };
      steps.lap(WorkStep.Lease);
      if (!acquired.ok) {
        await reading.discard();
        const busy = this.#o.busyDelayMs ?? 250;
        settler.nak(Math.max(10, Math.min(busy, acquired.retryInMs)));
        outcome = Outcome.Busy;
        return;
      }
      const { lease } = acquired;
      // Read before the lease was ours, the snapshot could predate another holder's last write,
      // and the effect would run again before the compare-and-set caught it (seen as a double
      // effect in the race test under load): only a lease no one else held since this process
      // released it keeps what was read beside it.
      if (atHand === undefined && !lease.uncontested) {
        await reading.discard();
        reading = this.#read(unit, item, delivery);
      }
      const renew = (): void => {
        lease.renew().then(
          (ok) => ok || aborter.abort(new LeaseLostError(unit)),
          (err: unknown) => log.warn({ err }, 'could not renew the lease'),
        );
      };
      // A kept lease expires sooner than an acquired one (at least half the keeping time ahead):
      // renewed once half of what it has left is gone. Nearly every handling ends long before,
      // and makes no renewal's write beside its work (one more NATS round trip per item,
      // competing with the item's own for these two cores).
      const firstRenewal =
        lease.keptUntil === undefined
          ? undefined
          : setTimeout(renew, Math.max(0, Math.floor((lease.keptUntil - Date.now()) / 2)));
      const renewer = setInterval(renew, Math.max(50, Math.floor(this.#leases.ttlMs / 3)));
      // What this run leaves published, handed over with the lease (see #run).
      let published: number | undefined;
      let stored: LoadedUnit | undefined;
      try {
        const result = await this.#run(
          settler,
          item,
          {
            unit,
            reading,
            delivery,
            published: atHand === undefined ? lease.handover : atHand.published,
            steps,
            span,
          },
          log,
        );
        outcome = this.#settleMessage(settler, result, log);
        if (!('conflict' in result)) {
          published = result.published;
          stored = result.stored;
          this.#settleParked(unit, item, settler, result, log);
        }
      } finally {
        clearTimeout(firstRenewal);
        clearInterval(renewer);
        if (stored !== undefined && queuedBehind() && !aborter.signal.aborted) {
          this.#passed.set(unit, { lease, stored });
        } else {
          this.#keepRecord(unit, aborter.signal.aborted ? undefined : stored);
          await lease.release(published);
        }
        steps.lap(WorkStep.Release);
      }
    } catch (err) {
      await reading.discard();
      if (isReplyLost(err)) {
        log.info({ err }, 'the connection dropped under the work item; retrying');
      } else {
        log.warn({ err }, 'work item failed; retrying with backoff');
      }
      settler.nak(this.#retryDelay(settler.attempt, err));
      outcome = Outcome.Retry;
      const error = asError(err);
      span.recordException(error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    } finally {
      // What an operator looking at the trace asks first: did this look finish the step?
      span.setAttribute('plugline.outcome', outcome);
      if (outcome === Outcome.Terminal) span.setStatus({ code: SpanStatusCode.ERROR });
      this.#aborters.delete(aborter);
      this.#inFlight--;
      this.#metrics.inFlight.dec({ stage: this.stage });
      this.#metrics.messagesHandled.inc({ stage: this.stage, outcome });
    }
  }

  /**
   * The unit's lease when it needs no round trip: the one its previous handling here passed on,
   * with what it stored; or one this process kept since the unit's last handling here, alone on
   * the consumer, with what that handling stored when it is still in memory.
   */
  #leaseAtHand(
    unit: string,
  ): { lease: Lease; stored?: LoadedUnit; published: number | undefined } | undefined {
    const passed = this.#passed.get(unit);
    this.#passed.delete(unit);
    const keptRecord = this.#keptRecords.peek(unit);
    this.#keptRecords.delete(unit);
    if (passed !== undefined) {
      return { lease: passed.lease, stored: passed.stored, published: passed.stored.revision };
    }
    const kept = this.#leases.takeKept(unit);
    if (kept === undefined) return undefined;
    return { lease: kept, stored: keptRecord, published: kept.handover };
  }

  #settleMessage(settler: Settler, result: RunResult, log: Logger): Outcome {
    if ('conflict' in result) {
      log.info('snapshot changed under us (another worker); retrying');
      settler.nak(this.#o.busyDelayMs ?? 250);
      return Outcome.Conflict;
    }
    const d = result.disposition;
    log.debug({ disposition: d, attempt: settler.attempt }, 'work item settled');
    switch (d.kind) {
      case 'done':
        settler.ack();
        break;
      case 'waiting': {
        const recheck = this.#o.waitingRecheckMs ?? Number.POSITIVE_INFINITY;
        settler.nak(Math.max(0, Math.round(Math.min(d.delayMs, recheck))));
        break;
      }
      case 'retry': {
        const delayMs = d.delayMs ?? this.#retryDelay(settler.attempt, d.error);
        // An operator looking for a volume that does not move finds why here, at each retry.
        if (d.failure !== undefined) {
          log.info(
            {
              reason: d.failure.reason,
              failure: d.failure.message,
              attempt: settler.attempt,
              delayMs,
            },
            'retrying the work item after its effect failed',
          );
        }
        settler.nak(delayMs);
        break;
      }
      case 'terminal':
        log.warn({ reason: d.reason, failure: d.message }, 'giving up the work item');
        settler.term(`${d.reason}: ${d.message}`);
        break;
    }
    return result.outcome;
  }

  /**
   * Acks the items left waiting on the unit that its settled snapshot has served (their
   * redeliveries would find nothing to do), once that snapshot is written; then remembers this
   * item if it is left waiting.
   */
  #settleParked(
    unit: string,
    item: WorkItem,
    settler: Settler,
    result: Settled,
    log: Logger,
  ): void {
    const served = this.#o.servedWaiting;
    if (served === undefined) return;
    const { settled } = result;
    if (settled !== undefined) {
      const acked = this.#parked.settle(unit, (waiting) => served(settled, waiting));
      if (acked > 0) log.debug({ acked }, 'acked waiting items this handling served');
    }
    if (result.disposition.kind !== 'waiting') return;
    if (settler.seq === undefined || settler.lateAck === undefined) return;
    this.#parked.park(unit, settler.seq, item, settler.lateAck);
  }

  /**
   * Starts reading the unit's snapshot and the stage's truth (`load`) for `item`; neither needs
   * the other. `discard` abandons them (a lease lost or not won uncontested) and resolves once
   * they no longer run: nothing is left reading beside the next holder.
   */
  #read(unit: string, item: WorkItem, delivery: Delivery, stored?: LoadedUnit): UnitReading {
    const abandoned = new AbortController();
    // A copy: the record passed on is the previous run's own objects.
    const loading =
      stored === undefined
        ? this.#load(unit)
        : Promise.resolve({ ...stored, record: structuredClone(stored.record) });
    loading.catch(() => undefined);
    let observing: Promise<unknown> | undefined;
    if (this.#o.load !== undefined) {
      // Follows the delivery's signal by hand: `AbortSignal.any` costs more on every item, and
      // the delivery's signal, and with it this listener, lives only as long as its handling.
      const follow = (): void => abandoned.abort(delivery.signal.reason);
      if (delivery.signal.aborted) follow();
      else delivery.signal.addEventListener('abort', follow, { once: true });
      observing = this.#o.load(item, { ...delivery, signal: abandoned.signal });
      observing.catch(() => undefined);
    }
    return {
      loading,
      observing,
      discard: async () => {
        abandoned.abort();
        await Promise.allSettled([loading, observing]);
      },
    };
  }

  async #load(unit: string): Promise<LoadedUnit> {
    const entry = await this.#snapshots.get(kvKey(unit));
    if (entry === null || entry.operation !== 'PUT') return { record: undefined, revision: 0 };
    return {
      record: JSON.parse(decoder.decode(entry.value)) as UnitRecord,
      revision: entry.revision,
    };
  }

  /** Compare-and-set write; returns the new revision, or undefined on a conflict. */
  async #write(unit: string, record: UnitRecord, revision: number): Promise<number | undefined> {
    const bytes = encoder.encode(JSON.stringify(record));
    try {
      return revision === 0
        ? await this.#snapshots.create(kvKey(unit), bytes)
        : await this.#snapshots.update(kvKey(unit), bytes, revision);
    } catch (err) {
      if (isCasFailure(err)) return undefined;
      throw err;
    }
  }

  /** Publishes the outbox in its order, pipelined (see {@link Publisher.publishInOrder}). */
  async #flush(outbox: readonly OutboxEntry[]): Promise<void> {
    await this.#publisher.publishInOrder(
      outbox.map((entry) =>
        entry.kind === 'event'
          ? { message: eventMessage(entry.event), kind: 'event' }
          : { message: workMessage(entry.item), kind: 'work' },
      ),
      this.#shutdown.signal,
    );
  }

  /**
   * The unit's record (its unpublished outbox published first) and what `load` observed, both read
   * beside the lease or after it (see #handleUnit): an observation made before the lease was ours
   * could miss another holder's effect. Saves a snapshot read's round trip per item, 1-5 ms when
   * the chain is busy (issue 10).
   */
  async #loadAndObserve(
    reading: UnitReading,
    published: number | undefined,
  ): Promise<{ current: LoadedUnit; observed: unknown }> {
    try {
      const current = await reading.loading;
      const { record, revision } = current;
      // A published outbox is not cleared from the record (that would be a second write per
      // item): the lease's previous holder hands over the revision whose outbox it published.
      // Any other outbox may be unpublished (its writer crashed, or lost the lease) and is
      // published first; what of it was published already is dropped as duplicates of its
      // `Nats-Msg-Id`.
      if (record && record.outbox.length > 0 && revision !== published) {
        await this.#flush(record.outbox);
      }
      return { current, observed: await reading.observing };
    } catch (err) {
      // Not left reading after the lease is released.
      await reading.discard();
      throw err;
    }
  }

  async #run(
    settler: Settler,
    item: WorkItem,
    {
      unit,
      reading,
      delivery,
      published,
      steps,
      span,
    }: {
      unit: string;
      reading: UnitReading;
      delivery: Delivery;
      published: number | undefined;
      steps: StepTimer;
      span: Span;
    },
    log: Logger,
  ): Promise<RunResult> {
    const { attempt, receivedAt, signal } = delivery;
    const { current, observed } = await this.#loadAndObserve(reading, published);
    steps.lap(WorkStep.Read);
    const { record, revision } = current;
    const loaded = record === undefined ? undefined : revision;
    const event =
      this.#o.toEvent?.(item, { ...delivery, observed }) ??
      ({ type: 'work', item, attempt, receivedAt, observed } satisfies WorkEvent);

    const restore = record !== undefined && record.snapshot.status === 'active';
    const input = this.#o.input?.(item);
    const actor = createActor(this.#o.machine, {
      ...(restore ? { snapshot: record.snapshot } : {}),
      ...(input === undefined ? {} : { input }),
    });
    const outbox: OutboxEntry[] = [];
    actor.on('*', (emitted: { type: string }) => {
      const entry = toOutboxEntry(this.stage, emitted, new Date(), item);
      if (entry) outbox.push(entry);
    });
    let snapshot: AnyMachineSnapshot;
    try {
      const sent = event as EventFromLogic<TMachine>;
      snapshot = await this.#runUntilSettled(actor, sent, signal, span);
    } catch (err) {
      actor.stop();
      throw err;
    } finally {
      steps.lap(WorkStep.Run);
    }
    if (snapshot.status === 'error') {
      actor.stop();
      const settled = await this.#onMachineError(item, asError(snapshot.error), attempt, log);
      steps.lap(WorkStep.Persist);
      return { ...settled, published: loaded };
    }
    const persisted = actor.getPersistedSnapshot() as UnitRecord['snapshot'];
    actor.stop();
    const disposition =
      this.#o.disposition?.(snapshot, Date.now()) ??
      defaultDisposition(snapshot, Date.now(), this.#o.waitingDelayMs);
    if (disposition.kind === 'terminal' && !outbox.some(isFailedFact)) {
      outbox.push(failedEvent(this.stage, item, disposition, attempt));
    }
    const written = await this.#persist(unit, { record, revision }, persisted, outbox);
    steps.lap(WorkStep.Persist);
    if (written === undefined) return { conflict: true };
    return {
      disposition,
      outcome: outcomeOf(disposition),
      settled: snapshot,
      published: written,
      stored:
        written === revision && record !== undefined
          ? current
          : { record: { v: 1, snapshot: persisted, outbox }, revision: written },
    };
  }

  /**
   * Writes the snapshot and its outbox with compare-and-set (skipped when nothing changed), then
   * publishes the outbox. Resolves with the snapshot's revision, its outbox published, or
   * undefined on a CAS conflict (another worker wrote first). The record's outbox is published
   * already (see #run), so a record with one is left as it is when nothing else changed.
   */
  async #persist(
    unit: string,
    { record, revision }: { record: UnitRecord | undefined; revision: number },
    persisted: UnitRecord['snapshot'],
    outbox: OutboxEntry[],
  ): Promise<number | undefined> {
    const unchanged =
      record !== undefined &&
      outbox.length === 0 &&
      JSON.stringify(record.snapshot) === JSON.stringify(persisted);
    if (unchanged) return revision;
    const written = await this.#write(unit, { v: 1, snapshot: persisted, outbox }, revision);
    if (written !== undefined && outbox.length > 0) await this.#flush(outbox);
    return written;
  }

  async #onMachineError(
    item: WorkItem,
    error: Error,
    attempt: number,
    log: Logger,
  ): Promise<Settled> {
    const maxDeliveries = this.#o.maxDeliveries ?? 100;
    if (!(error instanceof TerminalError) && attempt < maxDeliveries) {
      log.warn({ err: error, attempt }, 'the machine failed; retrying from the last snapshot');
      return { disposition: { kind: 'retry', error }, outcome: Outcome.Retry };
    }
    const failure = {
      reason: error instanceof TerminalError ? error.reason : 'RetriesExhausted',
      message: error.message,
    };
    await this.#flush([failedEvent(this.stage, item, failure, attempt)]);
    return { disposition: { kind: 'terminal', ...failure }, outcome: Outcome.Terminal };
  }

  /** Starts the actor, sends the event and resolves with the first settled snapshot. */
  #runUntilSettled(
    actor: AnyActorRef & { getSnapshot(): AnyMachineSnapshot },
    event: EventFromLogic<TMachine>,
    signal: AbortSignal,
    span: Span,
  ): Promise<AnyMachineSnapshot> {
    const timeoutMs = this.#o.settleTimeoutMs ?? 600_000;
    const started = new Map<string, { src: string; at: number }>();
    const current = (): AnyMachineSnapshot => actor.getSnapshot() as AnyMachineSnapshot;
    return new Promise<AnyMachineSnapshot>((resolve, reject) => {
      let finished = false;
      let sent = false;
      const finish = (err: Error | undefined): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        subscription.unsubscribe();
        if (err) reject(err);
        else resolve(current());
      };
      const check = (): void => {
        if (!sent) return; // the initial snapshot, before our event, is not the answer
        const snap = current();
        this.#timeEffects(snap, started, span);
        if (isSettled(snap)) finish(undefined);
      };
      const onAbort = (): void =>
        finish(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      const timer = setTimeout(
        () => finish(new SettleTimeoutError(`machine did not settle within ${timeoutMs} ms`)),
        timeoutMs,
      );
      signal.addEventListener('abort', onAbort, { once: true });
      const subscription = actor.subscribe({
        next: check,
        error: () => finish(undefined),
        complete: check,
      });
      actor.start();
      sent = true;
      actor.send(event);
      check();
    });
  }

  /**
   * Times each effect actor from the snapshot it appears in to the one it is gone from, into
   * `plugline_effect_duration_seconds` and, when traces are exported, a span under the handling's.
   */
  #timeEffects(
    snap: AnyMachineSnapshot,
    started: Map<string, { src: string; at: number }>,
    span: Span,
  ): void {
    const children = snap.children as Record<string, AnyActorRef | undefined>;
    const now = performance.now();
    for (const [id, child] of Object.entries(children)) {
      if (child && !started.has(id)) {
        started.set(id, { src: typeof child.src === 'string' ? child.src : id, at: now });
      }
    }
    for (const [id, { src, at }] of started) {
      if (children[id] === undefined) {
        this.#metrics.effectDuration.observe({ stage: this.stage, effect: src }, (now - at) / 1000);
        if (span.isRecording()) {
          recordSpan(`${this.stage} ${src}`, at, now, underSpan(span), {
            'plugline.stage': this.stage,
            'plugline.effect': src,
          });
        }
        started.delete(id);
      }
    }
  }
}

/**
 * What a queued handling must share with an item it covers: the unit, and the VMI incarnation
 * (a handling of the VMI's previous incarnation does not look at the new one).
 */
function queuedKey(unit: string, item: WorkItem): string {
  return `${unit}\u0000${item.vmiUID}`;
}

function isFailedFact(entry: OutboxEntry): boolean {
  return entry.kind === 'event' && entry.event.type.endsWith(`.${EventType.Failed}`);
}

function outcomeOf(d: Disposition): Outcome {
  switch (d.kind) {
    case 'done':
      return Outcome.Done;
    case 'waiting':
      return Outcome.Waiting;
    case 'retry':
      return Outcome.Retry;
    case 'terminal':
      return Outcome.Terminal;
  }
}
