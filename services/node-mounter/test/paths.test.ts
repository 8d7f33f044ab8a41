import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { InvalidNameError, PathEscapeError } from '@plugline/contracts';

import {
  assertRealPathInsideRoot,
  attachmentBlockSourcePath,
  attachmentFilesystemSource,
  attachmentFilesystemSourcePath,
  joinInsideRoot,
  launcherHotplugDir,
  launcherHotplugDirPath,
  resolveInsideRoot,
  targetPath,
  targetPathIn,
  VolumeMode,
} from '../src/index.js';

const ROOT = '/var/lib/kubelet';
const LAUNCHER = '5f0e8f4e-2f7e-4a8e-9d0e-1f7a3c1d9e11';
const ATTACH = '9c4f1a8e-6b0c-4a55-8a8c-2b1f0d7e3a42';

describe('pure paths', () => {
  it('computes the kubelet layout', () => {
    expect(launcherHotplugDirPath(ROOT, LAUNCHER)).toBe(
      `${ROOT}/pods/${LAUNCHER}/volumes/kubernetes.io~empty-dir/hotplug-disks`,
    );
    expect(attachmentFilesystemSourcePath(ROOT, ATTACH, 'pvc-1')).toBe(
      `${ROOT}/pods/${ATTACH}/volumes/kubernetes.io~csi/pvc-1/mount/disk.img`,
    );
    expect(attachmentBlockSourcePath(ROOT, ATTACH, 'pvc-1')).toBe(
      `${ROOT}/pods/${ATTACH}/volumeDevices/kubernetes.io~csi/pvc-1`,
    );
    expect(targetPathIn('/h', 'disk1', VolumeMode.Filesystem)).toBe('/h/disk1.img');
    expect(targetPathIn('/h', 'disk1', VolumeMode.Block)).toBe('/h/disk1');
  });

  it.each(['..', '.', '', '/etc', 'a/b', '../x', 'a\\b', 'a\0b'])(
    'refuses segment %j with PathEscapeError',
    (seg) => {
      expect(() => joinInsideRoot(ROOT, 'pods', seg)).toThrow(PathEscapeError);
      expect(() => launcherHotplugDirPath(ROOT, seg)).toThrow(PathEscapeError);
      expect(() => attachmentFilesystemSourcePath(ROOT, ATTACH, seg)).toThrow(PathEscapeError);
      expect(() => targetPathIn('/h', seg, VolumeMode.Block)).toThrow(PathEscapeError);
    },
  );

  it.each([
    ['upper case UID', () => launcherHotplugDirPath(ROOT, 'ABC')],
    ['UID starting with -', () => launcherHotplugDirPath(ROOT, '-abc')],
    ['PV name with a dot', () => attachmentFilesystemSourcePath(ROOT, ATTACH, 'pv.1')],
    ['volume name too long', () => targetPathIn('/h', 'a'.repeat(64), VolumeMode.Block)],
    ['volume name with ~', () => targetPathIn('/h', 'a~b', VolumeMode.Block)],
  ])('refuses a %s with InvalidNameError', (_, f) => {
    expect(f).toThrow(InvalidNameError);
  });

  it('refuses a relative root', () => {
    expect(() => joinInsideRoot('kubelet', 'pods')).toThrow(PathEscapeError);
  });
});

describe('symlink checks', () => {
  let base: string;
  let root: string;

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'plugline-nm-paths-'));
    root = join(base, 'kubelet');
    await mkdir(join(root, 'pods'), { recursive: true });
    await mkdir(join(base, 'outside'));
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('accepts paths whose last components do not exist yet', async () => {
    await expect(resolveInsideRoot(root, 'pods', 'x', 'y')).resolves.toBe(
      join(root, 'pods', 'x', 'y'),
    );
  });

  it('accepts a symlink that stays inside the root', async () => {
    await mkdir(join(root, 'pods', 'real'));
    await symlink(join(root, 'pods', 'real'), join(root, 'pods', 'alias'));
    await expect(resolveInsideRoot(root, 'pods', 'alias', 'f')).resolves.toBe(
      join(root, 'pods', 'alias', 'f'),
    );
  });

  it('accepts a root that is itself reached through a symlink', async () => {
    await symlink(root, join(base, 'root-link'));
    await expect(resolveInsideRoot(join(base, 'root-link'), 'pods')).resolves.toBe(
      join(base, 'root-link', 'pods'),
    );
  });

  it.each([
    ['directory symlink', async () => symlink(join(base, 'outside'), join(root, 'pods', LAUNCHER))],
    [
      'relative directory symlink',
      async () => symlink('../../outside', join(root, 'pods', LAUNCHER)),
    ],
  ])('refuses a %s out of the root', async (_, make) => {
    await make();
    await expect(launcherHotplugDir(root, LAUNCHER)).rejects.toBeInstanceOf(PathEscapeError);
  });

  it('refuses a file symlink out of the root and a dangling symlink', async () => {
    const dir = join(root, 'pods', ATTACH, 'volumes', 'kubernetes.io~csi', 'pv-1', 'mount');
    await mkdir(dir, { recursive: true });
    await writeFile(join(base, 'outside', 'disk.img'), 'x');
    await symlink(join(base, 'outside', 'disk.img'), join(dir, 'disk.img'));
    await expect(attachmentFilesystemSource(root, ATTACH, 'pv-1')).rejects.toBeInstanceOf(
      PathEscapeError,
    );

    const hotplug = join(root, 'hp');
    await mkdir(hotplug);
    await symlink(join(base, 'nowhere'), join(hotplug, 'disk.img'));
    await expect(targetPath(hotplug, 'disk', VolumeMode.Filesystem, root)).rejects.toBeInstanceOf(
      PathEscapeError,
    );
  });

  it('refuses an absolute path outside the root', async () => {
    await expect(assertRealPathInsideRoot(root, join(base, 'outside'))).rejects.toBeInstanceOf(
      PathEscapeError,
    );
    await expect(assertRealPathInsideRoot(root, `${root}-sibling/x`)).rejects.toBeInstanceOf(
      PathEscapeError,
    );
  });
});
