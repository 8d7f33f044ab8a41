import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  applyOwnership,
  bindMount,
  isMountedOn,
  isMountedOnByMountIds,
  isMountRoot,
  makeDeviceNumber,
  MountError,
  mountFilesystem,
  splitDeviceNumber,
  unmount,
  unmountFilesystem,
} from '../src/index.js';
import { assertPrivateMountNamespace } from './host.js';

let dir: string;

beforeAll(async () => {
  await assertPrivateMountNamespace();
  dir = await mkdtemp(join(tmpdir(), 'plugline-host-calls-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('mount, umount and mknod through libc', () => {
  it('says which errno an unmount of a disk still open failed with, and keeps the mount', async () => {
    const source = join(dir, 'busy-source.img');
    const target = join(dir, 'busy-target.img');
    await writeFile(source, 'data');
    expect(await mountFilesystem(source, target)).toEqual({ changed: true, sourceMismatch: false });
    const handle = await open(target, 'r');
    try {
      const failure = await unmountFilesystem(target).catch((err: unknown) => err);
      expect(failure).toBeInstanceOf(MountError);
      expect((failure as MountError).detail).toBe('EBUSY: Device or resource busy');
      expect((failure as MountError).message).toBe(
        `umount ${target}: EBUSY: Device or resource busy`,
      );
      expect(await isMountedOn(target)).toBe(true);
    } finally {
      await handle.close();
    }
    expect(await unmountFilesystem(target)).toEqual({ unmounted: 1, unlinked: true });
    expect(await isMountedOn(target)).toBe(false);
  });

  it('builds a dev_t that splits back into the same major and minor, small and large', () => {
    for (const [major, minor] of [
      [7, 0],
      [8, 17],
      [259, 3],
      [4095, 255],
      [4096, 256],
      [1_048_575, 1_048_575],
    ] as const) {
      expect(splitDeviceNumber(makeDeviceNumber(major, minor))).toEqual({ major, minor });
    }
    expect(makeDeviceNumber(7, 2)).toBe(0x702n);
  });

  it('tells a file something is mounted on, stacked mounts and all, as the mount ids do', async () => {
    const source = join(dir, 'probe-source.img');
    const target = join(dir, 'probe-target.img');
    await writeFile(source, 'data');
    await writeFile(target, '');
    const seen = async () => ({
      statx: await isMountRoot(target),
      mountIds: await isMountedOnByMountIds(target),
      either: await isMountedOn(target),
    });
    const no = { statx: false, mountIds: false, either: false };
    const yes = { statx: true, mountIds: true, either: true };
    expect(await seen()).toEqual(no);
    bindMount(source, target);
    expect(await seen()).toEqual(yes);
    bindMount(source, target);
    await unmount(target);
    // The first mount is still there under the second.
    expect(await seen()).toEqual(yes);
    await unmount(target);
    expect(await seen()).toEqual(no);
    // Unmounting what is not mounted names the errno of the call that failed.
    await expect(unmount(target)).rejects.toThrow(`umount ${target}: EINVAL: Invalid argument`);
    // The folder is a mount of its own, the file in it is not mounted on.
    const folder = join(dir, 'probe-folder');
    await mkdir(folder);
    bindMount(folder, folder);
    try {
      await writeFile(join(folder, 'inner.img'), '');
      expect(await isMountRoot(folder)).toBe(true);
      expect(await isMountRoot(join(folder, 'inner.img'))).toBe(false);
      expect(await isMountedOn(join(folder, 'inner.img'))).toBe(false);
    } finally {
      await unmount(folder);
    }
  });

  it('asks the mount ids when statx cannot tell: a missing file is mounted on by nothing', async () => {
    const missing = join(dir, 'never-made.img');
    expect(await isMountRoot(missing)).toBeUndefined();
    expect(await isMountedOn(missing)).toBe(false);
  });
});

describe('ownership of a hotplugged disk', () => {
  it('ends with the owner and the mode asked for, set-id bits of an executable mode included', async () => {
    for (const mode of [0o660, 0o2770]) {
      const disk = join(dir, `owned-${mode.toString(8)}.img`);
      await writeFile(disk, '');
      await applyOwnership(disk, { uid: 107, gid: 107, mode });
      const st = await stat(disk);
      expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }).toEqual({
        uid: 107,
        gid: 107,
        mode,
      });
    }
  });
});
