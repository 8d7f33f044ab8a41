import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HypervisorError } from '@plugline/contracts';
import { domainDiskElement, parseDiskXml, parseDomainDisks } from './domain-xml.js';
import type { DomainDisk } from './domain-xml.js';
import { DeviceEventType, EventHub, HypervisorReason, abortedError, isDiskXml } from './driver.js';
import type { CallOptions, DomainDriver, DomainEvent } from './driver.js';
import { parseTarget } from './targets.js';
import { el, renderXml } from './xml.js';

/**
 * The simulated hypervisor: the embedded default where no libvirt exists. It holds each domain's
 * XML in memory (or in `stateDir`) and behaves like libvirt 9 + QEMU 7.2 as measured on the build
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
   * A folder holding the domains, so that a restarted process sees the same domains: one JSON file
   * per domain (`<encoded name>.json`, written atomically before a call that changed it returns)
   * and `stuck.json`. Read once, at the first call: the driver owns the folder, as one hypervisor
   * owns its node. Each call writes only what it changed, so a call costs the same with 10 or
   * 10,000 domains. Without it nothing is persisted.
   */
  stateDir?: string;
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
  /**
   * The source's device and inode when attached: QEMU holds the image open, so its write lock
   * follows the file it opened (absent in states written before it was recorded).
   */
  sourceId?: FileId;
}

interface FileId {
  dev: number;
  ino: number;
}

interface SimDomain {
  /** The domain XML as defined (its own disks stay in it). */
  xml: string;
  /** Hot-plugged disks, in attach order. */
  disks: SimDisk[];
}

/** One domain's file in the state folder. */
interface DomainFile extends SimDomain {
  version: 1;
  name: string;
}

const STUCK_FILE = 'stuck.json';
const DOMAIN_FILE_SUFFIX = '.domain.json';

/** A domain's file name: the name percent-encoded, so no name can leave the folder. */
function domainFileName(name: string): string {
  return `${encodeURIComponent(name).replace(/\./g, '%2E')}${DOMAIN_FILE_SUFFIX}`;
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

/** A domain as the simulated hypervisor keeps it in its state folder. */
export interface SimulatedDomainState {
  /** The domain XML as defined (its own disks stay in it). */
  xml: string;
  /** Hot-plugged disks, in attach order; `removeAt` set while an unplug is pending. */
  disks: { disk: DomainDisk; removeAt?: number | null }[];
}

/**
 * Reads the domains a simulated hypervisor keeps in `stateDir`, by name, as another process sees
 * them (tests and invariant checks look at what the "hypervisor" holds). A domain file that
 * vanishes while the folder is read was undefined meanwhile and is left out.
 */
export function readSimulatedDomains(stateDir: string): Map<string, SimulatedDomainState> {
  const domains = new Map<string, SimulatedDomainState>();
  let names: string[];
  try {
    names = readdirSync(stateDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return domains;
    throw error;
  }
  for (const file of names) {
    if (!file.endsWith(DOMAIN_FILE_SUFFIX)) continue;
    let text: string;
    try {
      text = readFileSync(join(stateDir, file), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    const domain = JSON.parse(text) as DomainFile;
    domains.set(domain.name, { xml: domain.xml, disks: domain.disks });
  }
  return domains;
}

/**
 * A copy of a listed disk, so a caller's change cannot reach the domain. By hand: a look per
 * volume at a domain with 75 disks copied 75 disks each time, and `structuredClone` made that
 * the domain-updater's largest single cost in the 75-volume burst (issue 10 profile).
 */
function copyDisk(disk: DomainDisk): DomainDisk {
  return {
    ...disk,
    driver: { ...disk.driver },
    address: disk.address === undefined ? undefined : { ...disk.address },
  };
}

export function createSimulatedDriver(options: SimulatedDriverOptions = {}): SimulatedDriver {
  const detachDelayMs = options.detachDelayMs ?? 100;
  const now = options.now ?? Date.now;
  const stateDir = options.stateDir;
  const hub = new EventHub();
  const domains = new Map<string, SimDomain>();
  let stuckDevices: string[] = [...(options.stuckDevices ?? [])];
  let loaded = stateDir === undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  /** Domains changed (or removed) by the running call, written before it returns. */
  const changedDomains = new Set<string>();
  let stuckChanged = false;
  let stateDirMade = false;
  let queue: Promise<unknown> = Promise.resolve();

  /**
   * Runs `fn` after every earlier call, so one call at a time reads and changes the state: load the
   * state folder (first call), complete due unplugs, run, complete due unplugs, write what
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
        await persist();
        arm();
        for (const event of events) hub.emit(event);
      }
    };
    const next = queue.then(run, run);
    queue = next.catch(() => undefined);
    return next;
  }

  /** Marks a domain changed and queues events to emit once the change is written. */
  function changed(events: DomainEvent[], domain: string, ...more: DomainEvent[]): void {
    changedDomains.add(domain);
    events.push(...more);
  }

  async function readJson<T>(file: string): Promise<T> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw hvError(HypervisorReason.Failed, `cannot read ${file}`, error);
    }
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw hvError(HypervisorReason.Failed, `${file} is not a simulated hypervisor state`, error);
    }
  }

  async function load(): Promise<void> {
    if (loaded || stateDir === undefined) return;
    try {
      for (const [name, domain] of readSimulatedDomains(stateDir)) domains.set(name, domain);
    } catch (error) {
      throw hvError(HypervisorReason.Failed, `cannot read ${stateDir}`, error);
    }
    const stuckFile = join(stateDir, STUCK_FILE);
    if (existsSync(stuckFile)) {
      // The configured stuck devices add to the persisted ones.
      const persisted = await readJson<string[]>(stuckFile);
      stuckDevices = [...new Set([...persisted, ...stuckDevices])];
    }
    stuckChanged = stuckDevices.length > 0;
    loaded = true;
  }

  async function writeAtomically(file: string, content: string): Promise<void> {
    const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, content);
      await rename(temp, file);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw hvError(HypervisorReason.Failed, `cannot write ${file}`, error);
    }
  }

  async function persist(): Promise<void> {
    if (stateDir === undefined) {
      changedDomains.clear();
      stuckChanged = false;
      return;
    }
    if (changedDomains.size === 0 && !stuckChanged) return;
    // Made once, not per write (a burst's profile showed `mkdir` per call); made again after a
    // failed write, should the folder have gone.
    if (!stateDirMade) {
      try {
        await mkdir(stateDir, { recursive: true });
      } catch (error) {
        throw hvError(HypervisorReason.Failed, `cannot make ${stateDir}`, error);
      }
      stateDirMade = true;
    }
    try {
      await writeChanged(stateDir);
    } catch (error) {
      stateDirMade = false;
      throw error;
    }
  }

  async function writeChanged(dir: string): Promise<void> {
    for (const name of changedDomains) {
      const file = join(dir, domainFileName(name));
      const domain = domains.get(name);
      if (domain === undefined) {
        await unlink(file).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== 'ENOENT')
            throw hvError(HypervisorReason.Failed, `cannot remove ${file}`, error);
        });
      } else {
        const content: DomainFile = { version: 1, name, xml: domain.xml, disks: domain.disks };
        await writeAtomically(file, JSON.stringify(content));
      }
    }
    changedDomains.clear();
    if (stuckChanged) await writeAtomically(join(dir, STUCK_FILE), JSON.stringify(stuckDevices));
    stuckChanged = false;
  }

  function isStuck(domain: string, disk: DomainDisk): boolean {
    return stuckDevices.some((entry) => {
      const slash = entry.indexOf('/');
      const [scope, device] =
        slash >= 0 ? [entry.slice(0, slash), entry.slice(slash + 1)] : [undefined, entry];
      if (scope !== undefined && scope !== domain) return false;
      return device === disk.alias || device === disk.target;
    });
  }

  /** The disks a domain was defined with, parsed once per definition (its XML never changes). */
  const definedDiskCache = new WeakMap<SimDomain, DomainDisk[]>();
  function definedDisks(domain: SimDomain): DomainDisk[] {
    let disks = definedDiskCache.get(domain);
    if (disks === undefined) {
      disks = parseDomainDisks(domain.xml);
      definedDiskCache.set(domain, disks);
    }
    return disks;
  }

  function getDomain(name: string): SimDomain {
    const domain = domains.get(name);
    if (domain === undefined) {
      throw hvError(HypervisorReason.DomainNotFound, `failed to get domain '${name}'`);
    }
    return domain;
  }

  /** Completes every unplug whose time has come; returns the `device-removed` events. */
  function settle(): DomainEvent[] {
    const removed: DomainEvent[] = [];
    const t = now();
    for (const [name, domain] of domains) {
      if (
        !domain.disks.some((entry) => typeof entry.removeAt === 'number' && entry.removeAt <= t)
      ) {
        continue;
      }
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
      changedDomains.add(name);
    }
    return removed;
  }

  /** Sets the timer to the next pending unplug; it runs an empty call, which settles. */
  function arm(): void {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    let next = Infinity;
    for (const domain of domains.values()) {
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

  async function checkSource(disk: DomainDisk): Promise<FileId> {
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

  async function lockHolder(disk: DomainDisk, id: FileId): Promise<DomainDisk | undefined> {
    for (const domain of domains.values()) {
      for (const entry of domain.disks) {
        if (entry.disk.sourcePath === undefined || !sharesLockWith(entry.disk, disk)) continue;
        const other = entry.sourceId ?? (await stat(entry.disk.sourcePath).catch(() => undefined));
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
    const present = [...definedDisks(domain), ...domain.disks.map((d) => d.disk)];
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
    domain.disks.push({ disk: stored, sourceId: id });
    changed(events, name, {
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
      if (definedDisks(domain).some((d) => d.target === target)) {
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
    changedDomains.add(name);
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
        domains.set(name, { xml: text, disks: [] });
        changed(events, name, {
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
        domains.delete(name);
        changed(events, name, {
          type: 'lifecycle',
          domain: name,
          detail: 'Stopped Destroyed',
          time: new Date(now()),
        });
        return Promise.resolve();
      });
    },
    listDomains() {
      return serial(() => Promise.resolve([...domains.keys()].sort()));
    },
    setStuck(device, stuck) {
      return serial(() => {
        const others = stuckDevices.filter((entry) => entry !== device);
        stuckDevices = stuck ? [...others, device] : others;
        stuckChanged = true;
        for (const [name, domain] of domains) {
          for (const entry of domain.disks) {
            if (entry.removeAt === undefined) continue;
            const holds = isStuck(name, entry.disk);
            if (holds) entry.removeAt = null;
            else if (entry.removeAt === null) entry.removeAt = now() + detachDelayMs;
            changedDomains.add(name);
          }
        }
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
    listDisks(name, callOptions) {
      // What parsing `domainXml` gives, without rendering and parsing it: a domain with 75
      // hot-plugged disks would cost a 75-disk XML parse per look.
      return serial(() => {
        const domain = getDomain(name);
        const disks = [...definedDisks(domain), ...domain.disks.map((d) => d.disk)];
        return Promise.resolve(disks.map(copyDisk));
      }, callOptions);
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
