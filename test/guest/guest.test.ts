/**
 * Guest tier, hypervisor only: a real QEMU guest (TCG) under a private libvirtd sees each disk the
 * libvirt driver hot-plugs, with the serial we set, and sees it go after the unplug. File and
 * block (loop device) sources, on the scsi and the virtio bus; what the guest writes survives an
 * unplug and a re-plug. One guest boot for the whole file.
 */
import { randomBytes } from 'node:crypto';
import { chmod, stat, truncate, writeFile } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DiskBus, PersistentVolumeMode } from '@plugline/contracts';
import type { Disk } from '@plugline/contracts';
import { createLibvirtDriver, diskXml } from '@plugline/hypervisor';
import type { DomainDriver } from '@plugline/hypervisor';
import { attachLoopDevice, guestGate, hexOf, startGuestHarness, tempDir } from '@plugline/testkit';
import type { GuestHarness, LoopDevice, TempDir } from '@plugline/testkit';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readAt, writeAt } from './io.js';

const run = promisify(execFile);
const gate = await guestGate();
const enabled = gate.available || gate.required;
if (!enabled) {
  console.warn(`[guest] ${gate.reason}: skipped (PLUGLINE_REQUIRE_LIBVIRT=1 fails instead)`);
}

const DOMAIN = 'plugline-guest_vm';
const GUEST_WROTE = hexOf('PLGGUEST:written');

interface Timing {
  case: string;
  step: string;
  callMs: number;
  guestMs: number;
}

describe.runIf(enabled)('a real guest sees hot-plugged disks', () => {
  let harness: GuestHarness;
  let driver: DomainDriver;
  let dir: TempDir;
  const loops: LoopDevice[] = [];
  const timings: Timing[] = [];

  beforeAll(async () => {
    if (!gate.available) throw new Error(`PLUGLINE_REQUIRE_LIBVIRT=1 but ${gate.reason}`);
    dir = await tempDir('plugline-guest-');
    await chmod(dir.path, 0o755);
    harness = await startGuestHarness({ name: DOMAIN });
    driver = createLibvirtDriver({ uri: harness.libvirt.uri });
    console.info(
      `[guest] kernel ${harness.image.kernelVersion}: build ${harness.timings.buildMs} ms, ` +
        `libvirtd ${harness.timings.libvirtMs} ms, boot ${harness.timings.bootMs} ms`,
    );
  }, 300_000);

  afterAll(async () => {
    await driver?.close();
    await Promise.all(loops.map((l) => l.detach()));
    await harness?.stop();
    await dir?.remove();
    if (timings.length > 0) {
      console.info('[guest] timings (call = driver call returned; guest = guest report seen):');
      console.table(timings);
    }
  }, 120_000);

  afterEach((context) => {
    if (context.task.result?.state !== 'fail' || harness === undefined) return;
    console.info(`[guest] console (tail):\n${harness.guest.console.output().slice(-4000)}`);
  });

  it('boots with no disk and reports on its console', () => {
    expect(harness.guest.firstReport.disks).toEqual([]);
    expect(harness.guest.console.output()).toContain('PLUGLINE-GUEST up kernel=');
  });

  /** A backing image (file) or a loop device over one, with a block node in the hotplug folder. */
  async function backing(volume: string, block: boolean): Promise<string> {
    // A file source is `<hotplug dir>/<volume>.img` (hypervisor's hotplugSourcePath).
    const image = dir.join(block ? `${volume}.backing` : `${volume}.img`);
    await writeFile(image, '');
    await truncate(image, 16 * 1024 * 1024);
    if (!block) return image;
    const loop = await attachLoopDevice(harness.libvirt, image);
    loops.push(loop);
    const { rdev } = await stat(loop.device);
    // The block node the node-mounter would make in the launcher's hotplug folder.
    const major = (rdev >> 8) & 0xfff;
    const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    await run('mknod', [dir.join(volume), 'b', String(major), String(minor)]);
    return loop.device;
  }

  async function plug(label: string, xml: string, serial: string) {
    const t0 = Date.now();
    await driver.attachDisk(DOMAIN, xml);
    const callMs = Date.now() - t0;
    const seen = await harness.guest.console.waitForDisk(serial);
    timings.push({ case: label, step: 'attach', callMs, guestMs: seen.report.receivedAt - t0 });
    return seen.disk;
  }

  async function unplug(label: string, target: string, serial: string): Promise<void> {
    const t0 = Date.now();
    await driver.detachDisk(DOMAIN, target);
    const callMs = Date.now() - t0;
    const gone = await harness.guest.console.waitForDiskGone(serial);
    timings.push({ case: label, step: 'detach', callMs, guestMs: gone.receivedAt - t0 });
  }

  it.each([
    { bus: DiskBus.Scsi, mode: PersistentVolumeMode.Filesystem, target: 'sda' },
    { bus: DiskBus.Virtio, mode: PersistentVolumeMode.Filesystem, target: 'vda' },
    { bus: DiskBus.Scsi, mode: PersistentVolumeMode.Block, target: 'sdb' },
    { bus: DiskBus.Virtio, mode: PersistentVolumeMode.Block, target: 'vdb' },
  ])(
    '$bus $mode: the guest sees the disk with its serial, sees it go, and its write survives a re-plug',
    async ({ bus, mode, target }) => {
      const block = mode === PersistentVolumeMode.Block;
      const label = `${bus}/${block ? 'block' : 'file'}`;
      const volume = `vol-${bus}-${block ? 'block' : 'file'}`;
      const serial = `PLG-${randomBytes(4).toString('hex')}`;
      const source = await backing(volume, block);
      const marker = `PLGWRITE${randomBytes(4).toString('hex')}`;
      await writeAt(source, 0, marker);

      const disk: Disk = { name: volume, serial, disk: { bus } };
      const xml = diskXml({
        volumeName: volume,
        disk,
        volumeMode: mode,
        target,
        hotplugDir: dir.path,
      });

      const seen = await plug(label, xml, serial);
      expect(seen.name.slice(0, 2)).toBe(bus === DiskBus.Scsi ? 'sd' : 'vd');
      expect(seen.head).toBe(hexOf(marker));
      // The guest writes PLGGUEST:written at byte 512 of a disk starting with PLGWRITE.
      await harness.guest.console.waitForReport(
        (r) => r.disks.some((d) => d.serial === serial && d.sector1 === GUEST_WROTE),
        `its write to ${serial}`,
      );
      await unplug(label, target, serial);
      // The write made in the guest reached the volume (cache=none, fsync in the guest).
      expect(await readAt(source, 512, 16)).toBe('PLGGUEST:written');

      const again = await plug(`${label} re-plug`, xml, serial);
      expect(again.head).toBe(hexOf(marker));
      expect(again.sector1).toBe(GUEST_WROTE);
      await unplug(`${label} re-plug`, target, serial);
    },
    120_000,
  );

  it('tells two disks apart by serial when a scsi and a virtio disk are plugged together', async () => {
    const a = {
      name: 'vol-pair-a',
      serial: `PLG-${randomBytes(4).toString('hex')}`,
      bus: DiskBus.Scsi,
      target: 'sdc',
    };
    const b = {
      name: 'vol-pair-b',
      serial: `PLG-${randomBytes(4).toString('hex')}`,
      bus: DiskBus.Virtio,
      target: 'vdc',
    };
    for (const v of [a, b]) {
      await backing(v.name, false);
      const xml = diskXml({
        volumeName: v.name,
        disk: { name: v.name, serial: v.serial, disk: { bus: v.bus } },
        volumeMode: PersistentVolumeMode.Filesystem,
        target: v.target,
        hotplugDir: dir.path,
      });
      await driver.attachDisk(DOMAIN, xml);
    }
    const both = await harness.guest.console.waitForReport(
      (r) => [a, b].every((v) => r.disks.some((d) => d.serial === v.serial)),
      'both disks',
    );
    const names = new Map(both.disks.map((d) => [d.serial, d.name]));
    expect(names.get(a.serial)).toMatch(/^sd[a-z]$/);
    expect(names.get(b.serial)).toMatch(/^vd[a-z]$/);
    await driver.detachDisk(DOMAIN, a.target);
    const one = await harness.guest.console.waitForDiskGone(a.serial);
    expect(one.disks.map((d) => d.serial)).toContain(b.serial);
    await driver.detachDisk(DOMAIN, b.target);
    const none = await harness.guest.console.waitForDiskGone(b.serial);
    expect(none.disks).toEqual([]);
  }, 120_000);
});

if (!enabled) {
  describe('guest tier', () => {
    // Skipped only where the machine cannot run it (no libvirt, KVM or guest image here; the gate says which part is
    // missing): the report names what was not tested. CI sets PLUGLINE_REQUIRE_LIBVIRT=1, so
    // there a missing part fails instead.
    it.skip(`${gate.reason}: skipped`, () => undefined);
  });
}
