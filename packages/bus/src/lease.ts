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
  /**
   * Taken back from this process's own keeping (see {@link LeaseManager.keeping}) without a round
   * trip: no one else has held the unit since this process's last handling of it, so what that
   * handling stored is the unit's latest.
   */
  readonly reused: boolean;
  /**
   * When a lease taken back from keeping expires unless renewed (ms since the epoch): sooner
   * than an acquired one, at least half the keeping time ahead. Undefined for an acquired lease.
   */
  readonly keptUntil: number | undefined;
  /** Extends the expiry; false when the lease was lost (taken over after expiry). */
  renew(): Promise<boolean>;
  /**
   * Ends the lease if still ours (compare-and-set) and leaves `handover` (default: the one it
   * got) to the next holder, or, while the manager is keeping, keeps it for this process's next
   * handling of the unit; never throws.
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
 *
 * While {@link keeping} (the stage runs no other replica on its consumer), a release keeps the
 * lease instead: it writes an expiry {@link keptMs} ahead, with the handover, and this process's
 * next handling of the unit within half that time takes it back with no round trip on its way
 * ({@link takeKept}). No one else can take a lease before it expires, so none can have held it
 * in between; the renewal the handling starts at once (not waited for: half the keeping time is
 * left for it) makes it a lease like any acquired one. A kept lease costs nothing but the wait of
 * another process that wants it before it expires: when keeping stops (another replica appeared)
 * the kept leases are released, and so they are when the process stops. A crashed holder's are
 * taken over at once by its instance's next process, and waited out (at most {@link keptMs}) by
 * any other.
 */
export class LeaseManager {
  /** The values this manager's releases wrote, by key, oldest first (bounded). */
  readonly #released = new BoundedMap<string, Released>(MAX_REMEMBERED_RELEASES);
  #keeping = false;

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

  /** How long a kept lease outlives this process: the TTL, at most 5 s. */
  get keptMs(): number {
    return Math.min(this.ttlMs, MAX_KEPT_MS);
  }

  /**
   * Whether a release keeps the lease for this process's next handling of the unit (see the
   * class). Off at first.
   */
  get keeping(): boolean {
    return this.#keeping;
  }

  set keeping(on: boolean) {
    this.#keeping = on;
  }

  /**
   * Releases every lease this manager keeps (see {@link keeping}) and has not taken back; never
   * throws. Turn keeping off first, or the next handlings keep theirs again.
   */
  async releaseKept(): Promise<void> {
    const now = Date.now();
    const kept = [...this.#released.entries()].filter(([, r]) => (r.keptUntil ?? 0) > now);
    await Promise.all(
      kept.map(async ([key, remembered]) => {
        // An acquire that took it back since owns it now: its own release decides.
        if (this.#released.peek(key) !== remembered) return;
        this.#released.delete(key);
        await this.#free(key, remembered.revision, remembered.handover);
      }),
    );
  }

  /** Writes `key` released (expired) with compare-and-set on `revision`; never throws. */
  async #free(key: string, revision: number, handover: number | undefined): Promise<void> {
    try {
      const released = await this.kv.update(key, this.#value(0, handover), revision);
      this.#released.set(key, { revision: released, handover });
    } catch {
      // taken over or unreachable: it expires anyway
    }
  }

  /** Whether a lease `current` holds is ours to take back before it expires. */
  #oursToTake(current: LeaseValue): boolean {
    if (current.owner === this.owner) return true;
    return this.instance !== undefined && current.instance === this.instance;
  }

  /**
   * The unit's lease, taken back at once when this process keeps it (see {@link keeping}) with
   * half its keeping time left; undefined otherwise (then {@link acquire} it). A kept lease
   * expires sooner than an acquired one: renew it before {@link Lease.keptUntil}.
   */
  takeKept(unitKey: string): Lease | undefined {
    const key = kvKey(unitKey);
    const kept = this.#released.peek(key);
    if (!this.#keeping || kept?.keptUntil === undefined) return undefined;
    if (kept.keptUntil - Date.now() < this.keptMs / 2) return undefined;
    this.#released.delete(key);
    return this.#held(key, kept.revision, kept.handover, { keptUntil: kept.keptUntil });
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
      return { ok: true, lease: this.#held(key, revision, handover, { uncontested: true }) };
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
      return { ok: true, lease: this.#held(key, revision, handover, {}) };
    } catch (err) {
      if (!isCasFailure(err)) throw err;
      return { ok: false, retryInMs: 0 };
    }
  }

  #held(
    key: string,
    firstRevision: number,
    handover: number | undefined,
    { uncontested = false, keptUntil }: { uncontested?: boolean; keptUntil?: number },
  ): Lease {
    const reused = keptUntil !== undefined;
    let revision = firstRevision;
    let lost = false;
    // A release waits for the renewal under way: it writes against the revision that one gives.
    let renewing: Promise<unknown> = Promise.resolve();
    const lease: Lease = {
      key,
      handover,
      uncontested: uncontested || reused,
      reused,
      keptUntil,
      renew: () => {
        const renewal = (async () => {
          if (lost) return false;
          try {
            revision = await this.kv.update(key, this.#value(undefined, handover), revision);
            return true;
          } catch (err) {
            if (!isCasFailure(err)) throw err;
            lost = true;
            return false;
          }
        })();
        renewing = renewal.catch(() => undefined);
        return renewal;
      },
      release: async (next?: number) => {
        if (lost) return;
        lost = true;
        const left = next ?? handover;
        if (!this.#keeping) {
          await renewing;
          return this.#free(key, revision, left);
        }
        try {
          await renewing;
          const keptUntil = Date.now() + this.keptMs;
          const kept = await this.kv.update(key, this.#value(keptUntil, left), revision);
          this.#released.set(key, { revision: kept, handover: left, keptUntil });
        } catch {
          // taken over or unreachable: it expires anyway
          return;
        }
        // Keeping stopped while the write was out: release it as the others were.
        if (!this.#keeping) await this.releaseKept();
      },
    };
    return lease;
  }
}

/** What this manager's release of a key wrote. */
interface Released {
  revision: number;
  handover: number | undefined;
  /** Set when the release kept the lease (see {@link LeaseManager.keeping}): its expiry. */
  keptUntil?: number;
}

/**
 * The longest a kept lease outlives its holder (see {@link LeaseManager.keeping}): what a process
 * that replaces a crashed one under another instance may wait for the units it kept.
 */
const MAX_KEPT_MS = 5000;

/**
 * Bounds the memory of released revisions; a forgotten key costs three round trips once (a kept
 * one too: it is still ours to take back).
 */
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
