import {
  CoreV1Api,
  CustomObjectsApi,
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { cloneJson } from '@plugline/contracts';
import type { Logger } from 'pino';
import { makeApiClient } from './agent.js';
import { CacheIndex, cacheIdOf, splitCacheId } from './cache-index.js';
import { InformerStoppedError, statusCodeOf } from './errors.js';
import { collectionPath, type ResourceRef } from './resources.js';
import type { KubeObject } from './types.js';

/** Exponential, capped, jittered backoff between informer restarts. */
export interface InformerBackoff {
  /** First delay, in ms (default 250). */
  initialMs?: number;
  /** Largest delay, in ms (default 30 000). */
  maxMs?: number;
  /** Multiplier per consecutive failure (default 2). */
  factor?: number;
  /** Random spread, as a fraction of the delay: delay × (1 ± jitter) (default 0.2). */
  jitter?: number;
  /**
   * A watch that stayed up this long resets the failure count (default 30 000 ms); so does one
   * that delivered a change.
   */
  healthyAfterMs?: number;
}

/** What {@link createInformer} needs. */
export interface InformerOptions {
  kc: KubeConfig;
  resource: ResourceRef;
  /** Watch one namespace; all namespaces when absent (and for cluster-scoped resources). */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  logger: Logger;
  backoff?: InformerBackoff;
}

/** The kinds of change an informer reports. */
export const InformerEvent = { Add: 'add', Update: 'update', Delete: 'delete' } as const;
export type InformerEvent = (typeof InformerEvent)[keyof typeof InformerEvent];

/** Receives a deep copy of the object that was added, updated (its new state) or deleted. */
export type InformerHandler<T> = (obj: T) => void;

/**
 * A list-watch cache of one resource type that never stays down: whenever client-node's
 * ListWatch stops itself on an error, it is restarted after an exponential, capped, jittered
 * backoff (resuming from the last resourceVersion; a 410 Gone makes it re-list, and the
 * re-list reports deletes for objects that vanished meanwhile).
 *
 * Objects handed out (`get`, `list`, handlers) are deep copies: mutate them freely.
 */
export interface Informer<T extends KubeObject> {
  /**
   * Starts list-watching; resolves once the first list succeeded (the cache is synced).
   * Idempotent. Rejects with {@link InformerStoppedError} when `stop()` comes first.
   */
  start(): Promise<void>;
  /** Stops watching and any pending restart. The cache keeps its last content. */
  stop(): Promise<void>;
  /** True once the first list has succeeded. */
  readonly synced: boolean;
  /** How many times the informer restarted after an error (for tests and metrics). */
  readonly restarts: number;
  /** A copy of the cached object; `namespace` is `''` for cluster-scoped resources. */
  get(namespace: string, name: string): T | undefined;
  /**
   * Copies of the cached objects, optionally filtered. The filter is a pure predicate: it sees the
   * cached objects themselves (only the ones it keeps are copied) and must not change them.
   */
  list(filter?: (obj: T) => boolean): T[];
  /**
   * Keeps the cached objects findable by keys of their own, as client-go's indexers do: `keysOf`
   * gives an object's keys (a pure function of the cached object, which it must not change).
   * Returns the lookup: copies of the cached objects that carry a key, found without scanning the
   * cache. The index follows every add, update and delete, re-lists included.
   */
  index(keysOf: (obj: T) => readonly string[]): (key: string) => T[];
  /** Subscribes to a kind of change; returns the unsubscribe function. */
  on(event: InformerEvent, handler: InformerHandler<T>): () => void;
  /** Same as `on('add', handler)`. */
  onAdd(handler: InformerHandler<T>): () => void;
  /** Same as `on('update', handler)`. */
  onUpdate(handler: InformerHandler<T>): () => void;
  /** Same as `on('delete', handler)`. */
  onDelete(handler: InformerHandler<T>): () => void;
  /**
   * Subscribes to the resourceVersion of each object added or updated, in the watch's order,
   * without a copy of the object (what `on` hands out costs a deep copy per handler).
   */
  onVersion(handler: VersionHandler): () => void;
}

/** Called with an added or updated object's place and resourceVersion. */
export type VersionHandler = (namespace: string, name: string, resourceVersion: string) => void;

type ListFn = () => Promise<KubernetesListObject<KubernetesObject>>;

interface Selectors {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

/** Typed objects from the generated client carry `Date`s; the cache holds the wire JSON. */
function toWire(list: unknown): KubernetesListObject<KubernetesObject> {
  return JSON.parse(JSON.stringify(list)) as KubernetesListObject<KubernetesObject>;
}

function coreListFn(kc: KubeConfig, plural: string, s: Selectors): ListFn {
  const api = makeApiClient(kc, CoreV1Api);
  const sel = { labelSelector: s.labelSelector, fieldSelector: s.fieldSelector };
  const ns = s.namespace;
  const table: Record<string, ListFn> = {
    pods: async () =>
      toWire(
        ns
          ? await api.listNamespacedPod({ namespace: ns, ...sel })
          : await api.listPodForAllNamespaces(sel),
      ),
    persistentvolumeclaims: async () =>
      toWire(
        ns
          ? await api.listNamespacedPersistentVolumeClaim({ namespace: ns, ...sel })
          : await api.listPersistentVolumeClaimForAllNamespaces(sel),
      ),
    events: async () =>
      toWire(
        ns
          ? await api.listNamespacedEvent({ namespace: ns, ...sel })
          : await api.listEventForAllNamespaces(sel),
      ),
    nodes: async () => toWire(await api.listNode(sel)),
  };
  const fn = table[plural];
  if (!fn) throw new TypeError(`no informer list function for core resource "${plural}"`);
  return fn;
}

function customListFn(kc: KubeConfig, ref: ResourceRef, s: Selectors): ListFn {
  const api = makeApiClient(kc, CustomObjectsApi);
  const base = {
    group: ref.group,
    version: ref.version,
    plural: ref.plural,
    labelSelector: s.labelSelector,
    fieldSelector: s.fieldSelector,
  };
  const ns = s.namespace;
  return async () =>
    (ns
      ? await api.listNamespacedCustomObject({ ...base, namespace: ns })
      : await api.listClusterCustomObject(base)) as KubernetesListObject<KubernetesObject>;
}

class RestartingInformer<T extends KubeObject> implements Informer<T> {
  #lw: ListWatch<KubernetesObject>;
  #log: Logger;
  #backoff: Required<InformerBackoff>;
  #synced = false;
  #stopped = true;
  #restarts = 0;
  #failures = 0;
  #upSince = 0;
  /** The running attempt's watch delivered a change: it was healthy, whatever ended it. */
  #delivered = false;
  #attempt = 0;
  #attemptFailed = false;
  #timer: NodeJS.Timeout | undefined;
  #waiters: (() => void)[] = [];
  readonly #indexes: CacheIndex<T>[] = [];
  #handlers: Record<InformerEvent, Set<InformerHandler<T>>> = {
    add: new Set(),
    update: new Set(),
    delete: new Set(),
  };
  readonly #versionHandlers = new Set<VersionHandler>();

  constructor(options: InformerOptions) {
    const { kc, resource, namespace, labelSelector, fieldSelector } = options;
    const selectors = { namespace, labelSelector, fieldSelector };
    const listFn =
      resource.group === ''
        ? coreListFn(kc, resource.plural, selectors)
        : customListFn(kc, resource, selectors);
    this.#lw = new ListWatch(
      collectionPath(resource, namespace),
      new Watch(kc),
      listFn,
      false,
      labelSelector,
      fieldSelector,
    );
    this.#log = options.logger.child({
      component: 'informer',
      resource: resource.group ? `${resource.plural}.${resource.group}` : resource.plural,
      ...(namespace ? { ns: namespace } : {}),
    });
    this.#backoff = {
      initialMs: 250,
      maxMs: 30_000,
      factor: 2,
      jitter: 0.2,
      healthyAfterMs: 30_000,
      ...options.backoff,
    };
    for (const event of Object.values(InformerEvent)) {
      this.#lw.on(event, (obj) => {
        if (this.#upSince > 0) this.#delivered = true;
        // The cache has changed already: the indexes follow before any handler looks.
        this.#reindex(event, obj as unknown as T);
        if (event !== InformerEvent.Delete) this.#dispatchVersion(obj);
        this.#dispatch(event, obj as unknown as T);
      });
    }
    this.#lw.on('error', (err?: unknown) => this.#onError(err));
  }

  get synced(): boolean {
    return this.#synced;
  }

  get restarts(): number {
    return this.#restarts;
  }

  async start(): Promise<void> {
    if (this.#synced && !this.#stopped) return;
    const synced = new Promise<void>((resolve) => this.#waiters.push(resolve));
    if (this.#stopped) {
      this.#stopped = false;
      void this.#run();
    }
    await synced;
    if (!this.#synced) throw new InformerStoppedError('informer stopped before it synced');
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#lw.stop();
    this.#releaseWaiters();
  }

  get(namespace: string, name: string): T | undefined {
    const obj = this.#lw.get(name, namespace);
    return obj === undefined ? undefined : (cloneJson(obj) as unknown as T);
  }

  list(filter?: (obj: T) => boolean): T[] {
    // Filter first: copying every cached object to keep a few cost more than all else a
    // reconcile does (issue 10).
    const cached = this.#lw.list() as unknown as T[];
    const kept = filter ? cached.filter(filter) : cached;
    return kept.map((obj) => cloneJson(obj));
  }

  index(keysOf: (obj: T) => readonly string[]): (key: string) => T[] {
    const index = new CacheIndex<T>(keysOf);
    for (const obj of this.#lw.list()) index.put(cacheIdOf(obj), obj as unknown as T);
    this.#indexes.push(index);
    return (key) =>
      index.ids(key).flatMap((id) => {
        const { namespace, name } = splitCacheId(id);
        const obj = this.#lw.get(name, namespace);
        return obj === undefined ? [] : [cloneJson(obj) as unknown as T];
      });
  }

  #reindex(event: InformerEvent, obj: T): void {
    if (this.#indexes.length === 0) return;
    const id = cacheIdOf(obj);
    for (const index of this.#indexes) {
      if (event === InformerEvent.Delete) index.remove(id);
      else index.put(id, obj);
    }
  }

  on(event: InformerEvent, handler: InformerHandler<T>): () => void {
    const set = this.#handlers[event];
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  onAdd(handler: InformerHandler<T>): () => void {
    return this.on(InformerEvent.Add, handler);
  }

  onUpdate(handler: InformerHandler<T>): () => void {
    return this.on(InformerEvent.Update, handler);
  }

  onDelete(handler: InformerHandler<T>): () => void {
    return this.on(InformerEvent.Delete, handler);
  }

  /** One (re)start of the ListWatch: lists when it has no resourceVersion, then watches. */
  async #run(): Promise<void> {
    this.#timer = undefined;
    if (this.#stopped) return;
    const attempt = ++this.#attempt;
    this.#attemptFailed = false;
    this.#delivered = false;
    try {
      await this.#lw.start();
    } catch (err) {
      this.#onError(err);
      return;
    }
    // An error during this attempt has already scheduled the next one.
    if (this.#stopped || attempt !== this.#attempt || this.#attemptFailed) return;
    this.#upSince = Date.now();
    if (this.#synced) {
      this.#log.info({ restarts: this.#restarts }, 'informer resumed');
    } else {
      this.#synced = true;
      this.#log.info({ objects: this.#lw.list().length }, 'informer synced');
    }
    this.#releaseWaiters();
  }

  #onError(err: unknown): void {
    this.#attemptFailed = true;
    if (this.#stopped || this.#timer) return;
    const b = this.#backoff;
    // A watch that delivered changes, or stayed up, was healthy: whatever cut it (a dropped
    // connection, a restarted API server) is one failure, not the next of a series. client-go's
    // reflector likewise watches again at once after a watch that ran; counting every drop made
    // drops a few seconds apart leave the informers blind for up to 30 s each.
    const healthy =
      this.#upSince > 0 && (this.#delivered || Date.now() - this.#upSince >= b.healthyAfterMs);
    if (healthy) this.#failures = 0;
    this.#upSince = 0;
    this.#failures++;
    this.#restarts++;
    const base = Math.min(b.maxMs, b.initialMs * b.factor ** (this.#failures - 1));
    const delayMs = Math.round(base * (1 + (Math.random() * 2 - 1) * b.jitter));
    this.#log.warn(
      { err, statusCode: statusCodeOf(err), restarts: this.#restarts, delayMs },
      'informer stopped on an error; restarting after backoff',
    );
    this.#timer = setTimeout(() => void this.#run(), delayMs);
  }

  onVersion(handler: VersionHandler): () => void {
    this.#versionHandlers.add(handler);
    return () => {
      this.#versionHandlers.delete(handler);
    };
  }

  #dispatchVersion(obj: KubernetesObject): void {
    const { namespace = '', name = '', resourceVersion } = obj.metadata ?? {};
    if (resourceVersion === undefined) return;
    for (const handler of this.#versionHandlers) {
      try {
        handler(namespace, name, resourceVersion);
      } catch (err) {
        this.#log.error({ err, name }, 'informer version handler threw');
      }
    }
  }

  #dispatch(event: InformerEvent, obj: T): void {
    for (const handler of this.#handlers[event]) {
      try {
        handler(cloneJson(obj));
      } catch (err) {
        this.#log.error({ err, event, name: obj.metadata?.name }, 'informer handler threw');
      }
    }
  }

  #releaseWaiters(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }
}

/**
 * Creates a restarting informer for one resource type (see {@link Informer}). Core resources
 * supported: pods, persistentvolumeclaims, events, nodes; any custom resource by group/version/plural.
 * Call `start()` to begin; `stop()` on shutdown.
 */
export function createInformer<T extends KubeObject>(options: InformerOptions): Informer<T> {
  return new RestartingInformer<T>(options);
}
