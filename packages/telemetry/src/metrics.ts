import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** How one work message ended (the label `outcome`). */
export const Outcome = {
  Done: 'done',
  Waiting: 'waiting',
  Retry: 'retry',
  Terminal: 'terminal',
  DeadLetter: 'dead-letter',
  Conflict: 'conflict',
  Busy: 'busy',
  /** Acknowledged unrun: a handling of its unit queued before it covers it (`coalesce`). */
  Coalesced: 'coalesced',
  /**
   * Acknowledged unapplied: a redelivered event older than one of its volume this process has
   * applied already (the status projector).
   */
  Superseded: 'superseded',
} as const;
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

/**
 * The steps of one work item's handling, in order (the label `step` of
 * `plugline_work_step_seconds`). Where a stage's time goes: waiting for a slot or behind its unit's
 * running handling, taking the unit's lease, reading its snapshot together with the truth, running
 * the machine and its effects, writing the snapshot and publishing what it emitted, and, after the
 * ack, releasing the lease.
 */
export const WorkStep = {
  Queued: 'queued',
  Lease: 'lease',
  Read: 'read',
  Run: 'run',
  Persist: 'persist',
  Release: 'release',
} as const;
export type WorkStep = (typeof WorkStep)[keyof typeof WorkStep];

/** The typed metric handles every stage reports. */
export interface PluglineMetrics {
  readonly registry: Registry;
  /** `plugline_messages_handled_total{stage,outcome}` */
  readonly messagesHandled: Counter<'stage' | 'outcome'>;
  /** `plugline_effect_duration_seconds{stage,effect}` */
  readonly effectDuration: Histogram<'stage' | 'effect'>;
  /** `plugline_work_step_seconds{stage,step}`: each {@link WorkStep} of each handling. */
  readonly workStep: Histogram<'stage' | 'step'>;
  /** `plugline_units_in_flight{stage}` */
  readonly inFlight: Gauge<'stage'>;
  /** `plugline_redeliveries_total{stage}` */
  readonly redeliveries: Counter<'stage'>;
  /** `plugline_dead_letters_total{stage,reason}` */
  readonly deadLetters: Counter<'stage' | 'reason'>;
  /** `plugline_published_total{kind}` (kind = event | work | dead-letter) */
  readonly published: Counter<'kind'>;
  /** `plugline_consume_restarts_total{stage}`: a consumption the client ended, opened again. */
  readonly consumeRestarts: Counter<'stage'>;
  /** `plugline_consumer_stalls_total{stage}`: a consumer found holding items it did not deliver. */
  readonly consumerStalls: Counter<'stage'>;
  /** `plugline_work_requeued_total{stage}`: items the server held and did not deliver, requeued. */
  readonly workRequeued: Counter<'stage'>;
}

export interface MetricsOptions {
  /** Also collect Node process metrics (CPU, memory, event loop lag, GC). Default true. */
  processMetrics?: boolean;
  /** Prefix of the process metrics. Default `plugline_`. */
  prefix?: string;
}

/**
 * Registers Plugline's metrics on `registry` (a fresh one by default, so tests and several
 * components in one process never collide on the global registry).
 */
export function createMetrics(
  registry: Registry = new Registry(),
  options: MetricsOptions = {},
): PluglineMetrics {
  if (options.processMetrics ?? true) {
    collectDefaultMetrics({ register: registry, prefix: options.prefix ?? 'plugline_' });
  }
  const registers = [registry];
  return {
    registry,
    messagesHandled: new Counter({
      name: 'plugline_messages_handled_total',
      help: 'Work messages handled, by stage and outcome.',
      labelNames: ['stage', 'outcome'] as const,
      registers,
    }),
    effectDuration: new Histogram({
      name: 'plugline_effect_duration_seconds',
      help: 'Duration of effects (invoked actors), by stage and effect.',
      labelNames: ['stage', 'effect'] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    workStep: new Histogram({
      name: 'plugline_work_step_seconds',
      help: 'Time each step of a work item took (queued, lease, read, run, persist, release), by stage and step.',
      labelNames: ['stage', 'step'] as const,
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
      registers,
    }),
    inFlight: new Gauge({
      name: 'plugline_units_in_flight',
      help: 'Units being worked on right now, by stage.',
      labelNames: ['stage'] as const,
      registers,
    }),
    redeliveries: new Counter({
      name: 'plugline_redeliveries_total',
      help: 'Work messages received again after a nak or an ack timeout, by stage.',
      labelNames: ['stage'] as const,
      registers,
    }),
    deadLetters: new Counter({
      name: 'plugline_dead_letters_total',
      help: 'Messages dead-lettered, by stage and reason.',
      labelNames: ['stage', 'reason'] as const,
      registers,
    }),
    published: new Counter({
      name: 'plugline_published_total',
      help: 'Messages published and acknowledged by JetStream, by kind.',
      labelNames: ['kind'] as const,
      registers,
    }),
    consumeRestarts: new Counter({
      name: 'plugline_consume_restarts_total',
      help: 'Consumptions of a work or event stream that ended on their own and were opened again, by stage.',
      labelNames: ['stage'] as const,
      registers,
    }),
    consumerStalls: new Counter({
      name: 'plugline_consumer_stalls_total',
      help: 'Times a consumer held items it did not deliver to an idle stage (a new leader was asked for), by stage.',
      labelNames: ['stage'] as const,
      registers,
    }),
    workRequeued: new Counter({
      name: 'plugline_work_requeued_total',
      help: 'Work items the server held for a consumer and did not deliver, published again as copies, by stage.',
      labelNames: ['stage'] as const,
      registers,
    }),
  };
}
