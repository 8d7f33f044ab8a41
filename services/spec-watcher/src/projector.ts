import { randomUUID } from 'node:crypto';
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import type { Bus, Publisher } from '@plugline/bus';
import { abortableDelay, checkConsumerConfig, StreamName } from '@plugline/bus';
import {
  buildEvent,
  deadLetterSubject,
  decodeEvent,
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
import type { EventRecorder, Informer, StatusWriterOptions } from '@plugline/kube';
import { StatusWriter } from '@plugline/kube';
import { childLogger, Outcome, type Logger, type PluglineMetrics } from '@plugline/telemetry';
import type { Projection } from './project.js';
import { projectStatus } from './project.js';

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
  /** The VMI cache; read only when it already shows the projector's own last write. */
  vmis?: Pick<Informer<VirtualMachineInstance>, 'get' | 'synced'>;
  recorder: Pick<EventRecorder, 'record'>;
  publisher: Publisher;
  logger: Logger;
  metrics: PluglineMetrics;
  /** Events in flight (across VMIs; one VMI's events are applied one at a time, in order). */
  concurrency?: number;
  /** In-process attempts of a failing apply before the message is nak'ed (default 5). */
  attempts?: number;
  /** Pull request lifetime (default 5 s; see the bus README on 2.9). */
  pullExpiresMs?: number;
  /** How many VMIs' newest-operation memory is kept (default 10 000). */
  maxRemembered?: number;
}

/** The running status projector. */
export interface Projector {
  /** True while the consumer is bound and the connection is up. */
  bound(): boolean;
  /** Stops pulling and lets the events in flight finish. */
  stop(): Promise<void>;
}

type ApplyOutcome = 'applied' | 'unchanged' | 'stale' | 'gone';

/**
 * The status projector: the only writer of `vmi.status.volumeStatus` and of the Kubernetes Events
 * on VMIs. Consumes every event; per event, projects it onto the VMI's status with
 * {@link projectStatus} through {@link StatusWriter} (resourceVersion-guarded, conflict retries,
 * no write when nothing changed), then records the Event (Normal per phase change, Warning
 * `HotplugFailed`, Normal `VolumeUnplugged`). On `released` it publishes `removed`. Malformed
 * events are dead-lettered on `plugline.v1.dlq.spec-watcher` and terminated.
 */
export async function startProjector(options: ProjectorOptions): Promise<Projector> {
  const projector = new StatusProjector(options);
  await projector.start();
  return projector;
}

class StatusProjector implements Projector {
  readonly #o: ProjectorOptions;
  readonly #log: Logger;
  readonly #writer: StatusWriter;
  readonly #shutdown = new AbortController();
  readonly #tails = new Map<string, Promise<void>>();
  readonly #running = new Set<Promise<void>>();
  /** Per VMI (`ns/name`): the newest operation seen per volume (stale events are ignored). */
  readonly #operations = new Map<string, Readonly<Record<string, string>>>();
  /** Per VMI: the resourceVersion of the projector's own last status write. */
  readonly #written = new Map<string, string>();
  #messages: ConsumerMessages | undefined;
  #free: number;
  #waiters: (() => void)[] = [];
  #loop: Promise<void> = Promise.resolve();
  #stopping: Promise<void> | undefined;

  constructor(options: ProjectorOptions) {
    this.#o = options;
    this.#log = childLogger(options.logger, { component: 'projector' });
    this.#free = options.concurrency ?? 8;
    const client = options.client;
    this.#writer = new StatusWriter({
      client: {
        getVmi: (ns, name) => client.getVmi(ns, name),
        patchVmiStatus: async (ns, name, ops, po) => {
          const written = await client.patchVmiStatus(ns, name, ops, po);
          const rv = written.metadata.resourceVersion;
          if (rv !== undefined) this.#remember(this.#written, `${ns}/${name}`, rv);
          return written;
        },
      },
      ...(options.vmis === undefined ? {} : { informer: this.#freshCache(options.vmis) }),
      logger: this.#log,
    });
  }

  /** The cache, when it shows this projector's last write (else the writer GETs). */
  #freshCache(
    vmis: Pick<Informer<VirtualMachineInstance>, 'get' | 'synced'>,
  ): Pick<Informer<VirtualMachineInstance>, 'get' | 'synced'> {
    const written = this.#written;
    return {
      get synced() {
        return vmis.synced;
      },
      get(ns: string, name: string) {
        const cached = vmis.get(ns, name);
        const mine = written.get(`${ns}/${name}`);
        return cached !== undefined &&
          mine !== undefined &&
          cached.metadata.resourceVersion === mine
          ? cached
          : undefined;
      },
    };
  }

  async start(): Promise<void> {
    const consumer = await this.#o.bus.js.consumers.get(StreamName.Events, PROJECTOR_CONSUMER);
    const concurrency = this.#o.concurrency ?? 8;
    this.#messages = await consumer.consume({
      max_messages: Math.max(concurrency * 4, 16),
      expires: Math.max(1000, this.#o.pullExpiresMs ?? 5000),
    });
    this.#loop = this.#run(this.#messages);
  }

  bound(): boolean {
    return (
      this.#messages !== undefined && !this.#shutdown.signal.aborted && this.#o.bus.connected()
    );
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#shutdown.abort(new Error('projector stopping'));
      await this.#messages?.close();
      await this.#loop;
    })();
    return this.#stopping;
  }

  async #run(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const msg of messages) {
        if (this.#shutdown.signal.aborted) {
          msg.nak();
          continue;
        }
        await this.#acquire();
        const task = this.#inOrder(msg).finally(() => {
          this.#release();
          this.#running.delete(task);
        });
        this.#running.add(task);
      }
    } catch (err) {
      this.#log.error({ err }, 'the projector loop failed');
    } finally {
      await Promise.allSettled([...this.#running]);
    }
  }

  async #acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  #release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }

  /** Serialises the events of one VMI in arrival order; different VMIs run side by side. */
  async #inOrder(msg: JsMsg): Promise<void> {
    const parsed = parseEventSubject(msg.subject);
    const key = parsed.ok ? `${parsed.value.namespace}/${parsed.value.vmi}` : `?${msg.subject}`;
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const mine = previous.then(() => this.#handle(msg));
    const tail = mine.catch(() => undefined);
    this.#tails.set(key, tail);
    try {
      await mine;
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  #decode(msg: JsMsg): ParseResult<VolumeEvent> {
    const decoded = decodeEvent(msg.data);
    if (!decoded.ok) return decoded;
    const subject = parseEventSubject(msg.subject);
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

  async #handle(msg: JsMsg): Promise<void> {
    const decoded = this.#decode(msg);
    if (!decoded.ok) {
      await this.#deadLetter(msg, decoded.error);
      return;
    }
    const event = decoded.value;
    const key = keyOfEvent(event);
    const log = childLogger(this.#log, {
      namespace: key.namespace,
      vmi: key.vmi,
      volume: key.volume,
      operationId: event.data.operationId,
      type: eventTypeOf(event),
    });
    const keepAlive = setInterval(() => msg.working(), 5000);
    const attempts = this.#o.attempts ?? 5;
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          const outcome = await this.#apply(event, log);
          log.debug({ outcome }, 'event projected');
          msg.ack();
          this.#o.metrics.messagesHandled.inc({ stage: Stage.SpecWatcher, outcome: Outcome.Done });
          return;
        } catch (err) {
          if (attempt >= attempts || this.#shutdown.signal.aborted) {
            log.warn({ err, attempt }, 'could not project the event; redelivering later');
            msg.nak(Math.min(30_000, 1000 * 2 ** Math.min(5, msg.info.deliveryCount - 1)));
            this.#o.metrics.messagesHandled.inc({
              stage: Stage.SpecWatcher,
              outcome: Outcome.Retry,
            });
            return;
          }
          log.debug({ err, attempt }, 'projecting the event failed; retrying');
          // Retried in place, so the VMI's later events wait: its events stay in order.
          await abortableDelay(50 * 2 ** attempt, this.#shutdown.signal);
        }
      }
    } finally {
      clearInterval(keepAlive);
    }
  }

  async #apply(event: VolumeEvent, log: Logger): Promise<ApplyOutcome> {
    const { namespace, vmi: name } = keyOfEvent(event);
    const vmiKey = `${namespace}/${name}`;
    const type = eventTypeOf(event);
    const known = this.#operations.get(vmiKey) ?? {};
    let projection: Projection | undefined;
    let object: VirtualMachineInstance | undefined;
    let outcome: ApplyOutcome;
    try {
      const wrote = await this.#writer.writeVolumeStatus(namespace, name, (current, vmi) => {
        object = vmi;
        projection = undefined;
        // An event of an earlier VMI of the same name changes nothing.
        if (vmi.metadata.uid !== event.data.vmiUID) return current;
        projection = projectStatus(current, event, { operations: known });
        return projection.next;
      });
      outcome =
        projection === undefined || projection.stale ? 'stale' : wrote ? 'applied' : 'unchanged';
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      outcome = 'gone';
    }
    const p: Projection | undefined = projection;
    if (p !== undefined && !p.stale) {
      this.#remember(this.#operations, vmiKey, p.operations);
      if (p.k8sEvent !== undefined && object !== undefined) {
        const e = p.k8sEvent;
        await this.#o.recorder.record(object, e.type, e.reason, e.message);
      }
    }
    if (type === EventType.Released && outcome !== 'stale') await this.#removed(event, log);
    return outcome;
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
    log.debug('published removed');
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

  /** A bounded map: the oldest VMI is forgotten first. */
  #remember<T>(map: Map<string, T>, key: string, value: T): void {
    map.delete(key);
    map.set(key, value);
    const max = this.#o.maxRemembered ?? 10_000;
    while (map.size > max) {
      const oldest = map.keys().next();
      if (oldest.done) break;
      map.delete(oldest.value);
    }
  }
}
