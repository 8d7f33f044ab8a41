import { execFile } from 'node:child_process';
import { link, mkdir, open, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { KubeletSimError } from './errors.js';

const run = promisify(execFile);

/** The driver name the simulated CSI volumes carry (`kubernetes.io~csi/<pv>`). */
export const CSI_DRIVER = 'sim.plugline.io';

/**
 * The kubelet's on-disk layout under its root folder (real kubelet paths; the node-mounter
 * looks for volumes there):
 * - `<root>/pods/<podUID>/volumes/kubernetes.io~csi/<pv>/mount/disk.img` filesystem PVC
 * - `<root>/pods/<podUID>/volumeDevices/kubernetes.io~csi/<pv>` block PVC (a block device node)
 * - `<root>/pods/<podUID>/volumes/kubernetes.io~empty-dir/<name>/` emptyDir
 * - `<root>/plugins/sim.plugline.io/volumes/<pv>/{disk.img,block.img}` the backing files
 */
export class KubeletLayout {
  constructor(readonly root: string) {}

  podDir(podUid: string): string {
    return join(this.root, 'pods', podUid);
  }
  fsMountDir(podUid: string, pv: string): string {
    return join(this.podDir(podUid), 'volumes', 'kubernetes.io~csi', pv, 'mount');
  }
  fsDiskImage(podUid: string, pv: string): string {
    return join(this.fsMountDir(podUid, pv), 'disk.img');
  }
  blockDevice(podUid: string, pv: string): string {
    return join(this.podDir(podUid), 'volumeDevices', 'kubernetes.io~csi', pv);
  }
  emptyDir(podUid: string, name: string): string {
    return join(this.podDir(podUid), 'volumes', 'kubernetes.io~empty-dir', name);
  }
  stateDir(): string {
    return join(this.root, 'plugins', CSI_DRIVER, 'volumes');
  }
  backingFile(pv: string, block: boolean): string {
    return join(this.stateDir(), pv, block ? 'block.img' : 'disk.img');
  }
}

/** Creates a sparse file of `size` bytes unless it already exists. */
export async function ensureSparseFile(path: string, size: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const handle = await open(path, 'a');
  try {
    const st = await handle.stat();
    if (st.size < size) await handle.truncate(size);
  } finally {
    await handle.close();
  }
}

/** Gives the pod's mount folder the PVC's disk image (a hard link: same data every time). */
export async function linkDiskImage(backing: string, target: string): Promise<void> {
  await mkdir(dirname(target), { recursive: true });
  try {
    await link(backing, target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new KubeletSimError(`cannot link ${backing} to ${target}`, { cause: err });
    }
  }
}

export interface LoopDevice {
  device: string;
  backing: string;
  major: number;
  minor: number;
}

/** Major and minor numbers of a device node. */
export async function deviceNumbers(path: string): Promise<{ major: number; minor: number }> {
  const st = await stat(path, { bigint: true });
  const rdev = st.rdev;
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n));
  return { major, minor };
}

/** Attaches a loop device to a backing file (`losetup -f --show`). */
export async function attachLoop(backing: string): Promise<LoopDevice> {
  try {
    const { stdout } = await run('losetup', ['-f', '--show', backing]);
    const device = stdout.trim();
    return { device, backing, ...(await deviceNumbers(device)) };
  } catch (err) {
    throw new KubeletSimError(`losetup -f --show ${backing} failed`, { cause: err });
  }
}

export async function detachLoop(device: string): Promise<void> {
  try {
    await run('losetup', ['-d', device]);
  } catch (err) {
    throw new KubeletSimError(`losetup -d ${device} failed`, { cause: err });
  }
}

/** Loop devices whose backing file lies under `dir` (as `losetup -a` lists them). */
export async function loopDevicesUnder(
  dir: string,
): Promise<{ device: string; backing: string }[]> {
  const { stdout } = await run('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE', '--raw']);
  return stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .map((line) => {
      const space = line.indexOf(' ');
      return {
        device: line.slice(0, space),
        backing: line.slice(space + 1).replace(/ \(deleted\)$/, ''),
      };
    })
    .filter((d) => d.backing.startsWith(`${dir}/`));
}

/** Makes a block device node with the same numbers as the loop device. */
export async function makeDeviceNode(path: string, loop: LoopDevice): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await unlink(path).catch(() => undefined);
  try {
    await run('mknod', [path, 'b', String(loop.major), String(loop.minor)]);
  } catch (err) {
    throw new KubeletSimError(`mknod ${path} failed`, { cause: err });
  }
}

export async function removeTree(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true, maxRetries: 2 });
}
