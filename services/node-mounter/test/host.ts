import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  rmdir,
  stat,
  symlink,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

import { parseMountInfo, splitDeviceNumber } from '../src/index.js';
import type { MountInfoEntry } from '../src/index.js';

/**
 * Test fixtures on the real host: a kubelet root with the layout kube-sim's kubelet writes (real
 * sparse files, real loop devices), a v1 devices cgroup, and the private-mount-namespace check.
 */

const exec = promisify(execFile);

async function mountNamespaceOf(pid: number | 'self'): Promise<string | undefined> {
  try {
    return await readlink(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

async function parentOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^PPid:\s+(\d+)/m.exec(status)?.[1] ?? '0');
}

/**
 * Throws unless this process runs in a mount namespace of its own whose mounts cannot propagate
 * back: an ancestor below PID 1 must be in another mount namespace (comparing with PID 1 alone is
 * not enough here — the agent's shells already run in a namespace different from PID 1's, shared
 * with every other shell), and the root mount must not be `shared`.
 */
export async function assertPrivateMountNamespace(): Promise<void> {
  const help =
    'node-mounter mount tests must run as root in a private mount namespace: ' +
    'scripts/with-private-mounts pnpm vitest run --project @plugline/node-mounter';
  if (process.getuid?.() !== 0) throw new Error(`${help} (not root)`);
  const own = await mountNamespaceOf('self');
  let pid = await parentOf(process.pid);
  let separated = false;
  while (pid > 1) {
    const ns = await mountNamespaceOf(pid);
    if (ns !== undefined && ns !== own) {
      separated = true;
      break;
    }
    pid = await parentOf(pid);
  }
  if (own === undefined || !separated) {
    throw new Error(`${help} (this process shares its mount namespace with its ancestors)`);
  }
  const rootMount = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8')).find(
    (m) => m.mountPoint === '/',
  );
  if (rootMount?.optionalFields.some((f) => f.startsWith('shared:')) ?? true) {
    throw new Error(
      `${help} (the root mount propagates: ${rootMount?.optionalFields.join(' ') ?? 'no root'})`,
    );
  }
}

export async function mountTable(): Promise<MountInfoEntry[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** Mount points at or below `dir` (real path). */
export async function mountsUnder(dir: string): Promise<string[]> {
  return (await mountTable())
    .map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

export const LAYOUT = {
  hotplugDir: (root: string, uid: string) =>
    join(root, 'pods', uid, 'volumes', 'kubernetes.io~empty-dir', 'hotplug-disks'),
  fsSourceDir: (root: string, uid: string, pv: string) =>
    join(root, 'pods', uid, 'volumes', 'kubernetes.io~csi', pv, 'mount'),
  blockSource: (root: string, uid: string, pv: string) =>
    join(root, 'pods', uid, 'volumeDevices', 'kubernetes.io~csi', pv),
};

export interface LoopDevice {
  readonly device: string;
  readonly backing: string;
  readonly major: number;
  readonly minor: number;
}

/** A temp dir holding a kubelet root, backing files and a state dir; tracks loop devices it made. */
export class HostFixture {
  readonly loops: LoopDevice[] = [];
  readonly cgroups: string[] = [];

  private constructor(
    readonly base: string,
    readonly root: string,
    readonly stateDir: string,
  ) {}

  static async create(): Promise<HostFixture> {
    const base = await mkdtemp(join(tmpdir(), 'plugline-nm-'));
    const root = join(base, 'kubelet');
    await mkdir(root);
    return new HostFixture(base, root, join(base, 'state'));
  }

  async launcherPod(uid: string): Promise<string> {
    const dir = LAYOUT.hotplugDir(this.root, uid);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** A launcher pod whose hotplug folder is a symlink to `target` (a path escape to refuse). */
  async linkedLauncherPod(uid: string, target: string): Promise<void> {
    const dir = LAYOUT.hotplugDir(this.root, uid);
    await mkdir(dirname(dir), { recursive: true });
    await symlink(target, dir);
  }

  /** An attachment pod's filesystem PVC: a sparse `disk.img` with a recognisable first line. */
  async filesystemPvc(podUID: string, pv: string, sizeBytes = 64 * 1024 * 1024): Promise<string> {
    const dir = LAYOUT.fsSourceDir(this.root, podUID, pv);
    await mkdir(dir, { recursive: true });
    const img = join(dir, 'disk.img');
    await writeFile(img, `disk of ${pv}\n`);
    await truncate(img, sizeBytes);
    return img;
  }

  /** An attachment pod's block PVC: a loop device over a sparse file, its node in the pod's volumeDevices. */
  async blockPvc(
    podUID: string,
    pv: string,
    sizeBytes = 16 * 1024 * 1024,
  ): Promise<LoopDevice & { node: string }> {
    const backing = join(this.base, `${pv}.raw`);
    await writeFile(backing, '');
    await truncate(backing, sizeBytes);
    const { stdout } = await exec('losetup', ['-f', '--show', backing]);
    const device = stdout.trim();
    const { major, minor } = splitDeviceNumber((await stat(device, { bigint: true })).rdev);
    const loop = { device, backing, major, minor };
    this.loops.push(loop);
    const node = LAYOUT.blockSource(this.root, podUID, pv);
    await mkdir(join(node, '..'), { recursive: true });
    await exec('mknod', ['-m', '0660', node, 'b', String(major), String(minor)]);
    return { ...loop, node };
  }

  /** A fresh v1 devices cgroup that allows nothing (so `devices.list` shows exactly what we add). */
  async devicesCgroup(): Promise<string> {
    const dir = join(
      '/sys/fs/cgroup/devices',
      `plugline-nm-test-${process.pid}-${this.cgroups.length}-${Date.now()}`,
    );
    await mkdir(dir);
    this.cgroups.push(dir);
    await writeFile(join(dir, 'devices.deny'), 'a');
    return dir;
  }

  /** Detaches our loop devices, removes our cgroups and the temp dir; returns loop devices still attached. */
  async dispose(): Promise<string[]> {
    for (const loop of this.loops) {
      await exec('losetup', ['-d', loop.device]).catch(() => undefined);
    }
    const remaining: string[] = [];
    for (const loop of this.loops) {
      const { stdout } = await exec('losetup', ['-j', loop.backing]);
      if (stdout.trim() !== '') remaining.push(stdout.trim());
    }
    for (const dir of this.cgroups) {
      if (existsSync(dir)) await rmdir(dir);
    }
    // Mounts made below base vanish with the private namespace; unmount them now anyway so rm works.
    for (const mountPoint of (await mountsUnder(this.base)).reverse()) {
      await exec('umount', [mountPoint]).catch(() => undefined);
    }
    await rm(this.base, { recursive: true, force: true });
    return remaining;
  }
}

/** Runs `dd` reading one block of `device` from a process placed in `cgroupDir`; resolves to true when allowed. */
export async function canReadFromCgroup(cgroupDir: string, device: string): Promise<boolean> {
  try {
    // No /dev/null inside: the cgroup allows only what the test added. dd writes to a pipe.
    const { stdout } = await exec(
      'sh',
      [
        '-c',
        'echo $$ > "$1/cgroup.procs" && exec dd if="$2" bs=512 count=1 status=none',
        'probe',
        cgroupDir,
        device,
      ],
      { encoding: 'buffer' },
    );
    return stdout.length === 512;
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '');
    if (/Operation not permitted/.test(stderr)) return false;
    throw err;
  }
}
