import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import { guestEnv } from './config.js';

/** The programs the guest harness runs. */
export const GUEST_TOOLS = [
  'libvirtd',
  'virtlogd',
  'virsh',
  'qemu-system-x86_64',
  'unshare',
  'nsenter',
  'losetup',
  'busybox',
  'cpio',
  'apt-get',
  'dpkg-deb',
] as const;

export interface GuestGate {
  /** Everything the harness needs is there (and we are root). */
  available: boolean;
  /** `PLUGLINE_REQUIRE_LIBVIRT=1`: a test must fail, not skip, when it is not available. */
  required: boolean;
  /** Why not (or what was found). */
  reason: string;
}

async function onPath(program: string, dirs: readonly string[]): Promise<boolean> {
  for (const dir of [...dirs, '/usr/sbin', '/sbin']) {
    try {
      await access(path.join(dir, program), constants.X_OK);
      return true;
    } catch {
      // next folder
    }
  }
  return false;
}

/**
 * Whether the guest tier can run here: root, libvirt's daemons, QEMU and the guest build tools.
 * Tests run when `available || required` and fail in `beforeAll` when required but missing.
 */
export async function guestGate(): Promise<GuestGate> {
  const env = guestEnv();
  const missing: string[] = [];
  for (const tool of GUEST_TOOLS) if (!(await onPath(tool, env.path))) missing.push(tool);
  const root = process.getuid?.() === 0;
  const problems = [...(root ? [] : ['not root']), ...missing.map((m) => `${m} missing`)];
  return {
    available: problems.length === 0,
    required: env.requireLibvirt,
    reason:
      problems.length === 0
        ? 'libvirtd, QEMU and the guest build tools are installed'
        : `the guest tier cannot run: ${problems.join(', ')} (scripts/install with libvirt)`,
  };
}
