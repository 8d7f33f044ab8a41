import type { KV, KvEntry } from '@nats-io/kv';
import { BoundedMap } from './bounded-map.js';
import { kvKey } from './names.js';

interface LeaseValue {
  owner: string;
  /** The holder's instance (see {@link LeaseManager}), when it has one. */
  instance?: string;
  /** Epoch milliseconds after which anyone may take the lease over. */
  expiresAt: number;
  /** Handed from holder to holder (see {@link Lease.handover}). */
  handover?: number;
}

/** A held lease on one unit. */
export interface Lease {
  readonly key: string;
  /**
   * The last number a holder gave `release`. Every later holder carries it in the values it
   * writes, until it releases with another, so a holder that crashed or released with none
   * leaves it as it found it. The stage runtime hands over the snapshot revision whose outbox is
   * published: a fact that stays true.
   */
  readonly handover: number | undefined;
  /**
   * Won by one compare-and-set against this manager's own release of the key (or on a key no one
   * has written): no one else has held the unit since this process last did, so what this
   * process read of the unit after that release is still current.
   */
  readonly uncontested: boolean;
  /** Extends the expiry; false when the lease was lost (taken over after expiry). */
  renew(): Promise<boolean>;
  /**
   * Ends the lease if still ours (compare-and-set) and leaves `handover` (default: the one it
   * got) to the next holder; never throws.
   */
  release(handover?: number): Promise<void>;
}

export type LeaseResult = { ok: true; lease: Lease } | { ok: false; retryInMs: number };

const encoder = new TextEncoder();

function isCasFailure(err: unknown): boolean {
  return (
    err instanceof Error &&
    /wrong last sequence|key exists|10071/i.test(
      `${err.message} ${String((err as { code?: unknown }).code)}`,
    )
  );
}

/**
 * Leases in a KV bucket: the unit's lease key is created with `create()` (fails if it exists),
 * carrying the owner and an expiry time. A holder renews it with `update(…, revision)`; anyone
 * may take it over with `update(…, revision)` once it has expired (the holder crashed), and its
 * owner may take it back at once (a release lost in an outage), as may a later process of the same
 * instance (the holder crashed and this one replaced it). `owner` must be unique per process, and
 * a process must not acquire one key twice concurrently. Every
 * write is compare-and-set on the key's revision, so exactly one contender wins. Expiry compares
 * wall clocks: keep the TTL well above the clock skew between nodes.
 *
 * Releasing writes an already-expired value rather than deleting the key, and the manager keeps
 * the revision of that write: the next acquire of the same key here is one `update` against it
 * (it fails, at no cost to correctness, if anyone wrote the key since). A deleted key would cost
 * three round trips (`create` refused by the delete marker, `get`, `update`) on every acquire but
 * the first. A delete marker and an expired value take the same room in the bucket. The released
 * value carries the {@link Lease.handover} to the next holder.
 */
export class LeaseManager {
  /** The expired values this manager's releases wrote, by key, oldest first (bounded). */
  readonly #released = new BoundedMap<string, { revision: number; handover: number | undefined }>(
    MAX_REMEMBERED_RELEASES,
  );

  /**
   * `instance`: the name this process shares with the earlier processes it replaced and with no
   * running one (`PLUGLINE_INSTANCE`); a lease one of them left held is taken over at once, as
   * its holder is gone. Without one, only this process's own leases are.
   */
  constructor(
    private readonly kv: KV,
    readonly owner: string,
    readonly ttlMs: number,
    readonly instance?: string,
  ) {}

  #value(expiresAt = Date.now() + this.ttlMs, handover?: number): Uint8Array {
    const value: LeaseValue = { owner: this.owner, expiresAt };
    if (this.instance !== undefined) value.instance = this.instance;
    if (handover !== undefined) value.handover = handover;
    return encoder.encode(JSON.stringify(value));
  }

  /** Whether a lease `current` holds is ours to take back before it expires. */
  #oursToTake(current: LeaseValue): boolean {
    if (current.owner === this.owner) return true;
    return this.instance !== undefined && current.instance === this.instance;
  }

  async acquire(unitKey: string): Promise<LeaseResult> {
    const key = kvKey(unitKey);
    const released = this.#released.get(key);
    this.#released.delete(key);
    try {
      // One round trip when the key is new (expected revision 0) or our own release is still its
      // last write. Not `kv.create`, which on an existing key reads it before failing.
      const handover = released?.handover;
      const revision = await this.kv.put(key, this.#value(undefined, handover), {
        previousSeq: released?.revision ?? 0,
      });
      return this.#held(key, revision, handover, true);
    } catch (err) {
      if (!isCasFailure(err)) throw err;
    }
    const entry = await this.kv.get(key);
    if (entry === null) return { ok: false, retryInMs: 0 };
    const current = leaseValue(entry);
    const remaining = current.expiresAt - Date.now();
    // Our own stale lease (its release was lost, e.g. in a NATS outage) is ours to take back: the
    // caller runs one unit at a time per process, so it cannot be in use here. So is one an
    // earlier process of this instance held: it crashed, or this one would not be running.
    if (remaining > 0 && !this.#oursToTake(current)) return { ok: false, retryInMs: remaining };
    const handover = typeof current.handover === 'number' ? current.handover : undefined;
    try {
      const revision = await this.kv.update(key, this.#value(undefined, handover), entry.revision);
      return this.#held(key, revision, handover, false);
    } catch (err) {
      if (!isCasFailure(err)) throw err;
      return { ok: false, retryInMs: 0 };
    }
  }

  #held(
    key: string,
    firstRevision: number,
    handover: number | undefined,
    uncontested: boolean,
  ): LeaseResult {
    let revision = firstRevision;
    let lost = false;
    const lease: Lease = {
      key,
      handover,
      uncontested,
      renew: async () => {
        if (lost) return false;
        try {
          revision = await this.kv.update(key, this.#value(undefined, handover), revision);
          return true;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
          lost = true;
          return false;
        }
      },
      release: async (next?: number) => {
        if (lost) return;
        lost = true;
        try {
          const left = next ?? handover;
          const released = await this.kv.update(key, this.#value(0, left), revision);
          this.#released.set(key, { revision: released, handover: left });
        } catch {
          // taken over or unreachable: it expires anyway
        }
      },
    };
    return { ok: true, lease };
  }
}

/** Bounds the memory of released revisions; a forgotten key costs three round trips once. */
const MAX_REMEMBERED_RELEASES = 10_000;

/** The lease an entry holds; a delete marker (a release by an older version) is free. */
function leaseValue(entry: KvEntry): LeaseValue {
  if (entry.operation !== 'PUT') return { owner: '', expiresAt: 0 };
  try {
    return entry.json<LeaseValue>();
  } catch {
    return { owner: '?', expiresAt: 0 };
  }
}

/**
 * The {@link Lease.handover} a unit's lease carries now (undefined when it has none, or no lease
 * was ever written): for a reader beside the stage, which cannot take the lease.
 */
export async function leaseHandover(kv: KV, unitKey: string): Promise<number | undefined> {
  const entry = await kv.get(kvKey(unitKey));
  if (entry === null) return undefined;
  const { handover } = leaseValue(entry);
  return typeof handover === 'number' ? handover : undefined;
}

export { isCasFailure };
