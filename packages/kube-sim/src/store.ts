import { randomBytes, randomUUID } from 'node:crypto';
import { cloneJson, nameProblem } from '@plugline/contracts';
import {
  ApiError,
  StatusReason,
  alreadyExists,
  badRequest,
  conflict,
  invalid,
  notFound,
} from './errors.js';
import { applyJsonPatch, applyMergePatch, jsonEqual, strategicMerge } from './patch.js';
import { RESOURCE_TYPES, Types, apiVersionOf, typeByKind, typeKey } from './resources.js';
import type { KubeObject, ObjectMeta, ResourceType } from './resources.js';
import type { Matcher } from './selectors.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** One change of one object, as kept in the watch history. Objects in it are never mutated. */
export interface StoredEvent {
  readonly rv: number;
  readonly type: WatchEventType;
  readonly object: KubeObject;
  /** What a MODIFIED event replaced: a selective watch tells from it whether the change moved
   * the object into its selection (ADDED) or out of it (DELETED). */
  readonly previous?: KubeObject;
  /** The event serialized as a watch line (`{"type":...,"object":...}`), made once, shared. */
  line?: string;
  /** This change as the watches it moved the object into or out of see it, made once, shared. */
  entered?: StoredEvent;
  left?: StoredEvent;
}

export interface WatchOptions {
  namespace?: string;
  match?: Matcher;
  /** Start after this version; empty or "0" sends the current objects as ADDED first. */
  resourceVersion?: string;
}

export interface StoreWatch {
  close(): void;
}

export interface WatchSink {
  event(e: StoredEvent): void;
  /** The store ends the watch (dropWatches, stop). */
  closed(): void;
  /** A client connection: `dropWatches()` closes it (in-process watches stay). */
  droppable?: boolean;
}

export const PatchType = {
  Json: 'application/json-patch+json',
  Merge: 'application/merge-patch+json',
  Strategic: 'application/strategic-merge-patch+json',
  Apply: 'application/apply-patch+yaml',
} as const;
export type PatchType = (typeof PatchType)[keyof typeof PatchType];

export interface WriteOptions {
  namespace?: string;
  subresource?: string;
  dryRun?: boolean;
  /** Writes of the simulator's own controllers: status kept on create. */
  internal?: boolean;
}

export interface DeleteOptions {
  gracePeriodSeconds?: number;
  propagationPolicy?: 'Orphan' | 'Background' | 'Foreground';
  preconditions?: { uid?: string; resourceVersion?: string };
  dryRun?: boolean;
}

export interface ListOptions {
  namespace?: string;
  match?: Matcher;
  limit?: number;
  continueToken?: string;
}

export interface ListResult {
  items: KubeObject[];
  resourceVersion: string;
  continueToken?: string;
  remaining?: number;
}

/** Checks an object before it is stored; throws an ApiError (422) to refuse it. */
export type Validator = (type: ResourceType, obj: KubeObject, old: KubeObject | undefined) => void;

interface Watcher {
  namespace: string | undefined;
  match: Matcher | undefined;
  sink: WatchSink;
}

class TypeState {
  readonly objects = new Map<string, KubeObject>();
  history: StoredEvent[] = [];
  compactedRv: number;
  readonly watchers = new Set<Watcher>();
  constructor(rv: number) {
    this.compactedRv = rv;
  }
}

interface Ref {
  type: ResourceType;
  key: string;
}

const TERMINAL_POD_GRACE = 0;

function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

function metaOf(obj: KubeObject): ObjectMeta {
  if (!obj.metadata || typeof obj.metadata !== 'object') obj.metadata = {};
  return obj.metadata;
}

function specPart(obj: KubeObject): Record<string, unknown> {
  const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = obj;
  return rest;
}

function nowIso(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The API server's storage: per-type maps, one global resourceVersion counter, a bounded
 * per-type event history for watch resume (older versions answer 410 Gone), finalizers,
 * graceful deletion and ownerReference garbage collection.
 */
export class Store {
  private rv = 1;
  private readonly types = new Map<ResourceType, TypeState>();
  private readonly byUid = new Map<string, Ref>();
  private readonly dependents = new Map<string, Set<string>>();
  private readonly validators: Validator[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Pods with a node are deleted gracefully (the kubelet finishes them) when true. */
  gracefulPods = false;

  constructor(readonly watchCacheSize = 10_000) {
    for (const type of RESOURCE_TYPES) this.types.set(type, new TypeState(this.rv));
  }

  addValidator(v: Validator): void {
    this.validators.push(v);
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  private state(type: ResourceType): TypeState {
    const s = this.types.get(type);
    if (!s) throw badRequest(`unknown resource type ${typeKey(type)}`);
    return s;
  }

  // ------------------------------------------------------------------ reads

  /** The stored object itself (read-only) or undefined. */
  peek(type: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.state(type).objects.get(keyOf(type.namespaced ? namespace : undefined, name));
  }

  get(type: ResourceType, namespace: string | undefined, name: string): KubeObject {
    const obj = this.peek(type, namespace, name);
    if (!obj) throw notFound(type.group, type.plural, name);
    return obj;
  }

  /** Every stored object of a type (read-only), in insertion order. */
  all(type: ResourceType): IterableIterator<KubeObject> {
    return this.state(type).objects.values();
  }

  list(type: ResourceType, opts: ListOptions = {}): ListResult {
    const state = this.state(type);
    const prefix = type.namespaced && opts.namespace ? `${opts.namespace}/` : undefined;
    let keys = [...state.objects.keys()];
    if (prefix) keys = keys.filter((k) => k.startsWith(prefix));
    keys.sort();
    if (opts.continueToken) {
      const after = Buffer.from(opts.continueToken, 'base64url').toString();
      keys = keys.filter((k) => k > after);
    }
    const items: KubeObject[] = [];
    let lastKey: string | undefined;
    let index = 0;
    for (; index < keys.length; index++) {
      if (opts.limit && items.length >= opts.limit) break;
      const obj = state.objects.get(keys[index]!)!;
      if (!opts.match || opts.match(obj)) {
        items.push(obj);
        lastKey = keys[index];
      }
    }
    const result: ListResult = { items, resourceVersion: this.resourceVersion };
    if (index < keys.length && lastKey !== undefined) {
      result.continueToken = Buffer.from(lastKey).toString('base64url');
      result.remaining = keys.length - index;
    }
    return result;
  }

  // ------------------------------------------------------------------ watch

  /**
   * Starts a watch. Throws ApiError 410 (Expired) when `resourceVersion` is older than the
   * retained history of this type.
   */
  watch(type: ResourceType, opts: WatchOptions, sink: WatchSink): StoreWatch {
    const state = this.state(type);
    const namespace = type.namespaced ? opts.namespace : undefined;
    const watcher: Watcher = { namespace, match: opts.match, sink };
    const visible = (obj: KubeObject): boolean =>
      (!namespace || obj.metadata?.namespace === namespace) && (!opts.match || opts.match(obj));
    const from = opts.resourceVersion;
    if (!from || from === '0') {
      for (const obj of state.objects.values()) {
        if (visible(obj)) {
          sink.event({ rv: Number(obj.metadata?.resourceVersion), type: 'ADDED', object: obj });
        }
      }
    } else {
      const start = Number(from);
      if (!Number.isInteger(start) || start < 0) {
        throw invalid('', 'resourceVersion', from, [{ message: 'invalid resource version' }]);
      }
      if (start < state.compactedRv) {
        throw new ApiError(
          410,
          StatusReason.Gone,
          `too old resource version: ${start} (${state.compactedRv})`,
        );
      }
      for (const e of state.history.slice(this.firstAfter(state, start))) {
        const seen = this.asSeenBy(watcher, e);
        if (seen) sink.event(seen);
      }
    }
    state.watchers.add(watcher);
    return { close: () => state.watchers.delete(watcher) };
  }

  private firstAfter(state: TypeState, rv: number): number {
    let lo = 0;
    let hi = state.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (state.history[mid]!.rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * The event as watcher `w` sees it, or undefined when it is none of its business. As the API
   * server's watch cache does, a change that moves an object into a selective watch's selection
   * (a label set, say) is ADDED to it, and one that moves it out is DELETED, carrying the object
   * as it was with the change's resourceVersion; the watch's cache would go stale otherwise.
   */
  private asSeenBy(w: Watcher, e: StoredEvent): StoredEvent | undefined {
    if (w.namespace && e.object.metadata?.namespace !== w.namespace) return undefined;
    if (!w.match) return e;
    const now = w.match(e.object);
    if (e.type !== 'MODIFIED' || e.previous === undefined) return now ? e : undefined;
    const before = w.match(e.previous);
    if (now) return before ? e : (e.entered ??= { rv: e.rv, type: 'ADDED', object: e.object });
    if (!before) return undefined;
    const { previous } = e;
    const resourceVersion = e.object.metadata?.resourceVersion;
    return (e.left ??= {
      rv: e.rv,
      type: 'DELETED',
      object: { ...previous, metadata: { ...previous.metadata, resourceVersion } },
    });
  }

  /** Ends every open client watch (clients see the connection close and resume). */
  dropWatches(all = false): number {
    let n = 0;
    for (const state of this.types.values()) {
      for (const w of [...state.watchers]) {
        if (!all && !w.sink.droppable) continue;
        state.watchers.delete(w);
        w.sink.closed();
        n++;
      }
    }
    return n;
  }

  /** Forgets the whole watch history: every older resourceVersion now answers 410 Gone. */
  compact(): void {
    for (const state of this.types.values()) {
      state.history = [];
      state.compactedRv = this.rv;
    }
  }

  private emit(
    type: ResourceType,
    kind: WatchEventType,
    obj: KubeObject,
    previous?: KubeObject,
  ): void {
    const state = this.state(type);
    const e: StoredEvent =
      previous === undefined
        ? { rv: this.rv, type: kind, object: obj }
        : { rv: this.rv, type: kind, object: obj, previous };
    state.history.push(e);
    if (state.history.length > this.watchCacheSize * 2) {
      const drop = state.history.length - this.watchCacheSize;
      state.compactedRv = state.history[drop - 1]!.rv;
      state.history = state.history.slice(drop);
    }
    for (const w of state.watchers) {
      const seen = this.asSeenBy(w, e);
      if (seen) w.sink.event(seen);
    }
  }

  // ------------------------------------------------------------------ writes

  private nextRv(): string {
    this.rv += 1;
    return String(this.rv);
  }

  private checkNamespace(type: ResourceType, namespace: string | undefined): void {
    if (!type.namespaced) return;
    if (!namespace) throw badRequest('the namespace of the object must be set');
    const ns = this.peek(Types.namespaces, undefined, namespace);
    if (!ns) throw notFound('', 'namespaces', namespace);
    if (ns.metadata?.deletionTimestamp) {
      throw new ApiError(
        403,
        StatusReason.Forbidden,
        `unable to create new content in namespace ${namespace} because it is being terminated`,
      );
    }
  }

  private validate(type: ResourceType, obj: KubeObject, old: KubeObject | undefined): void {
    const meta = metaOf(obj);
    const problem = nameProblem(meta.name, type === Types.namespaces ? 'label' : 'subdomain');
    if (problem) {
      throw invalid(type.group, type.kind, String(meta.name ?? ''), [
        {
          field: 'metadata.name',
          message: `Invalid value: ${JSON.stringify(meta.name)}: ${problem}`,
        },
      ]);
    }
    for (const v of this.validators) v(type, obj, old);
  }

  private defaultStatus(type: ResourceType): Record<string, unknown> | undefined {
    switch (type) {
      case Types.pods:
        return { phase: 'Pending', qosClass: 'BestEffort' };
      case Types.persistentvolumeclaims:
        return { phase: 'Pending' };
      case Types.persistentvolumes:
        return { phase: 'Available' };
      case Types.namespaces:
        return { phase: 'Active' };
      default:
        return undefined;
    }
  }

  create(type: ResourceType, input: KubeObject, opts: WriteOptions = {}): KubeObject {
    const obj = cloneJson(input);
    const meta = metaOf(obj);
    const namespace = type.namespaced ? (opts.namespace ?? meta.namespace) : undefined;
    if (type.namespaced && meta.namespace && opts.namespace && meta.namespace !== opts.namespace) {
      throw badRequest(
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    }
    this.checkNamespace(type, namespace);
    if (!meta.name && meta.generateName) {
      meta.name = `${meta.generateName}${randomBytes(4).toString('hex').slice(0, 5)}`;
    }
    if (!meta.name) {
      throw invalid(type.group, type.kind, '', [
        { field: 'metadata.name', message: 'Required value: name or generateName is required' },
      ]);
    }
    obj.apiVersion = apiVersionOf(type);
    obj.kind = type.kind;
    if (namespace) meta.namespace = namespace;
    else delete meta.namespace;
    if (type.subresources.includes('status') && !opts.internal) {
      const status = this.defaultStatus(type);
      if (status) obj.status = status;
      else delete obj.status;
    }
    this.validate(type, obj, undefined);
    const key = keyOf(namespace, meta.name);
    const state = this.state(type);
    if (state.objects.has(key)) throw alreadyExists(type.group, type.plural, meta.name);
    meta.uid = randomUUID();
    meta.creationTimestamp = nowIso();
    meta.generation = 1;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    if (opts.dryRun) {
      meta.resourceVersion = this.resourceVersion;
      return obj;
    }
    meta.resourceVersion = this.nextRv();
    state.objects.set(key, obj);
    this.index(type, key, obj, undefined);
    this.emit(type, 'ADDED', obj);
    return obj;
  }

  private index(type: ResourceType, key: string, obj: KubeObject | undefined, old?: KubeObject) {
    const ref = `${typeKey(type)}|${key}`;
    for (const o of old?.metadata?.ownerReferences ?? []) this.dependents.get(o.uid)?.delete(ref);
    if (old?.metadata?.uid && !obj) this.byUid.delete(old.metadata.uid);
    if (!obj) return;
    if (obj.metadata?.uid) this.byUid.set(obj.metadata.uid, { type, key });
    for (const o of obj.metadata?.ownerReferences ?? []) {
      let set = this.dependents.get(o.uid);
      if (!set) this.dependents.set(o.uid, (set = new Set()));
      set.add(ref);
    }
  }

  /** Replaces an object (PUT), or its status with `subresource: 'status'`. */
  update(type: ResourceType, name: string, input: KubeObject, opts: WriteOptions = {}): KubeObject {
    const namespace = type.namespaced ? (opts.namespace ?? input.metadata?.namespace) : undefined;
    const old = this.get(type, namespace, name);
    const obj = cloneJson(input);
    const meta = metaOf(obj);
    if (meta.name !== undefined && meta.name !== name) {
      throw badRequest('the name of the object does not match the name on the URL');
    }
    const oldMeta = old.metadata!;
    if (meta.resourceVersion && meta.resourceVersion !== oldMeta.resourceVersion) {
      throw conflict(type.group, type.plural, name);
    }
    if (meta.uid && meta.uid !== oldMeta.uid) {
      throw conflict(type.group, type.plural, name);
    }
    const next = this.merged(type, old, obj, opts.subresource);
    return this.commit(type, old, next, opts.dryRun ?? false);
  }

  private merged(
    type: ResourceType,
    old: KubeObject,
    obj: KubeObject,
    subresource: string | undefined,
  ): KubeObject {
    const oldMeta = old.metadata!;
    if (subresource === 'status') {
      // Stored objects are never changed in place, so the new version shares everything but
      // the status with the old one; commit() only sets top-level metadata fields, hence the
      // metadata copy. (A deep copy here was a large share of every status patch.)
      return { ...old, metadata: { ...oldMeta }, status: obj.status };
    }
    const meta = metaOf(obj);
    const next: KubeObject = { ...obj, apiVersion: old.apiVersion, kind: old.kind };
    next.metadata = {
      ...meta,
      name: oldMeta.name,
      uid: oldMeta.uid,
      creationTimestamp: oldMeta.creationTimestamp,
      generation: oldMeta.generation,
    };
    if (oldMeta.namespace) next.metadata.namespace = oldMeta.namespace;
    else delete next.metadata.namespace;
    const target = next.metadata as Record<string, unknown>;
    for (const field of ['deletionTimestamp', 'deletionGracePeriodSeconds'] as const) {
      if (oldMeta[field] !== undefined) target[field] = oldMeta[field];
      else delete target[field];
    }
    if (type.subresources.includes('status')) {
      if (old.status !== undefined) next.status = old.status;
      else delete next.status;
    }
    return next;
  }

  private commit(type: ResourceType, old: KubeObject, next: KubeObject, dryRun: boolean) {
    const meta = next.metadata!;
    const oldMeta = old.metadata!;
    if (!jsonEqual(specPart(old), specPart(next))) meta.generation = (oldMeta.generation ?? 0) + 1;
    this.validate(type, next, old);
    if (oldMeta.deletionTimestamp) {
      const added = (meta.finalizers ?? []).filter((f) => !(oldMeta.finalizers ?? []).includes(f));
      if (added.length > 0) {
        throw new ApiError(
          422,
          StatusReason.Invalid,
          `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
        );
      }
    }
    const unchanged = jsonEqual(
      { ...next, metadata: { ...meta, resourceVersion: '' } },
      {
        ...old,
        metadata: { ...oldMeta, resourceVersion: '' },
      },
    );
    if (unchanged || dryRun) {
      meta.resourceVersion = oldMeta.resourceVersion;
      return unchanged ? old : next;
    }
    if (meta.finalizers?.length === 0) delete meta.finalizers;
    meta.resourceVersion = this.nextRv();
    const key = keyOf(meta.namespace, meta.name!);
    this.state(type).objects.set(key, next);
    this.index(type, key, next, old);
    this.emit(type, 'MODIFIED', next, old);
    if (meta.deletionTimestamp && !meta.finalizers?.length && this.finishable(type, next)) {
      this.remove(type, next);
    }
    return next;
  }

  /** Whether an object marked for deletion may go once its finalizers are gone. */
  private finishable(type: ResourceType, obj: KubeObject): boolean {
    if (type === Types.namespaces) return false;
    if (type !== Types.pods) return true;
    return (obj.metadata?.deletionGracePeriodSeconds ?? 0) === TERMINAL_POD_GRACE;
  }

  patch(
    type: ResourceType,
    name: string,
    patchType: string,
    body: unknown,
    opts: WriteOptions = {},
  ): KubeObject {
    const namespace = type.namespaced ? opts.namespace : undefined;
    const old = this.peek(type, namespace, name);
    if (!old) {
      if (patchType === PatchType.Apply && !opts.subresource) {
        return this.create(type, body as KubeObject, opts);
      }
      throw notFound(type.group, type.plural, name);
    }
    const patched = this.applyPatch(type, old, patchType, body) as KubeObject;
    if (patched === null || typeof patched !== 'object' || Array.isArray(patched)) {
      throw badRequest('the patch must produce an object');
    }
    const meta = metaOf(patched);
    if (meta.resourceVersion && meta.resourceVersion !== old.metadata!.resourceVersion) {
      throw conflict(type.group, type.plural, name);
    }
    if (meta.uid && meta.uid !== old.metadata!.uid) {
      throw new ApiError(
        422,
        StatusReason.Invalid,
        `${type.kind} "${name}" is invalid: metadata.uid: Invalid value: "${meta.uid}": field is immutable`,
      );
    }
    const next = this.merged(type, old, patched, opts.subresource);
    return this.commit(type, old, next, opts.dryRun ?? false);
  }

  private applyPatch(type: ResourceType, old: KubeObject, patchType: string, body: unknown) {
    switch (patchType) {
      case PatchType.Json:
        return applyJsonPatch(old, body);
      case PatchType.Merge:
      case PatchType.Apply:
        return applyMergePatch(old, body);
      case PatchType.Strategic:
        if (type.custom) {
          throw new ApiError(
            415,
            StatusReason.UnsupportedMediaType,
            `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`,
          );
        }
        return strategicMerge(old, body);
      default:
        throw new ApiError(
          415,
          StatusReason.UnsupportedMediaType,
          `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json`,
        );
    }
  }

  delete(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    opts: DeleteOptions = {},
  ): KubeObject {
    const old = this.get(type, namespace, name);
    const oldMeta = old.metadata!;
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== oldMeta.uid) {
      throw new ApiError(
        409,
        StatusReason.Conflict,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${oldMeta.uid}`,
      );
    }
    if (pre?.resourceVersion && pre.resourceVersion !== oldMeta.resourceVersion) {
      throw new ApiError(
        409,
        StatusReason.Conflict,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${oldMeta.resourceVersion}`,
      );
    }
    if (opts.dryRun) return old;
    const grace = this.graceFor(type, old, opts.gracePeriodSeconds);
    const hasFinalizers = (oldMeta.finalizers?.length ?? 0) > 0;
    if (type === Types.namespaces || hasFinalizers || grace > 0) {
      return this.markDeleting(type, old, grace, opts.propagationPolicy);
    }
    return this.remove(type, old, opts.propagationPolicy);
  }

  private graceFor(type: ResourceType, obj: KubeObject, requested: number | undefined): number {
    if (type !== Types.pods || !this.gracefulPods) return 0;
    const spec = obj.spec as { nodeName?: string; terminationGracePeriodSeconds?: number };
    if (!spec?.nodeName) return 0;
    const phase = (obj.status as { phase?: string } | undefined)?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return 0;
    const grace = requested ?? spec.terminationGracePeriodSeconds ?? 30;
    const current = obj.metadata?.deletionGracePeriodSeconds;
    return current !== undefined ? Math.min(current, grace) : grace;
  }

  private markDeleting(
    type: ResourceType,
    old: KubeObject,
    grace: number,
    policy: DeleteOptions['propagationPolicy'],
  ): KubeObject {
    const oldMeta = old.metadata!;
    if (
      oldMeta.deletionTimestamp &&
      (oldMeta.deletionGracePeriodSeconds ?? 0) <= grace &&
      (oldMeta.finalizers?.length ?? 0) > 0
    ) {
      return old;
    }
    if (
      oldMeta.deletionTimestamp &&
      grace === 0 &&
      !oldMeta.finalizers?.length &&
      type !== Types.namespaces
    ) {
      return this.remove(type, old, policy);
    }
    // Shares all but the metadata with the stored version, which is never changed in place.
    const next: KubeObject = { ...old, metadata: { ...oldMeta } };
    const meta = next.metadata!;
    meta.deletionTimestamp = oldMeta.deletionTimestamp ?? nowIso();
    meta.deletionGracePeriodSeconds = grace;
    meta.resourceVersion = this.nextRv();
    if (type === Types.namespaces) next.status = { phase: 'Terminating' };
    const key = keyOf(meta.namespace, meta.name!);
    this.state(type).objects.set(key, next);
    this.emit(type, 'MODIFIED', next, old);
    if (type === Types.namespaces) this.scheduleNamespaceCleanup(meta.name!);
    else if (policy !== 'Orphan') this.scheduleCollect(meta.uid!);
    return next;
  }

  /** Removes an object for good (no finalizers left) and collects its dependents. */
  private remove(
    type: ResourceType,
    obj: KubeObject,
    policy?: DeleteOptions['propagationPolicy'],
  ): KubeObject {
    const meta = obj.metadata!;
    const key = keyOf(meta.namespace, meta.name!);
    const state = this.state(type);
    state.objects.delete(key);
    this.index(type, key, undefined, obj);
    const gone: KubeObject = { ...obj, metadata: { ...meta, resourceVersion: this.nextRv() } };
    this.emit(type, 'DELETED', gone);
    if (policy === 'Orphan') this.orphan(meta.uid!);
    else this.scheduleCollect(meta.uid!);
    return gone;
  }

  private later(fn: () => void, ms = 0): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private dependentRefs(uid: string): Ref[] {
    const refs: Ref[] = [];
    for (const ref of this.dependents.get(uid) ?? []) {
      const bar = ref.indexOf('|');
      const tk = ref.slice(0, bar);
      const type = RESOURCE_TYPES.find((t) => typeKey(t) === tk);
      if (type) refs.push({ type, key: ref.slice(bar + 1) });
    }
    return refs;
  }

  /** Background cascading deletion: dependents whose owners are all gone are deleted. */
  private scheduleCollect(uid: string): void {
    if (!this.dependents.get(uid)?.size) return;
    this.later(() => {
      for (const { type, key } of this.dependentRefs(uid)) {
        const dep = this.state(type).objects.get(key);
        if (!dep || dep.metadata?.deletionTimestamp) continue;
        const owners = dep.metadata?.ownerReferences ?? [];
        const alive = owners.some((o) => {
          const ref = this.byUid.get(o.uid);
          const owner = ref && this.state(ref.type).objects.get(ref.key);
          return owner !== undefined && !owner.metadata?.deletionTimestamp;
        });
        if (alive) continue;
        try {
          this.delete(type, dep.metadata?.namespace, dep.metadata!.name!, {
            propagationPolicy: 'Background',
          });
        } catch {
          // Gone meanwhile: nothing to collect.
        }
      }
    });
  }

  private orphan(uid: string): void {
    for (const { type, key } of this.dependentRefs(uid)) {
      const dep = this.state(type).objects.get(key);
      if (!dep) continue;
      const owners = (dep.metadata?.ownerReferences ?? []).filter((o) => o.uid !== uid);
      const next: KubeObject = { ...dep, metadata: { ...dep.metadata } };
      if (owners.length > 0) next.metadata!.ownerReferences = owners;
      else delete next.metadata!.ownerReferences;
      this.commit(type, dep, next, false);
    }
  }

  private scheduleNamespaceCleanup(namespace: string): void {
    this.later(() => this.cleanNamespace(namespace), 10);
  }

  private cleanNamespace(namespace: string): void {
    const ns = this.peek(Types.namespaces, undefined, namespace);
    if (!ns?.metadata?.deletionTimestamp) return;
    let left = 0;
    for (const type of RESOURCE_TYPES) {
      if (!type.namespaced) continue;
      for (const obj of [...this.state(type).objects.values()]) {
        if (obj.metadata?.namespace !== namespace) continue;
        left++;
        if (!obj.metadata.deletionTimestamp) {
          this.delete(type, namespace, obj.metadata.name!, { propagationPolicy: 'Background' });
        }
      }
    }
    if (left === 0 && !ns.metadata.finalizers?.length) this.remove(Types.namespaces, ns);
    else this.later(() => this.cleanNamespace(namespace), 50);
  }

  /** Finds the stored type of an object by its apiVersion and kind. */
  typeOf(obj: KubeObject): ResourceType | undefined {
    return typeByKind(obj.apiVersion ?? '', obj.kind ?? '');
  }

  /** Stops background work (cascading deletion timers). */
  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.dropWatches(true);
  }
}
