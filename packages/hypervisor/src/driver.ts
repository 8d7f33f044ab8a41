import { HypervisorError } from '@plugline/contracts';
import type { DomainDisk } from './domain-xml.js';

/** Stable reasons of the HypervisorErrors both drivers throw. */
export const HypervisorReason = {
  /** Another disk of the domain already has that target. */
  DuplicateTarget: 'DuplicateTarget',
  /** The source file or device does not exist. */
  SourceMissing: 'SourceMissing',
  /** The image is already open read-write (attached twice; QEMU's image lock). */
  ImageLocked: 'ImageLocked',
  /** Detach of a disk the domain does not have. */
  DeviceNotFound: 'DeviceNotFound',
  /** No such domain. */
  DomainNotFound: 'DomainNotFound',
  /** The domain is not running (no live hotplug possible). */
  DomainNotRunning: 'DomainNotRunning',
  /** The disk XML is not acceptable (bad serial, bad target, bus cannot hotplug, ...). */
  InvalidDisk: 'InvalidDisk',
  /** libvirtd cannot be reached. */
  Unavailable: 'Unavailable',
  /** The call was aborted through its signal. */
  Aborted: 'Aborted',
  /** Anything else libvirt reported. */
  Failed: 'HypervisorFailed',
} as const;
export type HypervisorReason = (typeof HypervisorReason)[keyof typeof HypervisorReason];

export const DeviceEventType = {
  Added: 'device-added',
  Removed: 'device-removed',
  /** The guest refused the unplug (libvirt's `device-removal-failed`; rare: most guests just ignore it). */
  RemovalFailed: 'device-removal-failed',
} as const;
export type DeviceEventType = (typeof DeviceEventType)[keyof typeof DeviceEventType];

/** A device appeared in or left a domain (libvirt's DeviceAdded / DeviceRemoved callbacks). */
export interface DeviceEvent {
  type: DeviceEventType;
  domain: string;
  /** The device alias (`ua-<volume>` for a hotplugged volume). */
  alias: string;
  /** The target when the driver knows it (the simulated driver does; libvirt reports only the alias). */
  target?: string;
  time: Date;
}

/** A domain started, stopped, was defined, ... (libvirt's lifecycle event; `detail` is its text). */
export interface LifecycleEvent {
  type: 'lifecycle';
  domain: string;
  detail: string;
  time: Date;
}

export type DomainEvent = DeviceEvent | LifecycleEvent;

export interface CallOptions {
  signal?: AbortSignal;
}

/**
 * What the domain-updater needs from a hypervisor. `attachDisk` / `detachDisk` change the running
 * domain ("live"); `detachDisk` returning means the unplug was *requested*, not done: the device is
 * gone when `device-removed` arrives and the domain XML no longer lists it. A repeated detach while
 * one is in flight is accepted and changes nothing (as libvirt does).
 *
 * Events are nudges: subscribe first, then read `listDisks`, and trust the domain XML.
 */
export interface DomainDriver {
  /** Hot-plugs one `<disk>`. Rejections are HypervisorErrors with a {@link HypervisorReason}. */
  attachDisk(domain: string, diskXml: string, options?: CallOptions): Promise<void>;
  /** Requests the unplug of the disk with that target (`sdb`), or of the given `<disk>` XML. */
  detachDisk(domain: string, targetOrDiskXml: string, options?: CallOptions): Promise<void>;
  /** The disks of the live domain. */
  listDisks(domain: string, options?: CallOptions): Promise<DomainDisk[]>;
  /** The live domain XML. */
  domainXml(domain: string, options?: CallOptions): Promise<string>;
  /** Calls `listener` for every event until the returned function is called. */
  subscribe(listener: (event: DomainEvent) => void): () => void;
  /** The same events as an async iterable; ends when `signal` aborts or the driver closes. */
  events(options?: CallOptions): AsyncIterable<DomainEvent>;
  /** Stops timers and child processes; pending calls fail. */
  close(): Promise<void>;
}

/** Fan-out of events to listeners and async iterators. */
export class EventHub {
  private readonly listeners = new Set<(event: DomainEvent) => void>();
  private readonly closers = new Set<() => void>();
  private closed = false;

  constructor(private readonly onFirstListener: () => void = () => undefined) {}

  get size(): number {
    return this.listeners.size;
  }

  emit(event: DomainEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        // A listener's failure must not stop the others.
      }
    }
  }

  subscribe(listener: (event: DomainEvent) => void): () => void {
    if (this.closed) return () => undefined;
    this.listeners.add(listener);
    if (this.listeners.size === 1) this.onFirstListener();
    return () => {
      this.listeners.delete(listener);
    };
  }

  async *iterate(signal?: AbortSignal): AsyncGenerator<DomainEvent> {
    const queue: DomainEvent[] = [];
    let wake: (() => void) | undefined;
    let done = this.closed || signal?.aborted === true;
    const stop = (): void => {
      done = true;
      wake?.();
    };
    const unsubscribe = this.subscribe((event) => {
      queue.push(event);
      wake?.();
    });
    signal?.addEventListener('abort', stop, { once: true });
    this.closers.add(stop);
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (done) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener('abort', stop);
      this.closers.delete(stop);
    }
  }

  close(): void {
    this.closed = true;
    this.listeners.clear();
    for (const stop of [...this.closers]) stop();
  }
}

/** True when `value` is `<disk ...>` XML rather than a target name. */
export function isDiskXml(value: string): boolean {
  return value.trimStart().startsWith('<');
}

export function abortedError(cause?: unknown): HypervisorError {
  return new HypervisorError(HypervisorReason.Aborted, 'the hypervisor call was aborted', {
    cause,
  });
}

const LIBVIRT_ERRORS: readonly [RegExp, HypervisorReason][] = [
  // First: "Failed to connect socket to '<path>': No such file or directory" is libvirtd being
  // unreachable, not a missing disk source.
  [
    /Failed to connect socket|failed to connect to the hypervisor|Failed to reconnect to the hypervisor|no valid connection|Connection refused/,
    HypervisorReason.Unavailable,
  ],
  [/target '[^']*' duplicated for disk sources/, HypervisorReason.DuplicateTarget],
  [/Cannot access storage file .*No such file or directory/, HypervisorReason.SourceMissing],
  [/No such file or directory/, HypervisorReason.SourceMissing],
  [/Failed to get "write" lock|Failed to get shared "write" lock/, HypervisorReason.ImageLocked],
  [/device not found: /, HypervisorReason.DeviceNotFound],
  [/failed to get domain|Domain not found/, HypervisorReason.DomainNotFound],
  [
    /domain is not running|Requested operation is not valid: domain is not running/,
    HypervisorReason.DomainNotRunning,
  ],
  [
    /unsafe characters|XML error|does not support hotplugging|unsupported configuration/,
    HypervisorReason.InvalidDisk,
  ],
];

/** Maps libvirt's error text to a {@link HypervisorReason}. */
export function classifyLibvirtError(message: string): HypervisorReason {
  for (const [pattern, reason] of LIBVIRT_ERRORS) if (pattern.test(message)) return reason;
  return HypervisorReason.Failed;
}
