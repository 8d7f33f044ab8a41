import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HypervisorError, InvalidNameError } from '@plugline/contracts';
import type { Disk } from '@plugline/contracts';
import { describe, expect, it, vi } from 'vitest';
import {
  LAUNCHER_HOTPLUG_DIR,
  diskXml,
  parseDiskXml,
  prepareLibvirtDisk,
  probeDirectIO,
  toLibvirtDisk,
} from '../src/index.js';
import type { HotplugDiskInput } from '../src/index.js';
import { validateDisks } from './helpers.js';

const VOLUME = 'data-volume-with-a-rather-long-name-7f3a';

function input(
  overrides: Partial<HotplugDiskInput> = {},
  disk: Partial<Disk> = {},
): HotplugDiskInput {
  return {
    volumeName: VOLUME,
    disk: { name: VOLUME, disk: { bus: 'scsi' }, ...disk },
    volumeMode: 'Filesystem',
    target: 'sda',
    hotplugDir: LAUNCHER_HOTPLUG_DIR,
    ...overrides,
  };
}

async function expectValid(xml: string): Promise<void> {
  const result = await validateDisks([xml]);
  expect(result.output).toContain('validates');
  expect(result.valid).toBe(true);
}

describe('toLibvirtDisk', () => {
  it('renders the KubeVirt scsi file disk exactly', async () => {
    const xml = diskXml(input({}, { serial: 'SER-1' }));
    expect(xml).toBe(
      [
        "<disk type='file' device='disk'>",
        "  <driver name='qemu' type='raw' cache='none' error_policy='stop' discard='unmap'/>",
        `  <source file='/var/run/kubevirt/hotplug-disks/${VOLUME}.img'/>`,
        "  <target dev='sda' bus='scsi'/>",
        '  <serial>SER-1</serial>',
        `  <alias name='ua-${VOLUME}'/>`,
        "  <address type='drive' controller='0' bus='0' target='0' unit='0'/>",
        '</disk>',
      ].join('\n'),
    );
    await expectValid(xml);
  });

  it('uses the scsi bus when the disk names none', async () => {
    const disk = toLibvirtDisk(input({}, { disk: {} }));
    expect(disk.bus).toBe('scsi');
    await expectValid(disk.xml);
  });

  it.each([
    ['sda', 0],
    ['sdc', 2],
    ['sdz', 25],
    ['sdaa', 26],
    ['sdzz', 701],
  ])('derives the SCSI unit of %s as %i', async (target, unit) => {
    const disk = toLibvirtDisk(input({ target }));
    expect(disk.unit).toBe(unit);
    expect(parseDiskXml(disk.xml).address).toEqual({ controller: 0, bus: 0, target: 0, unit });
    await expectValid(disk.xml);
  });

  it('renders a virtio disk with a vd target and no drive address', async () => {
    const disk = toLibvirtDisk(input({ target: 'vdb' }, { disk: { bus: 'virtio' } }));
    expect(disk.bus).toBe('virtio');
    expect(disk.unit).toBeUndefined();
    expect(disk.xml).toContain("<target dev='vdb' bus='virtio'/>");
    expect(disk.xml).not.toContain('<address');
    await expectValid(disk.xml);
  });

  it('renders a block volume as a block source with io=native', async () => {
    const disk = toLibvirtDisk(input({ volumeMode: 'Block' }));
    expect(disk.type).toBe('block');
    expect(disk.xml).toContain(`<source dev='/var/run/kubevirt/hotplug-disks/${VOLUME}'/>`);
    expect(disk.io).toBe('native');
    expect(disk.xml).toContain("cache='none' io='native'");
    await expectValid(disk.xml);
  });

  it("renders a lun as device='lun' on a block source", async () => {
    const disk = toLibvirtDisk(
      input({ volumeMode: 'Block' }, { disk: undefined, lun: { bus: 'scsi' } }),
    );
    expect(disk.device).toBe('lun');
    expect(disk.xml).toMatch(/^<disk type='block' device='lun'>/);
    await expectValid(disk.xml);
  });

  it.each([
    [{ preallocated: true }, 'native'],
    [{ preallocated: false }, undefined],
    [{}, undefined],
  ] as const)('sets io for a file source with %o to %s', async (extra, io) => {
    const disk = toLibvirtDisk(input(extra));
    expect(disk.io).toBe(io);
    expect(parseDiskXml(disk.xml).driver.io).toBe(io);
    await expectValid(disk.xml);
  });

  it.each([
    // cache, volumeMode, directIO, expected cache, expected io
    [undefined, 'Filesystem', undefined, 'none', undefined],
    [undefined, 'Filesystem', false, 'writethrough', undefined],
    [undefined, 'Block', true, 'none', 'native'],
    [undefined, 'Block', false, 'writethrough', undefined],
    ['none', 'Block', false, 'none', 'native'],
    ['writethrough', 'Block', true, 'writethrough', undefined],
    ['writeback', 'Filesystem', true, 'writeback', undefined],
  ] as const)(
    'cache %s on %s (O_DIRECT %s) → cache %s, io %s',
    async (cache, volumeMode, directIO, wantCache, wantIo) => {
      const disk = toLibvirtDisk(
        input({ volumeMode, directIO }, cache === undefined ? {} : { cache }),
      );
      expect(disk.cache).toBe(wantCache);
      expect(disk.io).toBe(wantIo);
      const parsed = parseDiskXml(disk.xml);
      expect(parsed.driver.cache).toBe(wantCache);
      expect(parsed.driver.io).toBe(wantIo);
      await expectValid(disk.xml);
    },
  );

  it.each([
    ['native', 'none', 'native'],
    ['native', 'writeback', 'threads'],
    ['threads', 'none', 'threads'],
    ['threads', 'writethrough', 'threads'],
  ] as const)('keeps an explicit io %s with cache %s as %s', async (io, cache, want) => {
    const disk = toLibvirtDisk(input({}, { io, cache }));
    expect(disk.io).toBe(want);
    await expectValid(disk.xml);
  });

  it.each(['stop', 'ignore', 'report', 'enospace'] as const)(
    'sets error_policy %s',
    async (errorPolicy) => {
      const disk = toLibvirtDisk(input({}, { errorPolicy }));
      expect(disk.xml).toContain(`error_policy='${errorPolicy}'`);
      await expectValid(disk.xml);
    },
  );

  it('defaults error_policy to stop and always discards with unmap', () => {
    const parsed = parseDiskXml(diskXml(input()));
    expect(parsed.driver).toMatchObject({ errorPolicy: 'stop', discard: 'unmap', type: 'raw' });
  });

  it('marks readonly and shareable disks', async () => {
    const disk = toLibvirtDisk(
      input({}, { disk: { bus: 'scsi', readonly: true }, shareable: true }),
    );
    expect(disk.xml).toContain('<readonly/>');
    expect(disk.xml).toContain('<shareable/>');
    expect(parseDiskXml(disk.xml)).toMatchObject({ readonly: true, shareable: true });
    await expectValid(disk.xml);
    const lun = toLibvirtDisk(
      input({ volumeMode: 'Block' }, { disk: undefined, lun: { bus: 'scsi', readonly: true } }),
    );
    expect(lun.readonly).toBe(true);
    await expectValid(lun.xml);
  });

  it('sets the boot order', async () => {
    const disk = toLibvirtDisk(input({}, { bootOrder: 3 }));
    expect(disk.xml).toContain("<boot order='3'/>");
    await expectValid(disk.xml);
  });

  it('names the alias ua-<volume> and leaves serial out when unset', () => {
    const disk = toLibvirtDisk(input());
    expect(disk.alias).toBe(`ua-${VOLUME}`);
    expect(disk.serial).toBeUndefined();
    expect(disk.xml).not.toContain('<serial');
  });

  it('accepts every character libvirt allows in a serial', async () => {
    const serial = 'Az09_.+- x';
    const disk = toLibvirtDisk(input({}, { serial }));
    expect(parseDiskXml(disk.xml).serial).toBe(serial);
    await expectValid(disk.xml);
  });

  it.each(['a<b', 'a&b', 'say "hi"', "it's", 'x]]>y', 'tab\there', 'ünï'])(
    'refuses the serial %j, which libvirt would refuse',
    (serial) => {
      expect(() => toLibvirtDisk(input({}, { serial }))).toThrow(
        expect.objectContaining({ name: 'HypervisorError', reason: 'InvalidDiskSpec' }),
      );
    },
  );

  it('escapes a hotplug folder full of XML characters and the value survives a round trip', async () => {
    const weird = `/tmp/we&ird 'dir' <x> "q" ]]> &amp;`;
    for (const volumeMode of ['Filesystem', 'Block'] as const) {
      const disk = toLibvirtDisk(input({ hotplugDir: weird, volumeMode }));
      expect(disk.xml).not.toContain(weird);
      expect(disk.xml).toContain('&amp;amp;');
      expect(parseDiskXml(disk.xml).sourcePath).toBe(disk.sourcePath);
      expect(disk.sourcePath.startsWith(`${weird}/`)).toBe(true);
      await expectValid(disk.xml);
    }
  });

  it('refuses a character XML cannot carry', () => {
    expect(() => toLibvirtDisk(input({ hotplugDir: '/tmp/bell\u0007' }))).toThrow(
      expect.objectContaining({ reason: 'InvalidXml' }),
    );
  });

  it.each(['../etc', 'a/b', 'Data', '.', '', '-a', 'a'.repeat(64), 'a.b'])(
    'refuses the volume name %j so the path cannot escape the folder',
    (name) => {
      expect(() => toLibvirtDisk(input({ volumeName: name }, { name }))).toThrow(InvalidNameError);
    },
  );

  it.each<[string, Partial<HotplugDiskInput>, Partial<Disk>, RegExp]>([
    ['a relative folder', { hotplugDir: 'hotplug' }, {}, /absolute/],
    ['a vd target on scsi', { target: 'vda' }, {}, /does not fit bus scsi/],
    ['an sd target on virtio', { target: 'sdb' }, { disk: { bus: 'virtio' } }, /does not fit/],
    ['a malformed target', { target: 'sd1' }, {}, /does not fit/],
    [
      'a lun on virtio',
      { volumeMode: 'Block', target: 'vda' },
      { disk: undefined, lun: { bus: 'virtio' } },
      /lun must use the scsi bus/,
    ],
    ['a lun on a file', {}, { disk: undefined, lun: {} }, /lun needs a block volume/],
    [
      'a lun with reservation',
      { volumeMode: 'Block' },
      { disk: undefined, lun: { reservation: true } },
      /reservations/,
    ],
    ['a cdrom', {}, { disk: undefined, cdrom: {} }, /cdrom/],
    ['a sata bus', {}, { disk: { bus: 'sata' } }, /cannot be hotplugged/],
    ['disk and lun at once', { volumeMode: 'Block' }, { lun: {} }, /only one of/],
    ['another volume’s disk', {}, { name: 'other' }, /does not belong/],
    ['a zero boot order', {}, { bootOrder: 0 }, /bootOrder/],
  ])('refuses %s', (_what, extra, disk, message) => {
    let thrown: unknown;
    try {
      toLibvirtDisk(input(extra, disk));
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(HypervisorError);
    expect(thrown).toMatchObject({ reason: 'InvalidDiskSpec' });
    expect((thrown as Error).message).toMatch(message);
  });

  it('validates several converted disks in one domain', async () => {
    const a = diskXml(input({ target: 'sda' }));
    const b = diskXml(
      input({ target: 'vda', volumeName: 'b' }, { name: 'b', disk: { bus: 'virtio' } }),
    );
    const c = diskXml(
      input(
        { target: 'sdb', volumeName: 'c', volumeMode: 'Block' },
        { name: 'c', disk: undefined, lun: {} },
      ),
    );
    expect((await validateDisks([a, b, c])).valid).toBe(true);
  });

  it('the validator itself rejects a disk libvirt would refuse (the helper can fail)', async () => {
    const lunOnFile = diskXml(input()).replace("device='disk'", "device='lun'");
    expect((await validateDisks([lunOnFile])).valid).toBe(false);
  });
});

describe('prepareLibvirtDisk and the O_DIRECT probe', () => {
  it('probes the source when the cache is unset and falls back to writethrough', async () => {
    const probe = vi.fn(() => Promise.resolve(false));
    const disk = await prepareLibvirtDisk(input({ volumeMode: 'Block' }), { probe });
    expect(probe).toHaveBeenCalledWith(`/var/run/kubevirt/hotplug-disks/${VOLUME}`);
    expect(disk.cache).toBe('writethrough');
    expect(disk.io).toBeUndefined();
    await expectValid(disk.xml);
  });

  it('keeps cache none when the probe succeeds', async () => {
    const disk = await prepareLibvirtDisk(input({ volumeMode: 'Block' }), {
      probe: () => Promise.resolve(true),
    });
    expect(disk.cache).toBe('none');
    expect(disk.io).toBe('native');
  });

  it('does not probe when the disk sets its cache', async () => {
    const probe = vi.fn(() => Promise.resolve(false));
    const disk = await prepareLibvirtDisk(input({}, { cache: 'none' }), { probe });
    expect(probe).not.toHaveBeenCalled();
    expect(disk.cache).toBe('none');
  });

  it('probeDirectIO: true on a disk file system, false where O_DIRECT is refused, typed error when missing', async () => {
    // The package folder sits on the machine's disk file system (ext4/xfs/overlay accept O_DIRECT).
    const here = path.dirname(fileURLToPath(import.meta.url));
    const dir = await mkdtemp(path.join(here, '.probe-'));
    try {
      const file = path.join(dir, 'disk.img');
      await writeFile(file, Buffer.alloc(4096));
      expect(await probeDirectIO(file)).toBe(true);
      // procfs refuses O_DIRECT with EINVAL (as ramfs does, and tmpfs before Linux 6.6).
      expect(await probeDirectIO('/proc/version')).toBe(false);
      await expect(probeDirectIO(path.join(dir, 'missing.img'))).rejects.toMatchObject({
        name: 'HypervisorError',
        reason: 'SourceMissing',
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
