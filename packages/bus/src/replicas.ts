import type { KV } from '@nats-io/kv';
import type { Logger } from '@plugline/telemetry';
import { isCasFailure } from './lease.js';

/** One process's entry: until when it counts as running (it refreshes it well before). */
interface ReplicaEntry {
  instance?: string;
  expiresAt: number;
}

type ReplicaBook = Record<string, ReplicaEntry>;

export interface StageReplicasOptions {
  /** The stage's lease bucket, where the book lives under a key no unit can have. */
  readonly kv: KV;
  /** The work consumer the replicas share: units of other consumers never contend. */
  readonly consumer: string;
  /** This process, as its leases name it. */
  readonly owner: string;
  /** This process's instance: an entry of an earlier process of it is a crashed predecessor. */
  readonly instance: string | undefined;
  /** How often the entry is refreshed and the others looked at; an entry lasts three of these. */
  readonly intervalMs: number;
  readonly log: Logger;
  /** Called when this process becomes the only replica, or stops being it. */
  readonly onChange: (alone: boolean) => void;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Which processes run a stage on one work consumer: each keeps its entry in a book in the stage's
 * lease bucket (one key per consumer), refreshed every `intervalMs`, and drops the entries that
 * expired. A process alone on its consumer may keep its unit leases between handlings (see
 * `LeaseManager.keeping`): no one else would want them. Correctness never rests on the book: a
 * lease is only ever taken by compare-and-set after its expiry, and the book only decides
 * whether another replica may have to wait for one.
 */
export class StageReplicas {
  readonly #o: StageReplicasOptions;
  readonly #key: string;
  /** Whether no other live process has an entry on this consumer (as of the last refresh). */
  #alone = false;
  #timer: NodeJS.Timeout | undefined;
  #refreshing: Promise<void> = Promise.resolve();

  constructor(options: StageReplicasOptions) {
    this.#o = options;
    // A dot: never in a unit's key (an encoded token).
    this.#key = `_plugline-replicas.${options.consumer}`;
  }

  /**
   * Writes this process's entry, learns the others, and keeps doing so until {@link leave}. Until
   * its first write lands, this process counts as not alone (it keeps nothing); a refresh that
   * fails later leaves what the last one learned.
   */
  async join(): Promise<void> {
    // Said at warn once while the reason stays the same (a NATS outage fails every refresh).
    let lastFailure = '';
    const refresh = (): Promise<void> =>
      this.#refresh().then(
        () => void (lastFailure = ''),
        (err: unknown) => {
          const reason = err instanceof Error ? err.message : String(err);
          const level = reason === lastFailure ? 'debug' : 'warn';
          lastFailure = reason;
          this.#o.log[level]({ err }, 'could not refresh the replica book; retrying');
        },
      );
    await refresh();
    this.#timer = setInterval(() => {
      this.#refreshing = refresh();
    }, this.#o.intervalMs);
    this.#timer.unref();
  }

  /** Removes this process's entry (best effort: it expires anyway). */
  async leave(): Promise<void> {
    clearInterval(this.#timer);
    await this.#refreshing;
    await this.#update((book) => {
      delete book[this.#o.owner];
    }).catch((err: unknown) =>
      this.#o.log.debug({ err }, 'could not remove this replica from the book'),
    );
  }

  async #refresh(): Promise<void> {
    const now = Date.now();
    const book = await this.#update((entries) => {
      for (const [owner, entry] of Object.entries(entries)) {
        const predecessor = this.#o.instance !== undefined && entry.instance === this.#o.instance;
        if (entry.expiresAt <= now || (predecessor && owner !== this.#o.owner)) {
          delete entries[owner];
        }
      }
      const own: ReplicaEntry = { expiresAt: now + 3 * this.#o.intervalMs };
      if (this.#o.instance !== undefined) own.instance = this.#o.instance;
      entries[this.#o.owner] = own;
    });
    const others = Object.keys(book).filter((owner) => owner !== this.#o.owner);
    const alone = others.length === 0;
    if (alone === this.#alone) return;
    this.#alone = alone;
    this.#o.log.info(
      { consumer: this.#o.consumer, others },
      alone
        ? 'the only replica on its consumer: unit leases are kept between handlings'
        : 'other replicas share the consumer: unit leases are released after each handling',
    );
    this.#o.onChange(alone);
  }

  /** Read-modify-write of the book with compare-and-set, retried on a concurrent write. */
  async #update(change: (book: ReplicaBook) => void): Promise<ReplicaBook> {
    for (let attempt = 1; ; attempt++) {
      const entry = await this.#o.kv.get(this.#key);
      const book = entry?.operation === 'PUT' ? parseBook(entry.value) : {};
      change(book);
      const bytes = encoder.encode(JSON.stringify(book));
      try {
        await this.#o.kv.put(this.#key, bytes, { previousSeq: entry?.revision ?? 0 });
        return book;
      } catch (err) {
        if (!isCasFailure(err) || attempt >= 5) throw err;
      }
    }
  }
}

/** The book a key holds; anything unreadable counts as empty (the writers rebuild it). */
function parseBook(value: Uint8Array): ReplicaBook {
  try {
    const parsed: unknown = JSON.parse(decoder.decode(value));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {};
    const book: ReplicaBook = {};
    for (const [owner, entry] of Object.entries(parsed as Record<string, unknown>)) {
      const { expiresAt, instance } = (entry ?? {}) as Partial<ReplicaEntry>;
      if (typeof expiresAt !== 'number') continue;
      book[owner] = typeof instance === 'string' ? { expiresAt, instance } : { expiresAt };
    }
    return book;
  } catch {
    return {};
  }
}
