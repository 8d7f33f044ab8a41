import { BoundedMap } from '@plugline/bus';
import { cloneJson, type VirtualMachineInstance } from '@plugline/contracts';
import type { Informer } from '@plugline/kube';

/** What {@link FreshestVmis} needs of the VMI informer. */
export type VmiCache = Pick<Informer<VirtualMachineInstance>, 'get' | 'synced' | 'onVersion'>;

/** How many of a VMI's latest resourceVersions the cache showed are kept. */
const RECENTLY_SEEN = 4;

/** The projector's last status write of one VMI. */
interface OwnWrite {
  resourceVersion: string;
  /** What the write returned, kept until the cache shows it (then the cache is as new). */
  written: VirtualMachineInstance | undefined;
}

/**
 * The freshest copy of a VMI the status projector can have without asking the API server.
 *
 * The informer's copy lags behind the projector's own writes by a watch event, and a VMI's
 * next events often come within that time. A watch delivers a VMI's changes in order, so once
 * the cache has shown the projector's last write, whatever it shows later is at least as new:
 * it is read then. Until it has, the object that write returned is the newest known.
 * The watch event of a write often comes before the write's response, so the cache's latest
 * resourceVersions are kept to tell, when the response comes, that the cache has shown it.
 * Either copy may still be older than the server's (another writer came in between): the
 * write's resourceVersion test fails and the writer reads again (GET).
 * Without a remembered write of the VMI (none yet, or forgotten) the cache is read: the
 * events being projected came after the change that started the operation, which the cache
 * had shown the decision.
 */
export class FreshestVmis {
  readonly #cache: VmiCache;
  readonly #own: BoundedMap<string, OwnWrite>;
  /** Per VMI, the latest resourceVersions the cache showed, newest last. */
  readonly #seen: BoundedMap<string, string[]>;

  constructor(cache: VmiCache, capacity: number) {
    this.#cache = cache;
    this.#own = new BoundedMap(capacity);
    this.#seen = new BoundedMap(capacity);
    cache.onVersion((namespace, name, resourceVersion) =>
      this.#shown(`${namespace}/${name}`, resourceVersion),
    );
  }

  get synced(): boolean {
    return this.#cache.synced;
  }

  /** A copy of the freshest VMI known (the caller may change it); undefined when not cached. */
  get(namespace: string, name: string): VirtualMachineInstance | undefined {
    const own = this.#own.get(`${namespace}/${name}`);
    const cached = this.#cache.get(namespace, name);
    if (own?.written === undefined) return cached;
    if (cached?.metadata.resourceVersion === own.resourceVersion) {
      own.written = undefined;
      return cached;
    }
    return cloneJson(own.written);
  }

  /** Remembers what a status write of this projector returned. */
  wrote(vmi: VirtualMachineInstance): void {
    const { namespace = '', name = '', resourceVersion } = vmi.metadata;
    const key = `${namespace}/${name}`;
    if (resourceVersion === undefined) {
      this.#own.delete(key);
      return;
    }
    const shown = this.#seen.peek(key)?.includes(resourceVersion) === true;
    this.#own.set(key, { resourceVersion, written: shown ? undefined : vmi });
  }

  forget(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    this.#own.delete(key);
    this.#seen.delete(key);
  }

  #shown(key: string, resourceVersion: string): void {
    const own = this.#own.peek(key);
    if (own !== undefined && own.resourceVersion === resourceVersion) own.written = undefined;
    const seen = this.#seen.get(key) ?? [];
    seen.push(resourceVersion);
    if (seen.length > RECENTLY_SEEN) seen.shift();
    this.#seen.set(key, seen);
  }
}
