import { randomBytes } from 'node:crypto';
import { readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { HypervisorError } from '@plugline/contracts';
import { domainDiskElement, parseDiskXml, parseDomainDisks } from './domain-xml.js';
import type { DomainDisk } from './domain-xml.js';
import { DeviceEventType, EventHub, HypervisorReason, abortedError, isDiskXml } from './driver.js';
import type { CallOptions, DomainDriver, DomainEvent } from './driver.js';
import { parseTarget } from './targets.js';
import { el, renderXml } from './xml.js';

/**
 * The simulated hypervisor: the embedded default where no libvirt exists. It holds each domain's
 * XML in memory (or in `stateFile`) and behaves like libvirt 9 + QEMU 7.2 as measured on the build
 * machines: the same rejections with the same texts, `device-added` right after an attach, and an
 * unplug that completes (`device-removed`) only `detachDelayMs` after the detach call — or never,
 * for a device the simulated guest does not release.
 */
export interface SimulatedDriverOptions {
  /** How long the guest takes to release a device after a detach (default 100 ms). */
  detachDelayMs?: number;
  /**
   * Devices the guest never releases: an alias (`ua-data`), a target (`sdb`), or either prefixed
   * with the domain (`ns_vmi/ua-data`). Change later with `setStuck`.
   */
  stuckDevices?: Iterable<string>;
  /**
   * A JSON file holding the domains, so that a restarted process sees the same domains (written
   * atomically after every change, re-read before every call). Without it nothing is persisted.
   */
  stateFile?: string;
  /** The clock (tests). */
  now?: () => number;
}

export interface SimulatedDriver extends DomainDriver {
  /** Defines and "starts" a domain; without `xml`, a minimal one with a virtio-scsi controller. */
  defineDomain(name: string, xml?: string): Promise<void>;
  /** Removes a domain (its pending unplugs are dropped). */
  undefineDomain(name: string): Promise<void>;
  listDomains(): Promise<string[]>;
  /** Makes the guest hold on to (or let go of) a device; see `stuckDevices`. */
  setStuck(device: string, stuck: boolean): Promise<void>;
}

interface SimDisk {
  disk: DomainDisk;
  /** Epoch ms at which a requested unplug completes; null while the guest holds on. */
  removeAt?: number | null;
}

interface SimDomain {
  /** The domain XML as defined (its own disks stay in it). */
  xml: string;
  /** Hot-plugged disks, in attach order. */
  disks: SimDisk[];
}

interface SimState {
  version: 1;
  domains: Record<string, SimDomain>;
  stuck: string[];
}

const SERIAL_PATTERN = /^[A-Za-z0-9_.+\- ]+$/;

function hvError(reason: string, message: string, cause?: unknown): HypervisorError {
  return new HypervisorError(reason, message, cause === undefined ? undefined : { cause });
}

function minimalDomainXml(name: string): string {
  return renderXml(
    el(
      'domain',
      { type: 'qemu' },
      el('name', {}, name),
      el('memory', { unit: 'MiB' }, '64'),
      el('vcpu', {}, '1'),
      el('os', {}, el('type', { arch: 'x86_64' }, 'hvm')),
      el('devices', {}, el('controller', { type: 'scsi', index: 0, model: 'virtio-scsi' })),
    ),
  );
}

function spliceDisks(domainXml: string, disks: readonly SimDisk[]): string {
  const rendered = disks.map((d) => renderXml(domainDiskElement(d.disk), 2, 2)).join('\n');
  if (rendered === '') return domainXml;
  const close = domainXml.lastIndexOf('</devices>');
  if (close >= 0) {
    return `${domainXml.slice(0, close)}${rendered}\n  ${domainXml.slice(close)}`;
  }
  const empty = domainXml.lastIndexOf('<devices/>');
  if (empty < 0) throw hvError('InvalidXml', 'the domain XML has no <devices>');
  return `${domainXml.slice(0, empty)}<devices>\n${rendered}\n  </devices>${domainXml.slice(empty + '<devices/>'.length)}`;
}

function scsiUnitFor(disk: DomainDisk, taken: readonly DomainDisk[]): DomainDisk['address'] {
  if (disk.bus !== 'scsi') return disk.address;
  if (disk.address !== undefined) return disk.address;
  const used = new Set(taken.filter((d) => d.address !== undefined).map((d) => d.address!.unit));
  let unit = 0;
  while (used.has(unit)) unit += 1;
  return { controller: 0, bus: 0, target: 0, unit };
}

function sharesLockWith(a: DomainDisk, b: DomainDisk): boolean {
  return !((a.readonly && b.readonly) || (a.shareable && b.shareable));
}

export function createSimulatedDriver(options: SimulatedDriverOptions = {}): SimulatedDriver {
  const detachDelayMs = options.detachDelayMs ?? 100;
  const now = options.now ?? Date.now;
  const stateFile = options.stateFile;
  const hub = new EventHub();
  let state: SimState = { version: 1, domains: {}, stuck: [...(options.stuckDevices ?? [])] };
  let loaded = stateFile === undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let dirty = false;
  let queue: Promise<unknown> = Promise.resolve();

  /**
   * Runs `fn` after every earlier call, so one call at a time reads and changes the state: load the
   * state file, complete due unplugs, run, complete due unplugs, write the file when anything
   * changed, then emit the events.
   */
  function serial<T>(
    fn: (events: DomainEvent[]) => Promise<T>,
    callOptions?: CallOptions,
  ): Promise<T> {
    const run = async (): Promise<T> => {
      if (closed) throw hvError(HypervisorReason.Unavailable, 'the simulated driver is closed');
      if (callOptions?.signal?.aborted === true) throw abortedError(callOptions.signal.reason);
      await load();
      const events = settle();
      try {
        return await fn(events);
      } finally {
        events.push(...settle());
        if (dirty || events.length > 0) await persist();
        dirty = false;
        arm();
        for (const event of events) hub.emit(event);
      }
    };
    const next = queue.then(run, run);
    queue = next.catch(() => undefined);
    return next;
  }

  /** Marks the state changed and queues an event to emit once the change is written. */
  function changed(events: DomainEvent[], ...more: DomainEvent[]): void {
    dirty = true;
    events.push(...more);
  }

  async function load(): Promise<void> {
    if (stateFile === undefined) return;
    let text: string;
    try {
      text = await readFile(stateFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw hvError(HypervisorReason.Failed, `cannot read ${stateFile}`, error);
      }
      if (!loaded) dirty = true;
      loaded = true;
      return;
    }
    let parsed: SimState;
    try {
      parsed = JSON.parse(text) as SimState;
    } catch (error) {
      throw hvError(
        HypervisorReason.Failed,
        `${stateFile} is not a simulated hypervisor state`,
        error,
      );
    }
    // The configured stuck devices add to the persisted ones on first load.
    const stuck = loaded ? parsed.stuck : [...new Set([...parsed.stuck, ...state.stuck])];
    state = { version: 1, domains: parsed.domains, stuck };
    loaded = true;
  }

  async function persist(): Promise<void> {
    if (stateFile === undefined) return;
    const temp = `${stateFile}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, JSON.stringify(state, null, 1));
      await rename(temp, stateFile);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw hvError(HypervisorReason.Failed, `cannot write ${stateFile}`, error);
    }
  }

  function isStuck(domain: string, disk: DomainDisk): boolean {
    return state.stuck.some((entry) => {
      const slash = entry.indexOf('/');
      const [scope, device] =
        slash >= 0 ? [entry.slice(0, slash), entry.slice(slash + 1)] : [undefined, entry];
      if (scope !== undefined && scope !== domain) return false;
      return device === disk.alias || device === disk.target;
    });
  }

  function getDomain(name: string): SimDomain {
    const domain = state.domains[name];
    if (domain === undefined) {
      throw hvError(HypervisorReason.DomainNotFound, `failed to get domain '${name}'`);
    }
    return domain;
  }

  /** Completes every unplug whose time has come; returns the `device-removed` events. */
  function settle(): DomainEvent[] {
    const t = now();
    const removed: DomainEvent[] = [];
    for (const [name, domain] of Object.entries(state.domains)) {
      const keep: SimDisk[] = [];
      for (const entry of domain.disks) {
        if (typeof entry.removeAt === 'number' && entry.removeAt <= t) {
          removed.push({
            type: DeviceEventType.Removed,
            domain: name,
            alias: entry.disk.alias ?? '',
            target: entry.disk.target,
            time: new Date(t),
          });
        } else {
          keep.push(entry);
        }
      }
      domain.disks = keep;
    }
    return removed;
  }

  /** Sets the timer to the next pending unplug; it runs an empty call, which settles. */
  function arm(): void {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    let next = Infinity;
    for (const domain of Object.values(state.domains)) {
      for (const entry of domain.disks) {
        if (typeof entry.removeAt === 'number') next = Math.min(next, entry.removeAt);
      }
    }
    if (next === Infinity || closed) return;
    timer = setTimeout(
      () => {
        serial(() => Promise.resolve()).catch(() => undefined);
      },
      Math.max(0, next - now()),
    );
  }

  async function checkSource(disk: DomainDisk): Promise<{ dev: number; ino: number }> {
    if (disk.sourcePath === undefined) {
      throw hvError(HypervisorReason.InvalidDisk, `disk ${disk.target} has no source`);
    }
    try {
      const st = await stat(disk.sourcePath);
      return { dev: st.dev, ino: st.ino };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw hvError(
          HypervisorReason.SourceMissing,
          `Cannot access storage file '${disk.sourcePath}': No such file or directory`,
          error,
        );
      }
      throw hvError(
        HypervisorReason.Failed,
        `Cannot access storage file '${disk.sourcePath}'`,
        error,
      );
    }
  }

  async function lockHolder(
    disk: DomainDisk,
    id: { dev: number; ino: number },
  ): Promise<DomainDisk | undefined> {
    for (const domain of Object.values(state.domains)) {
      for (const entry of domain.disks) {
        if (entry.disk.sourcePath === undefined || !sharesLockWith(entry.disk, disk)) continue;
        const other = await stat(entry.disk.sourcePath).catch(() => undefined);
        if (other !== undefined && other.dev === id.dev && other.ino === id.ino) return entry.disk;
      }
    }
    return undefined;
  }

  async function attach(events: DomainEvent[], name: string, diskXml: string): Promise<void> {
    const domain = getDomain(name);
    let disk: DomainDisk;
    try {
      disk = parseDiskXml(diskXml);
    } catch (error) {
      throw hvError(HypervisorReason.InvalidDisk, 'XML error: invalid disk XML', error);
    }
    if (disk.serial !== undefined && !SERIAL_PATTERN.test(disk.serial)) {
      throw hvError(
        HypervisorReason.InvalidDisk,
        `internal error: driver serial '${disk.serial}' contains unsafe characters`,
      );
    }
    if (parseTarget(disk.target) === undefined) {
      throw hvError(
        HypervisorReason.InvalidDisk,
        `XML error: invalid disk target '${disk.target}'`,
      );
    }
    const present = [...parseDomainDisks(domain.xml), ...domain.disks.map((d) => d.disk)];
    const clash = present.find((d) => d.target === disk.target);
    if (clash !== undefined) {
      throw hvError(
        HypervisorReason.DuplicateTarget,
        `XML error: target '${disk.target}' duplicated for disk sources '${clash.sourcePath ?? ''}' and '${disk.sourcePath ?? ''}'`,
      );
    }
    if (disk.alias !== undefined && present.some((d) => d.alias === disk.alias)) {
      throw hvError(HypervisorReason.InvalidDisk, `non unique alias detected: ${disk.alias}`);
    }
    const id = await checkSource(disk);
    if ((await lockHolder(disk, id)) !== undefined) {
      throw hvError(
        HypervisorReason.ImageLocked,
        `internal error: unable to execute QEMU command 'device_add': Failed to get "write" lock`,
      );
    }
    const address = scsiUnitFor(disk, present);
    const index = parseTarget(disk.target)!.index;
    const alias =
      disk.alias ??
      (disk.bus === 'scsi' ? `scsi0-0-0-${address?.unit ?? 0}` : `virtio-disk${index}`);
    const stored: DomainDisk = { ...disk, alias, address };
    domain.disks.push({ disk: stored });
    changed(events, {
      type: DeviceEventType.Added,
      domain: name,
      alias,
      target: disk.target,
      time: new Date(now()),
    });
  }

  function detach(name: string, targetOrXml: string): Promise<void> {
    const domain = getDomain(name);
    const target = isDiskXml(targetOrXml) ? parseDiskXml(targetOrXml).target : targetOrXml;
    const entry = domain.disks.find((d) => d.disk.target === target);
    if (entry === undefined) {
      if (parseDomainDisks(domain.xml).some((d) => d.target === target)) {
        throw hvError(
          HypervisorReason.InvalidDisk,
          `the simulated hypervisor cannot detach disk ${target}, which was defined with the domain`,
        );
      }
      throw hvError(HypervisorReason.DeviceNotFound, `device not found: disk ${target} not found`);
    }
    // Already requested: libvirt accepts it again and changes nothing.
    if (entry.removeAt !== undefined) return Promise.resolve();
    entry.removeAt = isStuck(name, entry.disk) ? null : now() + detachDelayMs;
    dirty = true;
    return Promise.resolve();
  }

  const driver: SimulatedDriver = {
    defineDomain(name, xml) {
      return serial((events) => {
        const text = xml ?? minimalDomainXml(name);
        try {
          parseDomainDisks(text);
        } catch (error) {
          throw hvError(
            HypervisorReason.InvalidDisk,
            `XML error: invalid domain XML for '${name}'`,
            error,
          );
        }
        state.domains[name] = { xml: text, disks: [] };
        changed(events, {
          type: 'lifecycle',
          domain: name,
          detail: 'Started Booted',
          time: new Date(now()),
        });
        return Promise.resolve();
      });
    },
    undefineDomain(name) {
      return serial((events) => {
        getDomain(name);
        delete state.domains[name];
        changed(events, {
          type: 'lifecycle',
          domain: name,
          detail: 'Stopped Destroyed',
          time: new Date(now()),
        });
        return Promise.resolve();
      });
    },
    listDomains() {
      return serial(() => Promise.resolve(Object.keys(state.domains).sort()));
    },
    setStuck(device, stuck) {
      return serial(() => {
        const others = state.stuck.filter((entry) => entry !== device);
        state.stuck = stuck ? [...others, device] : others;
        for (const [name, domain] of Object.entries(state.domains)) {
          for (const entry of domain.disks) {
            if (entry.removeAt === undefined) continue;
            const holds = isStuck(name, entry.disk);
            if (holds) entry.removeAt = null;
            else if (entry.removeAt === null) entry.removeAt = now() + detachDelayMs;
          }
        }
        dirty = true;
        return Promise.resolve();
      });
    },
    attachDisk(name, xml, callOptions) {
      return serial((events) => attach(events, name, xml), callOptions);
    },
    detachDisk(name, targetOrXml, callOptions) {
      return serial(() => detach(name, targetOrXml), callOptions);
    },
    domainXml(name, callOptions) {
      return serial(() => {
        const domain = getDomain(name);
        return Promise.resolve(spliceDisks(domain.xml, domain.disks));
      }, callOptions);
    },
    async listDisks(name, callOptions) {
      return parseDomainDisks(await driver.domainXml(name, callOptions));
    },
    subscribe(listener) {
      return hub.subscribe(listener);
    },
    events(callOptions) {
      return hub.iterate(callOptions?.signal);
    },
    async close() {
      await queue;
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      hub.close();
    },
  };
  return driver;
}
