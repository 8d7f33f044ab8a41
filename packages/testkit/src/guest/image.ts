import { fileURLToPath } from 'node:url';
import { exec } from './exec.js';
import { childEnv } from '../config.js';
import { guestEnv } from './config.js';
import { GuestHarnessError } from './errors.js';

/** The tiny test guest: Debian's kernel and our busybox initramfs (`test/guest/build-guest.sh`). */
export interface GuestImage {
  /** `uname -r` inside the guest, discovered from Debian's linux-image-amd64. */
  kernelVersion: string;
  kernel: string;
  initrd: string;
}

export interface BuildGuestOptions {
  /** The build script (default: the repository's `test/guest/build-guest.sh`). */
  script?: string;
  /** Its cache folder (default {@link guestEnv}'s `cacheDir`). */
  cacheDir?: string;
  /** Limit for a build that has to download the kernel (default 10 min). */
  timeoutMs?: number;
}

/** The repository's guest build script, found from this file (the testkit is used from source). */
export function defaultGuestScript(): string {
  return fileURLToPath(new URL('../../../../test/guest/build-guest.sh', import.meta.url));
}

/** Parses the build script's `key=value` result lines. */
export function parseBuildOutput(stdout: string): GuestImage {
  const values = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const m = /^(kernel-version|kernel|initrd)=(.+)$/.exec(line.trim());
    if (m !== null) values.set(m[1]!, m[2]!);
  }
  const kernelVersion = values.get('kernel-version');
  const kernel = values.get('kernel');
  const initrd = values.get('initrd');
  if (kernelVersion === undefined || kernel === undefined || initrd === undefined) {
    throw new GuestHarnessError(`the guest build printed no kernel/initrd: ${stdout.slice(-500)}`);
  }
  return { kernelVersion, kernel, initrd };
}

/**
 * Builds the guest, or finds it in the cache (about 1 s then; the first build downloads the
 * kernel package, ~10 s here).
 */
export async function buildGuest(options: BuildGuestOptions = {}): Promise<GuestImage> {
  const script = options.script ?? defaultGuestScript();
  const { stdout } = await exec('bash', [script], {
    timeoutMs: options.timeoutMs ?? 600_000,
    env: childEnv({ PLUGLINE_GUEST_CACHE: options.cacheDir ?? guestEnv().cacheDir }),
  });
  return parseBuildOutput(stdout);
}
