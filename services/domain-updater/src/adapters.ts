import { TransientError } from '@plugline/contracts';
import {
  aliasOf,
  DeviceEventType,
  type DeviceEvent,
  type DomainDriver,
  type DomainEvent,
} from '@plugline/hypervisor';
import { fromPromise } from 'xstate';
import type {
  AttachInput,
  AttachOutput,
  ConfirmInput,
  ConfirmOutput,
  DetachInput,
  DetachOutput,
} from './machine.js';

type DeviceKind = DeviceEvent['type'];

/** Marks of expected events kept before the lapsed ones are dropped. */
const EXPECTED_PRUNE_AT = 256;

/** `expected`: this process caused the event and confirms it itself (see `expect`). */
export type DeviceListener = (event: DeviceEvent, expected: boolean) => void;

/**
 * The device events of one driver, subscribed once per process: the latest event of each kind
 * per `domain/alias` (with the time it was received), and waiters for a kind of event newer than
 * a given time. Libvirt sends `device-added` within a millisecond of the attach call's return,
 * often before the caller could subscribe: remembering makes "subscribe first" hold for everyone.
 */
export class DeviceEventLog {
  readonly #seen = new Map<string, number>();
  readonly #waiters = new Set<{ key: string; since: number; resolve: () => void }>();
  readonly #listeners = new Set<DeviceListener>();
  /** Events this process is about to cause and confirms itself: key → until when (epoch ms). */
  readonly #expected = new Map<string, number>();
  readonly #unsubscribe: () => void;

  constructor(driver: Pick<DomainDriver, 'subscribe'>) {
    this.#unsubscribe = driver.subscribe((event) => this.#record(event));
  }

  static key(kind: DeviceKind, domain: string, alias: string): string {
    return `${kind} ${domain}/${alias}`;
  }

  /** Calls `listener` for every device event from now on; returns the unsubscribe function. */
  onDevice(listener: DeviceListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Marks the next event of `kind` for `domain/alias` as one this process causes and confirms
   * itself (an attach's `device-added`, which `confirm` waits for): listeners are told it was
   * expected. Holds until that event arrives, `ttlMs` passes, or the returned function is called.
   */
  expect(
    { kind, domain, alias }: { kind: DeviceKind; domain: string; alias: string },
    ttlMs: number,
  ): () => void {
    const key = DeviceEventLog.key(kind, domain, alias);
    const now = Date.now();
    // An event that never came (libvirt can drop one) leaves its mark behind: drop the lapsed.
    if (this.#expected.size >= EXPECTED_PRUNE_AT) {
      for (const [k, lapses] of this.#expected) if (lapses < now) this.#expected.delete(k);
    }
    const until = now + ttlMs;
    this.#expected.set(key, until);
    return () => {
      if (this.#expected.get(key) === until) this.#expected.delete(key);
    };
  }

  /** When (epoch ms) this process last saw an event of `kind` for `domain/alias`, if it did. */
  lastSeen(kind: DeviceKind, domain: string, alias: string): number | undefined {
    return this.#seen.get(DeviceEventLog.key(kind, domain, alias));
  }

  /** Whether an event of `kind` for `domain/alias` arrived at or after `since` (epoch ms). */
  seenSince(kind: DeviceKind, domain: string, alias: string, since: number): boolean {
    return (this.lastSeen(kind, domain, alias) ?? -Infinity) >= since;
  }

  /** Resolves true once such an event is seen (or was), false after `timeoutMs` or an abort. */
  waitFor(
    { kind, domain, alias }: { kind: DeviceKind; domain: string; alias: string },
    since: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    if (this.seenSince(kind, domain, alias, since)) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const finish = (seen: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#waiters.delete(waiter);
        resolve(seen);
      };
      const onAbort = (): void => finish(false);
      const waiter = {
        key: DeviceEventLog.key(kind, domain, alias),
        since,
        resolve: () => finish(true),
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  close(): void {
    this.#unsubscribe();
    for (const waiter of [...this.#waiters]) waiter.resolve();
    this.#listeners.clear();
  }

  #record(event: DomainEvent): void {
    if (event.type === 'lifecycle' || event.type === DeviceEventType.RemovalFailed) return;
    const at = Date.now();
    const key = DeviceEventLog.key(event.type, event.domain, event.alias);
    this.#seen.set(key, at);
    const expected = (this.#expected.get(key) ?? -Infinity) >= at;
    this.#expected.delete(key);
    for (const waiter of [...this.#waiters]) {
      if (waiter.key === key && at >= waiter.since) waiter.resolve();
    }
    for (const listener of [...this.#listeners]) listener(event, expected);
  }
}

export interface ActorDeps {
  driver: DomainDriver;
  events: DeviceEventLog;
  /** How long `confirm` waits for `device-added` before it trusts the domain XML alone. */
  confirmTimeoutMs: number;
  now?: () => number;
}

/** The machine's effects on a real (or the simulated) hypervisor. Each honours its `signal`. */
export function createActors(deps: ActorDeps) {
  const now = deps.now ?? Date.now;
  return {
    attach: fromPromise<AttachOutput, AttachInput>(async ({ input, signal }) => {
      const requestedAt = now();
      // `confirm` waits for this attach's `device-added`; it need not come back as a nudge too.
      const unexpect = deps.events.expect(
        { kind: DeviceEventType.Added, domain: input.domain, alias: aliasOf(input.volume) },
        deps.confirmTimeoutMs,
      );
      try {
        await deps.driver.attachDisk(input.domain, input.diskXml, { signal });
      } catch (err) {
        unexpect();
        throw err;
      }
      return { requestedAt };
    }),
    confirm: fromPromise<ConfirmOutput, ConfirmInput>(async ({ input, signal }) => {
      const alias = aliasOf(input.volume);
      const added = await deps.events.waitFor(
        { kind: DeviceEventType.Added, domain: input.domain, alias },
        input.since,
        deps.confirmTimeoutMs,
        signal,
      );
      const disks = await deps.driver.listDisks(input.domain, { signal });
      const disk = disks.find((d) => d.alias === alias);
      if (disk === undefined) {
        throw new TransientError(
          'AttachNotConfirmed',
          `domain ${input.domain} does not list ${alias} after the attach` +
            (added ? ' (device-added was seen)' : ' (no device-added event)'),
        );
      }
      return { target: disk.target, confirmedAt: now() };
    }),
    detach: fromPromise<DetachOutput, DetachInput>(async ({ input, signal }) => {
      const requestedAt = now();
      await deps.driver.detachDisk(input.domain, input.target, { signal });
      return { requestedAt };
    }),
  };
}
