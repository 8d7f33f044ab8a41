import { startGuest } from './domain.js';
import type { Guest, LauncherDiskSpec } from './domain.js';
import { buildGuest } from './image.js';
import type { BuildGuestOptions, GuestImage } from './image.js';
import { startLibvirt } from './libvirt.js';
import type { LibvirtDaemons, StartLibvirtOptions } from './libvirt.js';

export interface StartGuestHarnessOptions {
  /** The launcher domain's name, `<namespace>_<vmi>` (e.g. `default_demo`). */
  name: string;
  memoryMiB?: number;
  bootTimeoutMs?: number;
  /** The VMI's own disks the domain starts with (e.g. its virtio `rootdisk` at `vda`). */
  disks?: readonly LauncherDiskSpec[];
  build?: BuildGuestOptions;
  libvirt?: StartLibvirtOptions;
}

/** The guest, the private libvirt running it, and how long each part took. */
export interface GuestHarness extends AsyncDisposable {
  readonly image: GuestImage;
  readonly libvirt: LibvirtDaemons;
  readonly guest: Guest;
  readonly timings: { buildMs: number; libvirtMs: number; bootMs: number };
  /** Tears everything down (guest, daemons, namespace and its mounts, loop devices). */
  stop(): Promise<void>;
}

/**
 * Builds (or finds) the test guest, starts a private libvirt, and boots the guest as the launcher
 * domain `name`; resolves once the guest has reported its disks. Whatever fails on the way is
 * torn down before the error is thrown.
 */
export async function startGuestHarness(options: StartGuestHarnessOptions): Promise<GuestHarness> {
  const t0 = Date.now();
  const image = await buildGuest(options.build);
  const t1 = Date.now();
  const libvirt = await startLibvirt(options.libvirt);
  const t2 = Date.now();
  let guest: Guest;
  try {
    guest = await startGuest({
      libvirt,
      image,
      name: options.name,
      memoryMiB: options.memoryMiB,
      bootTimeoutMs: options.bootTimeoutMs,
      disks: options.disks,
    });
  } catch (error) {
    await libvirt.stop();
    throw error;
  }
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= guest.stop().finally(() => libvirt.stop());
    return stopped;
  };
  return {
    image,
    libvirt,
    guest,
    timings: { buildMs: t1 - t0, libvirtMs: t2 - t1, bootMs: guest.bootMs },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
