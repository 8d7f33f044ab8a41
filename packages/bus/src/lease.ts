import type { KV } from '@nats-io/kv';
import { kvKey } from './names.js';

interface LeaseValue {
  owner: string;
  /** Epoch milliseconds after which anyone may take the lease over. */
  expiresAt: number;
}

/** A held lease on one unit. */
export interface Lease {
  readonly key: string;
  /** Extends the expiry; false when the lease was lost (taken over after expiry). */
  renew(): Promise<boolean>;
  /** Deletes the lease if still ours (compare-and-delete); never throws. */
  release(): Promise<void>;
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
 * owner may take it back at once (a release lost in an outage). `owner` must be unique per
 * process, and a process must not acquire one key twice concurrently. Every
 * write is compare-and-set on the key's revision, so exactly one contender wins. Expiry compares
 * wall clocks: keep the TTL well above the clock skew between nodes.
 */
export class LeaseManager {
  constructor(
    private readonly kv: KV,
    readonly owner: string,
    readonly ttlMs: number,
  ) {}

  #value(): Uint8Array {
    const value: LeaseValue = { owner: this.owner, expiresAt: Date.now() + this.ttlMs };
    return encoder.encode(JSON.stringify(value));
  }

  async acquire(unitKey: string): Promise<LeaseResult> {
    const key = kvKey(unitKey);
    try {
      return this.#held(key, await this.kv.create(key, this.#value()));
    } catch (err) {
      if (!isCasFailure(err)) throw err;
    }
    const entry = await this.kv.get(key);
    if (entry === null || entry.operation !== 'PUT') return { ok: false, retryInMs: 0 };
    let current: LeaseValue;
    try {
      current = entry.json<LeaseValue>();
    } catch {
      current = { owner: '?', expiresAt: 0 };
    }
    const remaining = current.expiresAt - Date.now();
    // Our own stale lease (its release was lost, e.g. in a NATS outage) is ours to take back: the
    // caller runs one unit at a time per process, so it cannot be in use here.
    if (remaining > 0 && current.owner !== this.owner) return { ok: false, retryInMs: remaining };
    try {
      return this.#held(key, await this.kv.update(key, this.#value(), entry.revision));
    } catch (err) {
      if (!isCasFailure(err)) throw err;
      return { ok: false, retryInMs: 0 };
    }
  }

  #held(key: string, firstRevision: number): LeaseResult {
    let revision = firstRevision;
    let lost = false;
    const lease: Lease = {
      key,
      renew: async () => {
        if (lost) return false;
        try {
          revision = await this.kv.update(key, this.#value(), revision);
          return true;
        } catch (err) {
          if (!isCasFailure(err)) throw err;
          lost = true;
          return false;
        }
      },
      release: async () => {
        if (lost) return;
        lost = true;
        try {
          await this.kv.delete(key, { previousSeq: revision });
        } catch {
          // taken over or unreachable: it expires anyway
        }
      },
    };
    return { ok: true, lease };
  }
}

export { isCasFailure };
