/**
 * A secondary index over an informer's cache: which cached objects (by their `namespace/name`)
 * carry each key. Kept in step with the cache's own adds, updates and deletes, so that a lookup
 * costs what it finds, not the size of the cache.
 */
export class CacheIndex<T> {
  /** Object ids by key. */
  readonly #byKey = new Map<string, Set<string>>();
  /** Each indexed object's keys, to take it out again when it changes or goes. */
  readonly #keysOf = new Map<string, readonly string[]>();

  constructor(private readonly keysOf: (obj: T) => readonly string[]) {}

  /**
   * The object `id` is now `obj` (added or updated). An object whose keys stay keeps its place:
   * a lookup lists objects in the order they were first indexed, as the cache lists them.
   */
  put(id: string, obj: T): void {
    const keys = [...new Set(this.keysOf(obj))];
    const before = this.#keysOf.get(id);
    if (before !== undefined && sameKeys(before, keys)) return;
    this.remove(id);
    if (keys.length === 0) return;
    this.#keysOf.set(id, keys);
    for (const key of keys) {
      let ids = this.#byKey.get(key);
      if (ids === undefined) this.#byKey.set(key, (ids = new Set()));
      ids.add(id);
    }
  }

  /** The object `id` is gone. */
  remove(id: string): void {
    const keys = this.#keysOf.get(id);
    if (keys === undefined) return;
    this.#keysOf.delete(id);
    for (const key of keys) {
      const ids = this.#byKey.get(key);
      ids?.delete(id);
      if (ids?.size === 0) this.#byKey.delete(key);
    }
  }

  /** The ids of the objects carrying `key`. */
  ids(key: string): readonly string[] {
    const ids = this.#byKey.get(key);
    return ids === undefined ? [] : [...ids];
  }
}

const sameKeys = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((key, i) => key === b[i]);

/** The cache id of an object: namespace (empty when cluster-scoped) and name. */
export function cacheIdOf(obj: { metadata?: { namespace?: string; name?: string } }): string {
  return cacheId(obj.metadata?.namespace ?? '', obj.metadata?.name ?? '');
}

// Namespaces are DNS labels: they never contain '/', so the first '/' splits an id.
export function cacheId(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export function splitCacheId(id: string): { namespace: string; name: string } {
  const slash = id.indexOf('/');
  return { namespace: id.slice(0, slash), name: id.slice(slash + 1) };
}
