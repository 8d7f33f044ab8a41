import { randomUUID } from 'node:crypto';
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import type { Bus, Publisher } from '@plugline/bus';
import {
  abortableDelay,
  BoundedMap,
  ackWaitMsOf,
  checkConsumerConfig,
  KeptConsumption,
  ReapRefusedError,
  SequenceGap,
  Slots,
  StreamName,
} from '@plugline/bus';
import {
  buildEvent,
  compareOperationIds,
  deadLetterSubject,
  decodeEvent,
  EVENTS_PLACEHOLDER_SUBJECT,
  EVENTS_PREFIX,
  EventType,
  eventTypeOf,
  keyOfEvent,
  MalformedMessageError,
  NotFoundError,
  parseEventSubject,
  Stage,
  type ParseResult,
  type VirtualMachineInstance,
  type VolumeEvent,
} from '@plugline/contracts';
import type { EventRecorder, StatusWriterOptions } from '@plugline/kube';
import { StatusWriter } from '@plugline/kube';
import {
  childLogger,
  extractEventTrace,
  Outcome,
  withSpan,
  type Logger,
  type PluglineMetrics,
} from '@plugline/telemetry';
import type { NewestOperation, Projection, ProjectionContext } from './project.js';
import { FreshestVmis, type VmiCache } from './freshest-vmis.js';
import { decisionNudge, RESYNC_CAUSE, REVERSED_CAUSE, reversedNudgeId } from './decision.js';
import { desiredDirections } from './plan.js';
import { isUnplugFact, progressOf, projectStatus } from './project.js';

/** The projector's durable consumer on `PLUGLINE_EVENTS`. */
export const PROJECTOR_CONSUMER = 'spec-watcher-projector';

const ms = (n: number): number => n * 1_000_000;

function isNotFound(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    code === 10014 || code === 10059 || (err instanceof Error && /not found/i.test(err.message))
  );
}

/**
 * Creates (or updates) the projector's durable pull consumer on the event stream: every event
 * (`plugline.v1.events.>`), from the start of the stream, explicit ack. nats-server 2.9 features only.
 */
export async function ensureProjectorConsumer(
  bus: Bus,
  options: { ackWaitMs?: number; maxAckPending?: number } = {},
): Promise<string> {
  const config = {
    durable_name: PROJECTOR_CONSUMER,
    filter_subject: `${EVENTS_PREFIX}.>`,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: ms(options.ackWaitMs ?? 30_000),
    max_ack_pending: options.maxAckPending ?? 1000,
    max_deliver: -1,
    description: 'Plugline spec-watcher status projector',
  };
  checkConsumerConfig(bus.serverVersion, config);
  try {
    await bus.jsm.consumers.info(StreamName.Events, PROJECTOR_CONSUMER);
    const { ack_wait, max_ack_pending, description } = config;
    await bus.jsm.consumers.update(StreamName.Events, PROJECTOR_CONSUMER, {
      ack_wait,
      max_ack_pending,
      description,
    });
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await bus.jsm.consumers.add(StreamName.Events, config);
  }
  return PROJECTOR_CONSUMER;
}

export interface ProjectorOptions {
  bus: Bus;
  client: StatusWriterOptions['client'];
  /** The VMI cache; read as {@link FreshestVmis} says. */
  vmis?: VmiCache;
  recorder: Pick<EventRecorder, 'record'>;
  publisher: Publisher;
  logger: Logger;
  metrics: PluglineMetrics;
  /**
   * VMIs whose status is written at once (default 8). One VMI's events are applied in order, and
   * the events waiting for it are applied together in one write.
   */
  concurrency?: number;
  /** Events held at once, waiting or being applied (default 16 × `concurrency`, at least 64). */
  maxPending?: number;
  /** In-process attempts of a failing apply before the message is nak'ed (default 5). */
  attempts?: number;
  /** Pull request lifetime (default 5 s; see the bus README on 2.9). */
  pullExpiresMs?: number;
  /** How many VMIs' newest-operation memory is kept (default 10 000). */
  maxRemembered?: number;
  /**
   * How long a VMI's events between an operation's start and its end may wait for more before
   * their status is written (default 0: at once); an end ends the wait. See {@link WRITTEN_AT_ONCE}.
   */
  statusLingerMs?: number;
  /**
   * Called once a check moved the event stream's sequence past the projector's consumer
   * ({@link SequenceGap}): the events stored in the gap before it never reach the projector, so
   * the caller's resync re-asks the stages for what they carried, at once instead of at its next
   * period.
   */
  onEventsSkipped?: () => void;
  /**
   * The operation the decision unit of a volume last issued (its book), read when the projector
   * has no memory of the volume: after a restart, or once the VMI fell out of the memory. Without
   * it a late fact of an older operation (an unplug's `released` after a re-add) would be applied
   * as if it were the newest.
   */
  bookedOperation?: (volume: {
    namespace: string;
    vmi: string;
    volume: string;
    vmiUID: string;
  }) => Promise<NewestOperation | undefined>;
}

/** The running status projector. */
export interface Projector {
  /** True while the consumer is bound and the connection is up. */
  bound(): boolean;
  /** The VMI `namespace/name` was deleted: drops what the projector remembers of it. */
  forget(namespace: string, name: string): void;
  /** Stops pulling and lets the events in flight finish. */
  stop(): Promise<void>;
}

/** A decoded event with the message that carried it. */
interface Delivery {
  msg: JsMsg;
  event: VolumeEvent;
}

/** What applying one event did to the status. */
type EventOutcome = { event: VolumeEvent; projection: Projection | undefined };

/**
 * The status projector: the only writer of `vmi.status.volumeStatus` and of the Kubernetes Events
 * on VMIs. Consumes every event; projects a VMI's events onto its status with
 * {@link projectStatus}, in arrival order, through {@link StatusWriter} (resourceVersion-guarded,
 * conflict retries, no write when nothing changed), then records the Events (Normal per phase
 * change, Warning `HotplugFailed`, Normal `VolumeUnplugged`). On `released` it publishes
 * `removed`. Malformed events are dead-lettered on `plugline.v1.dlq.spec-watcher` and terminated.
 *
 * The events that arrive for a VMI while its status is being written wait, and are then applied
 * together in one write (issue 10): a burst costs a write per batch, not one per event, each of
 * which rewrote the whole list and woke every informer of VMIs.
 */
export async function startProjector(options: ProjectorOptions): Promise<Projector> {
  const projector = new StatusProjector(options);
  await projector.start();
  return projector;
}

/** When a message that could not be projected comes back: 1 s, doubling per delivery, ≤ 30 s. */
function redeliveryDelay(msg: JsMsg): number {
  return Math.min(30_000, 1000 * 2 ** Math.min(5, msg.info.deliveryCount - 1));
}

/** The most events applied in one status write. */
const MAX_BATCH = 256;

/**
 * The events whose status is written at once: the ends of an operation (`Ready`, the entry's
 * removal on `released`, a failure). The steps between (`requested` to `mounted-to-pod`, and the
 * unplug's before `released`) follow one another within milliseconds when nothing is slow, and each would be a
 * write of its own, rewriting the whole list and waking every informer of VMIs in the cluster
 * (our four services among them) while the operation's next stages run. So they wait, at most
 * `statusLingerMs`, for more of the VMI's events, and go out in one write: a plug's in two
 * instead of six. The stages do not wait on these phases (each acts on the facts it is handed);
 * a volume that rests in one (`Pending` on an unbound claim) shows it that much later.
 */
const WRITTEN_AT_ONCE: ReadonlySet<string> = new Set([
  EventType.Ready,
  EventType.Released,
  EventType.Removed,
  EventType.Failed,
]);

/** Volumes whose facts came before their request, remembered until it comes (a crash's few). */
const FACTS_BEFORE_REQUEST_REMEMBERED = 1000;

/** How many volumes of each remembered VMI the projector remembers the last applied event of. */
const VOLUMES_PER_VMI_REMEMBERED = 8;

/** What the projector keeps of the event of a volume it applied latest in the stream. */
interface AppliedEvent {
  seq: number;
  operationId: string;
  /** How far along its operation it took the volume (`progressOf`). */
  progress: number;
}

/** Whether `applied`, later in the stream, says all that `event` says of its volume, or more. */
function supersedes(applied: AppliedEvent, event: VolumeEvent): boolean {
  const order = compareOperationIds(event.data.operationId, applied.operationId);
  return order < 0 || (order === 0 && progressOf(event) <= applied.progress);
}

/** What one status write of a VMI's events did. */
interface Applied {
  wrote: boolean;
  /** The events that changed nothing yet (see `Projection.unapplied`). */
  unapplied: ReadonlySet<VolumeEvent>;
}

/** A volume's key: `ns/vmi/volume`. */
function volumeKeyOf(event: VolumeEvent): string {
  const { namespace, vmi, volume } = keyOfEvent(event);
  return `${namespace}/${vmi}/${volume}`;
}

/** An event waiting to be applied, and whether it may wait for more (see {@link WRITTEN_AT_ONCE}). */
interface Queued {
  msg: JsMsg;
  /** Its subject, parsed once as it was queued. */
  subject: ReturnType<typeof parseEventSubject>;
  lingers: boolean;
}

class StatusProjector implements Projector {
  readonly #o: ProjectorOptions;
  readonly #log: Logger;
  readonly #writer: StatusWriter;
  readonly #shutdown = new AbortController();
  /** Per VMI (`ns/name`): the events waiting to be applied; present while a drain runs. */
  readonly #queues = new Map<string, Queued[]>();
  /** Per VMI (`ns/name`): ends the wait of its lingering events (see {@link WRITTEN_AT_ONCE}). */
  readonly #lingering = new Map<string, () => void>();
  readonly #running = new Set<Promise<void>>();
  /** Per VMI (`ns/name`): the newest operation seen per volume (stale events are ignored). */
  readonly #operations: BoundedMap<string, ProjectionContext['operations']>;
  /** Per volume (`ns/vmi/volume`): the event applied here latest in the stream. */
  readonly #lastApplied: BoundedMap<string, AppliedEvent>;
  /**
   * Per volume (`ns/vmi/volume`): the operation of a plug fact that found the entry in an unplug
   * phase (see `Projection.unapplied`), until its operation's request resets the entry.
   */
  readonly #factsBeforeRequest = new BoundedMap<string, string>(FACTS_BEFORE_REQUEST_REMEMBERED);
  /** The VMI copies the status writer reads first (see FreshestVmis). */
  readonly #freshest: FreshestVmis | undefined;
  /** Events held (waiting or being applied). */
  readonly #held: Slots;
  /** VMIs being written. */
  readonly #writers: Slots;
  #consumption: KeptConsumption | undefined;
  /** Checks, every ack wait, that the event stream is not behind the consumer after a crash. */
  #gapCheck: NodeJS.Timeout | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: ProjectorOptions) {
    this.#o = options;
    this.#log = childLogger(options.logger, { component: 'projector' });
    // Bounded: the oldest VMI is forgotten first.
    this.#operations = new BoundedMap(options.maxRemembered ?? 10_000);
    this.#lastApplied = new BoundedMap(
      VOLUMES_PER_VMI_REMEMBERED * (options.maxRemembered ?? 10_000),
    );
    const freshest =
      options.vmis === undefined
        ? undefined
        : new FreshestVmis(options.vmis, options.maxRemembered ?? 10_000);
    this.#freshest = freshest;
    const concurrency = options.concurrency ?? 8;
    this.#writers = new Slots(concurrency);
    this.#held = new Slots(this.#maxPending());
    const client = options.client;
    this.#writer = new StatusWriter({
      client: {
        getVmi: (ns, name) => client.getVmi(ns, name),
        patchVmiStatus: async (ns, name, ops, po) => {
          const written = await client.patchVmiStatus(ns, name, ops, po);
          freshest?.wrote(written);
          return written;
        },
      },
      ...(freshest === undefined ? {} : { informer: freshest }),
      logger: this.#log,
    });
  }

  #maxPending(): number {
    return this.#o.maxPending ?? Math.max((this.#o.concurrency ?? 8) * 16, 64);
  }

  async start(): Promise<void> {
    const bus = this.#o.bus;
    const info = await bus.jsm.consumers.info(StreamName.Events, PROJECTOR_CONSUMER);
    this.#consumption = await KeptConsumption.open({
      bus,
      stream: StreamName.Events,
      consumer: PROJECTOR_CONSUMER,
      maxMessages: this.#maxPending(),
      expiresMs: Math.max(1000, this.#o.pullExpiresMs ?? 5000),
      handle: (messages) => this.#run(messages),
      idle: () => this.#queues.size === 0,
      checkEveryMs: ackWaitMsOf(info.config),
      stage: Stage.SpecWatcher,
      metrics: this.#o.metrics,
      log: this.#log,
      what: 'the event stream',
    });
    this.#watchSequenceGap(ackWaitMsOf(info.config));
  }

  /**
   * Moves the event stream's sequence past this consumer when a crash left the stream behind it
   * ({@link SequenceGap}): events published meanwhile would never be delivered. Checked at start,
   * then every ack wait. Under least-privilege users it is refused: said once, then left to the
   * cleanup identity (`plugline-janitor`).
   */
  #watchSequenceGap(everyMs: number): void {
    const gap = new SequenceGap(this.#o.bus, StreamName.Events);
    let checking = false;
    const check = async (): Promise<void> => {
      // A slow check (a wide gap) is not overlapped by the next one.
      if (checking) return;
      checking = true;
      try {
        const placeholders = await gap.close(PROJECTOR_CONSUMER);
        if (placeholders > 0) {
          this.#log.warn(
            { stream: StreamName.Events, consumer: PROJECTOR_CONSUMER, placeholders },
            "moved a stream's sequence past a consumer a crash left it behind; resyncing what its events carried",
          );
          this.#o.onEventsSkipped?.();
        }
      } catch (err) {
        if (!(err instanceof ReapRefusedError)) {
          this.#log.debug({ err }, 'checking the event stream against its consumer');
          return;
        }
        clearInterval(this.#gapCheck);
        this.#log.warn(
          { err },
          'not allowed to move the event stream past its consumer: left to the cleanup identity (plugline-janitor)',
        );
      } finally {
        checking = false;
      }
    };
    void check();
    this.#gapCheck = setInterval(() => void check(), Math.max(1000, everyMs));
    this.#gapCheck.unref();
  }

  bound(): boolean {
    return (
      this.#consumption?.bound() === true &&
      !this.#shutdown.signal.aborted &&
      this.#o.bus.connected()
    );
  }

  forget(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    this.#operations.delete(key);
    this.#freshest?.forget(namespace, name);
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#shutdown.abort(new Error('projector stopping'));
      clearInterval(this.#gapCheck);
      await this.#consumption?.stop();
      while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
    })();
    return this.#stopping;
  }

  async #run(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const msg of messages) {
        this.#consumption?.delivered();
        if (this.#shutdown.signal.aborted) {
          msg.nak();
          continue;
        }
        // A placeholder that moved the stream's sequence on (SequenceGap): nothing to apply.
        if (msg.subject === EVENTS_PLACEHOLDER_SUBJECT) {
          msg.ack();
          continue;
        }
        await this.#held.acquire();
        this.#enqueue(msg);
      }
    } catch (err) {
      this.#log.error({ err }, 'the projector loop failed');
    }
  }

  /** Queues the event behind its VMI's others; starts draining the VMI if nothing does. */
  #enqueue(msg: JsMsg): void {
    const parsed = parseEventSubject(msg.subject);
    const key = parsed.ok ? `${parsed.value.namespace}/${parsed.value.vmi}` : `?${msg.subject}`;
    const queued = {
      msg,
      subject: parsed,
      lingers: parsed.ok && !WRITTEN_AT_ONCE.has(parsed.value.type),
    };
    const waiting = this.#queues.get(key);
    if (waiting !== undefined) {
      waiting.push(queued);
      if (!queued.lingers) this.#lingering.get(key)?.();
      return;
    }
    const queue = [queued];
    this.#queues.set(key, queue);
    const task = this.#drain(key, queue).finally(() => this.#running.delete(task));
    this.#running.add(task);
  }

  /** Applies the VMI's waiting events, a batch at a time, until none is left. */
  async #drain(key: string, queue: Queued[]): Promise<void> {
    try {
      while (queue.length > 0) {
        await this.#linger(key, queue);
        await this.#writers.acquire();
        // Let the events already pulled join the batch before it is taken.
        await new Promise<void>((resolve) => setImmediate(resolve));
        const batch = queue.splice(0, MAX_BATCH);
        try {
          await this.#handleBatch(batch);
        } finally {
          this.#writers.release();
          for (let i = 0; i < batch.length; i++) this.#held.release();
        }
      }
    } finally {
      // No await between the last empty check and this: a new event starts a new drain.
      this.#queues.delete(key);
    }
  }

  /** Waits up to `statusLingerMs` while every event queued for the VMI lingers. */
  async #linger(key: string, queue: readonly Queued[]): Promise<void> {
    const lingerMs = this.#o.statusLingerMs ?? 0;
    if (lingerMs <= 0 || this.#shutdown.signal.aborted || !queue.every((q) => q.lingers)) return;
    await new Promise<void>((resolve) => {
      const end = (): void => {
        clearTimeout(timer);
        this.#shutdown.signal.removeEventListener('abort', end);
        this.#lingering.delete(key);
        resolve();
      };
      const timer = setTimeout(end, lingerMs);
      this.#shutdown.signal.addEventListener('abort', end);
      this.#lingering.set(key, end);
    });
  }

  #decode({ msg, subject }: Queued): ParseResult<VolumeEvent> {
    const decoded = decodeEvent(msg.data);
    if (!decoded.ok) return decoded;
    if (!subject.ok) return subject;
    const key = keyOfEvent(decoded.value);
    const s = subject.value;
    if (
      s.namespace !== key.namespace ||
      s.vmi !== key.vmi ||
      s.volume !== key.volume ||
      s.type !== eventTypeOf(decoded.value)
    ) {
      return {
        ok: false,
        error: new MalformedMessageError(
          'subject-mismatch',
          `event ${decoded.value.subject} (${decoded.value.type}) arrived on ${msg.subject}`,
        ),
      };
    }
    return decoded;
  }

  /** One VMI's events, in order: malformed ones dead-lettered, the others applied in one write. */
  async #handleBatch(batch: readonly Queued[]): Promise<void> {
    const received: Delivery[] = [];
    for (const queued of batch) {
      const decoded = this.#decode(queued);
      if (decoded.ok) received.push({ msg: queued.msg, event: decoded.value });
      else await this.#deadLetter(queued.msg, decoded.error);
    }
    const deliveries = this.#withoutSuperseded(received);
    if (deliveries.length === 0) return;
    const first = keyOfEvent(deliveries[0]!.event);
    const log = childLogger(this.#log, { namespace: first.namespace, vmi: first.vmi });
    const keepAlive = setInterval(() => {
      for (const d of deliveries) d.msg.working();
    }, 5000);
    const handled = (outcome: Outcome) =>
      this.#o.metrics.messagesHandled.inc({ stage: Stage.SpecWatcher, outcome }, deliveries.length);
    const events = deliveries.map((d) => d.event);
    const last = events.at(-1)!;
    try {
      // A span in the trace of the batch's last event: the step that makes a plug `Ready`.
      const { wrote, unapplied } = await withSpan(
        'spec-watcher project',
        () => this.#applyRetrying(events, log),
        {
          parent: extractEventTrace(last),
          attributes: {
            'plugline.stage': Stage.SpecWatcher,
            'plugline.unit': `${first.namespace}/${first.vmi}`,
            'plugline.events': events.map(eventTypeOf).join(','),
            'plugline.operation_id': last.data.operationId,
          },
        },
      );
      log.debug({ events: deliveries.length, wrote }, 'events projected');
      for (const d of deliveries) {
        const volume = volumeKeyOf(d.event);
        const seq = d.msg.info.streamSequence;
        // A fact that changed nothing yet (see `Projection.unapplied`) supersedes nothing: the
        // request it waits for may be a redelivery still to come.
        if (!unapplied.has(d.event) && seq > (this.#lastApplied.get(volume)?.seq ?? 0)) {
          const { operationId } = d.event.data;
          this.#lastApplied.set(volume, { seq, operationId, progress: progressOf(d.event) });
        }
        d.msg.ack();
      }
      handled(Outcome.Done);
    } catch (err) {
      log.warn(
        { err, events: deliveries.length },
        'could not project the events; redelivering later',
      );
      for (const { msg } of deliveries) msg.nak(redeliveryDelay(msg));
      handled(Outcome.Retry);
    } finally {
      clearInterval(keepAlive);
    }
  }

  /**
   * `deliveries` less each event that one of its volume applied here, later in the stream,
   * supersedes; those are acknowledged unapplied. They are redeliveries of events first delivered
   * to a process that crashed before acknowledging them, which JetStream hands back after the
   * newer ones; applied now, they could undo what the newer ones said (seen in the kill soak: a
   * volume's `ready`, redelivered after its unplug's `released`, brought back its removed status
   * entry). An event is superseded by one of a newer operation, or by one of its own operation at
   * least as far along: a fact stated again (a resync round's `attached-to-node`) says less than
   * the `ready` it follows, which must still be applied.
   */
  #withoutSuperseded(deliveries: readonly Delivery[]): Delivery[] {
    const kept: Delivery[] = [];
    for (const d of deliveries) {
      const seq = d.msg.info.streamSequence;
      const last = this.#lastApplied.get(volumeKeyOf(d.event));
      if (last === undefined || seq > last.seq || !supersedes(last, d.event)) {
        kept.push(d);
        continue;
      }
      this.#log.debug(
        { seq, event: eventTypeOf(d.event), subject: d.event.subject },
        'a redelivered event superseded by one of its volume applied here',
      );
      d.msg.ack();
      this.#o.metrics.messagesHandled.inc({
        stage: Stage.SpecWatcher,
        outcome: Outcome.Superseded,
      });
    }
    return kept;
  }

  /** {@link #apply}, tried `attempts` times in place (the VMI's later events wait: order holds). */
  async #applyRetrying(events: readonly VolumeEvent[], log: Logger): Promise<Applied> {
    const attempts = this.#o.attempts ?? 5;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#apply(events, log);
      } catch (err) {
        if (attempt >= attempts || this.#shutdown.signal.aborted) throw err;
        log.debug({ err, attempt }, 'projecting the events failed; retrying');
        await abortableDelay(50 * 2 ** attempt, this.#shutdown.signal);
      }
    }
  }

  /**
   * Applies one VMI's events, in order, in one status write (none when nothing changed), then
   * records their Kubernetes Events and publishes `removed` for each `released`.
   */
  async #apply(events: readonly VolumeEvent[], log: Logger): Promise<Applied> {
    const { namespace, vmi: name } = keyOfEvent(events[0]!);
    const vmiKey = `${namespace}/${name}`;
    const { operations: known, seeded } = await this.#newestOperations(vmiKey, events);
    let outcomes: EventOutcome[] = [];
    let operations = known;
    let object: VirtualMachineInstance | undefined;
    let gone = false;
    let wrote = false;
    try {
      wrote = await this.#writer.writeVolumeStatus(namespace, name, (current, vmi) => {
        object = vmi;
        operations = known;
        outcomes = [];
        let next = current;
        for (const event of events) {
          // An event of an earlier VMI of the same name changes nothing.
          if (vmi.metadata.uid !== event.data.vmiUID) {
            outcomes.push({ event, projection: undefined });
            continue;
          }
          const projection = projectStatus(next, event, { operations });
          outcomes.push({ event, projection });
          if (projection.stale) continue;
          next = projection.next;
          operations = projection.operations;
        }
        return next;
      });
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      gone = true;
    }
    if (operations !== known || seeded) this.#operations.set(vmiKey, operations);
    const effects: Promise<void>[] = [];
    if (object !== undefined) {
      for (const { projection } of outcomes) {
        const e = projection?.stale === false ? projection.k8sEvent : undefined;
        if (e !== undefined)
          effects.push(this.#o.recorder.record(object, e.type, e.reason, e.message));
      }
    }
    const released = gone
      ? events.filter((e) => eventTypeOf(e) === EventType.Released)
      : outcomes
          .filter(
            ({ event, projection }) =>
              eventTypeOf(event) === EventType.Released && projection?.stale === false,
          )
          .map(({ event }) => event);
    for (const event of released) effects.push(this.#removed(event, log));
    if (object !== undefined && !gone) {
      effects.push(...this.#reportReversals(object, outcomes));
      effects.push(...this.#restateFactsBeforeRequest(object, outcomes));
    }
    await Promise.all(effects);
    const unapplied = new Set<VolumeEvent>();
    for (const { event, projection } of outcomes) {
      if (projection?.unapplied === true) unapplied.add(event);
    }
    return { wrote, unapplied };
  }

  /**
   * Nudges the decision of each volume the spec wants whose stages reported unplugging it (an
   * applied unplug fact), naming the operation they unplugged under: when that is the decision's
   * current plug, the volume left the spec and came back unseen, and only a new operation
   * restores its status (see `reversedUnder` in decision.ts). A quick re-add that the decision
   * already saw names an older operation, and the nudge changes nothing.
   */
  #reportReversals(
    vmi: VirtualMachineInstance,
    outcomes: readonly EventOutcome[],
  ): Promise<void>[] {
    let wanted: ReadonlyMap<string, { operation: string }> | undefined;
    const reported = new Set<string>();
    const nudges: Promise<void>[] = [];
    for (const { event, projection } of outcomes) {
      if (projection?.stale !== false || !isUnplugFact(event)) continue;
      const { volume } = keyOfEvent(event);
      const operationId = event.data.operationId;
      wanted ??= desiredDirections(vmi);
      if (wanted.get(volume)?.operation !== 'plug' || reported.has(`${volume}/${operationId}`))
        continue;
      reported.add(`${volume}/${operationId}`);
      const item = decisionNudge(vmi, {
        volume,
        operation: 'plug',
        cause: REVERSED_CAUSE,
        id: reversedNudgeId(operationId),
      });
      nudges.push(this.#o.publisher.publishWork(item, this.#shutdown.signal).then(() => undefined));
    }
    return nudges;
  }

  /**
   * Nudges the decision of each volume whose entry a request just reset after facts of the same
   * operation had come first and changed nothing (a request a crashed projector held, redelivered
   * late): a resync of its operation, so the stages state those facts again now, not at the next
   * periodic resync.
   */
  #restateFactsBeforeRequest(
    vmi: VirtualMachineInstance,
    outcomes: readonly EventOutcome[],
  ): Promise<void>[] {
    const nudges: Promise<void>[] = [];
    for (const { event, projection } of outcomes) {
      const key = volumeKeyOf(event);
      const { operationId } = event.data;
      if (projection?.unapplied === true) {
        this.#factsBeforeRequest.set(key, operationId);
        continue;
      }
      if (eventTypeOf(event) !== EventType.Requested || projection?.changed !== true) continue;
      if (this.#factsBeforeRequest.get(key) !== operationId) continue;
      this.#factsBeforeRequest.delete(key);
      const item = decisionNudge(vmi, {
        volume: keyOfEvent(event).volume,
        operation: 'plug',
        cause: RESYNC_CAUSE,
        id: `restate-${operationId}`,
      });
      nudges.push(this.#o.publisher.publishWork(item, this.#shutdown.signal).then(() => undefined));
    }
    return nudges;
  }

  /** The `removed` fact: the status entry of an unplugged volume is gone. */
  async #removed(released: VolumeEvent, log: Logger): Promise<void> {
    const { namespace, vmi, volume } = keyOfEvent(released);
    const event = buildEvent({
      namespace,
      vmi,
      volume,
      type: EventType.Removed,
      stage: Stage.SpecWatcher,
      id: randomUUID(),
      data: {
        operationId: released.data.operationId,
        operation: released.data.operation,
        vmiUID: released.data.vmiUID,
      },
      ...(released.traceparent === undefined ? {} : { traceparent: released.traceparent }),
    });
    await this.#o.publisher.publishEvent(event, this.#shutdown.signal);
    log.debug({ volume, operationId: released.data.operationId }, 'published removed');
  }

  async #deadLetter(msg: JsMsg, error: MalformedMessageError): Promise<void> {
    const log = childLogger(this.#log, { subject: msg.subject, seq: msg.info.streamSequence });
    log.warn({ reason: error.malformed, err: error }, 'dead-lettering a malformed event');
    try {
      await this.#o.publisher.publish(
        {
          subject: deadLetterSubject(Stage.SpecWatcher),
          data: msg.data,
          msgId: `dlq:${PROJECTOR_CONSUMER}:${msg.info.streamSequence}`,
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
      msg.term();
      this.#o.metrics.deadLetters.inc({ stage: Stage.SpecWatcher, reason: error.malformed });
      this.#o.metrics.messagesHandled.inc({
        stage: Stage.SpecWatcher,
        outcome: Outcome.DeadLetter,
      });
    } catch (err) {
      log.error({ err }, 'could not dead-letter; will retry');
      msg.nak(1000);
    }
  }

  /**
   * What the projector knows of the newest operation of each volume of the VMI `vmiKey`, with
   * the books of the decision units read for the volumes of `events` it has no memory of (one
   * KV read per volume: also the first event of every new volume).
   */
  async #newestOperations(
    vmiKey: string,
    events: readonly VolumeEvent[],
  ): Promise<{ operations: ProjectionContext['operations']; seeded: boolean }> {
    const known = this.#operations.get(vmiKey) ?? {};
    const read = this.#o.bookedOperation;
    if (read === undefined) return { operations: known, seeded: false };
    const missing = new Map<string, VolumeEvent>();
    for (const event of events) {
      const { volume } = keyOfEvent(event);
      if (known[volume] === undefined && !missing.has(volume)) missing.set(volume, event);
    }
    if (missing.size === 0) return { operations: known, seeded: false };
    const booked = await Promise.all(
      [...missing].map(async ([volume, event]) => {
        const { namespace, vmi } = keyOfEvent(event);
        const vmiUID = event.data.vmiUID;
        return [volume, await read({ namespace, vmi, volume, vmiUID })] as const;
      }),
    );
    const operations = { ...known };
    let seeded = false;
    for (const [volume, operation] of booked) {
      if (operation === undefined) continue;
      operations[volume] = operation;
      seeded = true;
    }
    return seeded ? { operations, seeded } : { operations: known, seeded };
  }
}
