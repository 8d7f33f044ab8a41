import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import {
  DiskBus,
  DiskErrorPolicy,
  DriverCache,
  DriverIO,
  HypervisorError,
  PathEscapeError,
  PersistentVolumeMode,
  assertName,
} from '@plugline/contracts';
import type { Disk } from '@plugline/contracts';
import { aliasOf } from './names.js';
import { isHotplugBus, parseTarget, targetPrefix } from './targets.js';
import type { HotplugBus } from './targets.js';
import { el, renderXml } from './xml.js';
import type { XmlElement } from './xml.js';

/** Where hotplugged disks appear inside virt-launcher (the `hotplug-disks` emptyDir). */
export const LAUNCHER_HOTPLUG_DIR = '/var/run/kubevirt/hotplug-disks';

/** What libvirt accepts as a disk serial (its schema's `diskSerial`); QEMU refuses anything else. */
const SERIAL_PATTERN = /^[A-Za-z0-9_.+\- ]+$/;

export interface HotplugDiskInput {
  /** The volume's name (a DNS-1123 label); names the source file and the alias. */
  volumeName: string;
  /** The VMI spec disk of the volume (`disk.name` must equal `volumeName`). */
  disk: Disk;
  /** The PVC's volume mode: `Block` → a block source `<dir>/<vol>`, else a file `<dir>/<vol>.img`. */
  volumeMode: PersistentVolumeMode | undefined;
  /** The target chosen by {@link allocateTargets} (`sdX` for scsi, `vdX` for virtio). */
  target: string;
  /** The folder the volume is exposed in (inside the launcher: {@link LAUNCHER_HOTPLUG_DIR}). */
  hotplugDir: string;
  /** `persistentVolumeClaimInfo.preallocated`: lets a file source use `io='native'`. */
  preallocated?: boolean;
  /**
   * Whether the source accepts O_DIRECT (the result of {@link probeDirectIO}); only used when the
   * disk's cache is unset. Unknown (undefined) counts as accepted.
   */
  directIO?: boolean;
}

/** A converted disk: the fields that went into the XML, and the XML. */
export interface LibvirtDisk {
  type: 'file' | 'block';
  device: 'disk' | 'lun';
  bus: HotplugBus;
  target: string;
  sourcePath: string;
  cache: DriverCache;
  io: DriverIO | undefined;
  errorPolicy: DiskErrorPolicy;
  serial: string | undefined;
  alias: string;
  readonly: boolean;
  shareable: boolean;
  /** The SCSI unit on controller 0 (scsi only): the target's index (`sda` → 0). */
  unit: number | undefined;
  bootOrder: number | undefined;
  element: XmlElement;
  xml: string;
}

function invalid(message: string): HypervisorError {
  return new HypervisorError('InvalidDiskSpec', message);
}

/** The path of a volume's source in the hotplug folder; refuses names that could leave it. */
export function hotplugSourcePath(
  hotplugDir: string,
  volumeName: string,
  volumeMode: PersistentVolumeMode | undefined,
): string {
  assertName('volume', volumeName, 'label');
  if (!path.isAbsolute(hotplugDir)) {
    throw invalid(`hotplug folder ${JSON.stringify(hotplugDir)} must be an absolute path`);
  }
  const root = path.resolve(hotplugDir);
  const file = volumeMode === PersistentVolumeMode.Block ? volumeName : `${volumeName}.img`;
  const source = path.resolve(root, file);
  if (path.dirname(source) !== root) throw new PathEscapeError(source, root);
  return source;
}

function busOf(disk: Disk): HotplugBus {
  if (disk.cdrom !== undefined) throw invalid(`disk ${disk.name}: a cdrom cannot be hotplugged`);
  if (disk.lun !== undefined && disk.disk !== undefined) {
    throw invalid(`disk ${disk.name}: only one of disk and lun may be set`);
  }
  const bus = disk.lun?.bus ?? disk.disk?.bus ?? DiskBus.Scsi;
  if (!isHotplugBus(bus)) {
    throw invalid(`disk ${disk.name}: bus ${JSON.stringify(bus)} cannot be hotplugged`);
  }
  if (disk.lun !== undefined && bus !== DiskBus.Scsi) {
    throw invalid(`disk ${disk.name}: a lun must use the scsi bus`);
  }
  return bus;
}

function ioOf(disk: Disk, cache: DriverCache, input: HotplugDiskInput): DriverIO | undefined {
  const direct = cache === DriverCache.None;
  if (disk.io !== undefined) {
    // QEMU refuses aio=native without cache.direct=on; fall back to the thread pool.
    return disk.io === DriverIO.Native && !direct ? DriverIO.Threads : disk.io;
  }
  const block = input.volumeMode === PersistentVolumeMode.Block;
  return direct && (block || input.preallocated === true) ? DriverIO.Native : undefined;
}

function checkedSerial(disk: Disk): string | undefined {
  if (disk.serial === undefined || disk.serial === '') return undefined;
  if (!SERIAL_PATTERN.test(disk.serial)) {
    throw invalid(
      `disk ${disk.name}: serial ${JSON.stringify(disk.serial)} may only contain letters, digits, ' ', '_', '.', '+' and '-'`,
    );
  }
  return disk.serial;
}

/**
 * Converts a hotplug volume and its disk into a libvirt `<disk>` element, as virt-launcher does:
 * raw driver, `error_policy` (default `stop`), `discard='unmap'`, a file or block source in the
 * hotplug folder, the given target, serial, alias `ua-<volume>`, `device='lun'` for a lun, and a
 * drive address on SCSI controller 0 whose unit is the target's index.
 *
 * Cache: the disk's own, else `none`, or `writethrough` when the source refuses O_DIRECT.
 * IO: the disk's own (`native` only with cache `none`), else `native` for cache `none` on a block
 * or preallocated source, else unset (QEMU's thread pool).
 */
export function toLibvirtDisk(input: HotplugDiskInput): LibvirtDisk {
  const { disk, volumeName, target } = input;
  if (disk.name !== volumeName) {
    throw invalid(`disk ${JSON.stringify(disk.name)} does not belong to volume ${volumeName}`);
  }
  const sourcePath = hotplugSourcePath(input.hotplugDir, volumeName, input.volumeMode);
  const bus = busOf(disk);
  const parsed = parseTarget(target);
  if (parsed === undefined || parsed.prefix !== targetPrefix(bus)) {
    throw invalid(`target ${JSON.stringify(target)} does not fit bus ${bus}`);
  }
  const type = input.volumeMode === PersistentVolumeMode.Block ? 'block' : 'file';
  const device = disk.lun !== undefined ? 'lun' : 'disk';
  checkDeviceRules(disk, type, device);
  const cache =
    disk.cache ?? (input.directIO === false ? DriverCache.WriteThrough : DriverCache.None);
  const fields: Omit<LibvirtDisk, 'element' | 'xml'> = {
    type,
    device,
    bus,
    target,
    sourcePath,
    cache,
    io: ioOf(disk, cache, input),
    errorPolicy: disk.errorPolicy ?? DiskErrorPolicy.Stop,
    serial: checkedSerial(disk),
    alias: aliasOf(volumeName),
    readonly: disk.disk?.readonly === true || disk.lun?.readonly === true,
    shareable: disk.shareable === true,
    unit: bus === DiskBus.Scsi ? parsed.index : undefined,
    bootOrder: disk.bootOrder,
  };
  const element = diskElement(fields);
  return { ...fields, element, xml: renderXml(element) };
}

function checkDeviceRules(disk: Disk, type: 'file' | 'block', device: 'disk' | 'lun'): void {
  if (device === 'lun' && type !== 'block') {
    throw invalid(`disk ${disk.name}: a lun needs a block volume`);
  }
  if (disk.lun?.reservation === true) {
    throw invalid(`disk ${disk.name}: persistent reservations are not supported`);
  }
  if (disk.bootOrder !== undefined && (!Number.isInteger(disk.bootOrder) || disk.bootOrder < 1)) {
    throw invalid(`disk ${disk.name}: bootOrder must be a positive integer`);
  }
}

function diskElement(d: Omit<LibvirtDisk, 'element' | 'xml'>): XmlElement {
  return el(
    'disk',
    { type: d.type, device: d.device },
    el('driver', {
      name: 'qemu',
      type: 'raw',
      cache: d.cache,
      io: d.io,
      error_policy: d.errorPolicy,
      discard: 'unmap',
    }),
    el('source', d.type === 'block' ? { dev: d.sourcePath } : { file: d.sourcePath }),
    el('target', { dev: d.target, bus: d.bus }),
    d.bootOrder !== undefined && el('boot', { order: d.bootOrder }),
    d.readonly && el('readonly'),
    d.shareable && el('shareable'),
    d.serial !== undefined && el('serial', {}, d.serial),
    el('alias', { name: d.alias }),
    d.unit !== undefined &&
      el('address', { type: 'drive', controller: 0, bus: 0, target: 0, unit: d.unit }),
  );
}

/** The `<disk>` XML of {@link toLibvirtDisk}. */
export function diskXml(input: HotplugDiskInput): string {
  return toLibvirtDisk(input).xml;
}

/** Tells whether a source can be opened with O_DIRECT (QEMU's `cache=none`). */
export type DirectIOProbe = (sourcePath: string) => Promise<boolean>;

/**
 * Opens `sourcePath` read-only with O_DIRECT. `true` when that works; `false` when the file system
 * refuses it (EINVAL: procfs, ramfs, tmpfs before Linux 6.6, some FUSE and 9p mounts). A missing
 * source is a `SourceMissing` HypervisorError; other failures are `SourceUnreadable`.
 */
export const probeDirectIO: DirectIOProbe = async (sourcePath) => {
  let handle;
  try {
    handle = await open(sourcePath, constants.O_RDONLY | constants.O_DIRECT);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EINVAL') return false;
    throw new HypervisorError(
      code === 'ENOENT' ? 'SourceMissing' : 'SourceUnreadable',
      `cannot open ${sourcePath} to probe O_DIRECT: ${code ?? String(error)}`,
      { cause: error },
    );
  }
  await handle.close();
  return true;
};

/**
 * {@link toLibvirtDisk}, probing the source for O_DIRECT first when the disk leaves its cache unset
 * (as virt-launcher does before it attaches). The probe is injectable for tests.
 */
export async function prepareLibvirtDisk(
  input: Omit<HotplugDiskInput, 'directIO'>,
  options: { probe?: DirectIOProbe } = {},
): Promise<LibvirtDisk> {
  const probe = options.probe ?? probeDirectIO;
  let directIO: boolean | undefined;
  if (input.disk.cache === undefined) {
    directIO = await probe(hotplugSourcePath(input.hotplugDir, input.volumeName, input.volumeMode));
  }
  return toLibvirtDisk({ ...input, directIO });
}
