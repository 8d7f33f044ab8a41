import { homedir } from 'node:os';
import path from 'node:path';

/** The guest harness's environment, read once (the only place it reads `process.env`). */
export interface GuestEnv {
  /**
   * Where the guest kernel, initramfs and QEMU's capability cache are kept between runs:
   * `PLUGLINE_GUEST_CACHE`, else `$XDG_CACHE_HOME/plugline-guest`, else `~/.cache/plugline-guest`.
   */
  cacheDir: string;
  /** `PLUGLINE_REQUIRE_LIBVIRT=1`: a missing libvirt, QEMU or guest tool fails instead of skipping. */
  requireLibvirt: boolean;
  /** `PATH`, split. */
  path: readonly string[];
}

let cached: GuestEnv | undefined;

export function guestEnv(): GuestEnv {
  cached ??= Object.freeze({
    cacheDir:
      process.env.PLUGLINE_GUEST_CACHE ||
      path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'plugline-guest'),
    requireLibvirt: process.env.PLUGLINE_REQUIRE_LIBVIRT === '1',
    path: (process.env.PATH ?? '').split(':').filter((p) => p.length > 0),
  });
  return cached;
}
