import type { CoreV1Event } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { KubeClient } from './client.js';

/** The two Event types Kubernetes knows. */
export const EventType = { Normal: 'Normal', Warning: 'Warning' } as const;
export type EventType = (typeof EventType)[keyof typeof EventType];

/** The object an Event is about: anything with `metadata.name` (VMI, pod, PVC, ...). */
export interface EventSubject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
  };
}

/** What {@link EventRecorder} needs. */
export interface EventRecorderOptions {
  client: Pick<KubeClient, 'createEvent' | 'patchEvent'>;
  /** `source.component` and `reportingComponent`, e.g. `plugline-spec-watcher`. */
  component: string;
  /** `source.host` and `reportingInstance` (e.g. the pod or node name). */
  host?: string;
  logger: Logger;
  /** Repeats within this window update one Event (default 10 minutes). */
  aggregateWindowMs?: number;
  /** Most remembered (object, type, reason, message) keys, and objects (default 4096). */
  maxKeys?: number;
  /**
   * Writes (a new Event or a repeat's count) allowed about one object at once (default 25): past
   * them, one more per `spamRefillMs` (default 5 minutes) and the rest are dropped, as client-go's
   * recorder does (its per source and object spam filter, which KubeVirt's components run with).
   */
  spamBurst?: number;
  spamRefillMs?: number;
  /** The clock; tests may pass their own. */
  now?: () => Date;
}

/** An object's allowance of Event writes (a token bucket). */
interface Allowance {
  tokens: number;
  atMs: number;
}

interface Seen {
  namespace: string;
  name: string;
  count: number;
  lastMs: number;
}

/** Kubernetes `Time`: RFC 3339, whole seconds. */
function kubeTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Records core/v1 Events about objects, best-effort: `record` never throws (failures are
 * logged). Like client-go's recorder, the same object + type + reason + message seen again
 * within the aggregation window bumps `count` and `lastTimestamp` of the Event already written
 * instead of creating another one, and the writes about one object are rate-limited (a burst of
 * 25, then one per 5 minutes): a burst of 75 volumes on one VMI wrote 300 Events, which cost the
 * API server and etcd more than the status writes, and the VMI's status says the same.
 */
export class EventRecorder {
  readonly #o: Required<Omit<EventRecorderOptions, 'host'>> & { host?: string };
  readonly #log: Logger;
  readonly #seen = new Map<string, Seen>();
  readonly #allowances = new Map<string, Allowance>();
  readonly #chains = new Map<string, Promise<void>>();
  #seq = 0;

  constructor(options: EventRecorderOptions) {
    this.#o = {
      aggregateWindowMs: 10 * 60_000,
      maxKeys: 4096,
      spamBurst: 25,
      spamRefillMs: 5 * 60_000,
      now: () => new Date(),
      ...options,
    };
    this.#log = options.logger.child({ component: 'event-recorder' });
  }

  /**
   * Records an Event about `object`. Resolves when it is written (or the attempt failed and was
   * logged, or the object's allowance was spent and it was dropped); never rejects. Calls for the
   * same key are serialised, so repeats aggregate.
   */
  record(object: EventSubject, type: EventType, reason: string, message: string): Promise<void> {
    const meta = object.metadata ?? {};
    if (!this.#allowed(object)) {
      this.#log.debug(
        { ns: meta.namespace, name: meta.name, kind: object.kind, reason, type },
        'event dropped: too many about this object',
      );
      return Promise.resolve();
    }
    const key = [meta.uid ?? '', meta.namespace ?? '', meta.name ?? '', type, reason, message].join(
      '\u0000',
    );
    const previous = this.#chains.get(key) ?? Promise.resolve();
    const next = previous.then(() => this.#write(key, object, type, reason, message));
    this.#chains.set(key, next);
    void next.then(() => {
      if (this.#chains.get(key) === next) this.#chains.delete(key);
    });
    return next;
  }

  async #write(
    key: string,
    object: EventSubject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<void> {
    const now = this.#o.now();
    const seen = this.#seen.get(key);
    try {
      if (seen && now.getTime() - seen.lastMs <= this.#o.aggregateWindowMs) {
        const written = await this.#bump(seen, now);
        if (written) return;
      }
      await this.#create(key, object, { type, reason, message }, now);
    } catch (err) {
      const meta = object.metadata ?? {};
      this.#log.warn(
        { err, ns: meta.namespace, name: meta.name, kind: object.kind, reason, type },
        'could not record event',
      );
    }
  }

  /** Bumps an aggregated Event; false when it is gone or changed (then a new one is created). */
  async #bump(seen: Seen, now: Date): Promise<boolean> {
    try {
      await this.#o.client.patchEvent(seen.namespace, seen.name, [
        { op: 'test', path: '/count', value: seen.count },
        { op: 'replace', path: '/count', value: seen.count + 1 },
        { op: 'replace', path: '/lastTimestamp', value: kubeTime(now) },
      ]);
    } catch (err) {
      this.#log.debug({ err, name: seen.name }, 'could not aggregate event; creating a new one');
      return false;
    }
    seen.count++;
    seen.lastMs = now.getTime();
    return true;
  }

  async #create(
    key: string,
    object: EventSubject,
    what: { type: EventType; reason: string; message: string },
    now: Date,
  ): Promise<void> {
    const { type, reason, message } = what;
    const meta = object.metadata ?? {};
    const namespace = meta.namespace || 'default';
    const stamp = (BigInt(now.getTime()) * 1_000_000n + BigInt(this.#seq++ % 1_000_000)).toString(
      16,
    );
    const name = `${meta.name ?? 'unknown'}.${stamp}`;
    const event: CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace },
      involvedObject: {
        kind: object.kind,
        apiVersion: object.apiVersion,
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resourceVersion: meta.resourceVersion,
      },
      type,
      reason,
      message,
      source: { component: this.#o.component, host: this.#o.host },
      reportingComponent: this.#o.component,
      reportingInstance: this.#o.host ?? '',
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    await this.#o.client.createEvent(namespace, event);
    this.#remember(key, { namespace, name, count: 1, lastMs: now.getTime() });
  }

  /** Takes one write from the object's allowance; false when there is none left. */
  #allowed(object: EventSubject): boolean {
    const meta = object.metadata ?? {};
    const key = [object.kind, object.apiVersion, meta.namespace, meta.name, meta.uid].join(
      '\u0000',
    );
    const nowMs = this.#o.now().getTime();
    const { spamBurst: burst, spamRefillMs: refillMs } = this.#o;
    const last = this.#allowances.get(key);
    const refilled = last === undefined ? burst : last.tokens + (nowMs - last.atMs) / refillMs;
    const tokens = Math.min(burst, refilled);
    const allowed = tokens >= 1;
    this.#keepNewest(this.#allowances, key, { tokens: allowed ? tokens - 1 : tokens, atMs: nowMs });
    return allowed;
  }

  #remember(key: string, seen: Seen): void {
    this.#keepNewest(this.#seen, key, seen);
  }

  /** Sets `key` as the newest entry of `map`, forgetting the oldest past `maxKeys`. */
  #keepNewest<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    while (map.size > this.#o.maxKeys) {
      const oldest = map.keys().next();
      if (oldest.done) break;
      map.delete(oldest.value);
    }
  }
}
