import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  isMountedOn,
  makeDeviceNumber,
  MountError,
  mountFilesystem,
  splitDeviceNumber,
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
});
