import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readdir, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { InvalidNameError, PathEscapeError } from '@plugline/contracts';

import {
  ForeignVolumeError,
  loadCheckpoint,
  NodeMounter,
  readDeviceRules,
  splitDeviceNumber,
  VolumeMode,
} from '../src/index.js';
import type { PlugRequest } from '../src/index.js';
import { assertPrivateMountNamespace, HostFixture, LAYOUT, mountsUnder } from './host.js';

/**
 * Least privilege on the node (issue 9): the node-mounter refuses any path outside the kubelet
 * root and any source that is not the attachment pod's own — with real files, symlinks, loop
 * devices and a real devices cgroup, inside a private mount namespace. After every refusal
 * nothing is mounted, no device node is made, no cgroup rule is written, nothing is checkpointed.
 */

const exec = promisify(execFile);

let fx: HostFixture;
let cgroup: string;
let launcherUID: string;
let attachPodUID: string;
let vmiUID: string;

function mounter(): NodeMounter {
  return new NodeMounter({
    kubeletRoot: fx.root,
    stateDir: fx.stateDir,
    cgroupDirFor: () => cgroup,
  });
}

function request(overrides: Partial<PlugRequest> = {}): PlugRequest {
  return {
    vmiUID,
    launcherUID,
    attachPodUID,
    volume: 'data-blk',
    pvName: 'pv-blk-1',
    mode: VolumeMode.Block,
    ...overrides,
  };
}

const hotplugDir = () => LAYOUT.hotplugDir(fx.root, launcherUID);

/** Nothing of the volume exists on the launcher's side, in the cgroup or in the checkpoint. */
async function expectNothingMade(): Promise<void> {
  expect(await readdir(hotplugDir())).toEqual([]);
  expect(await mountsUnder(fx.base)).toEqual([]);
  expect(await readDeviceRules(cgroup)).toEqual([]);
  expect((await loadCheckpoint(fx.stateDir, vmiUID)).entries).toEqual([]);
}

/** Makes the attachment pod's block source for `pv` a symlink to `to`. */
async function linkBlockSource(pv: string, to: string): Promise<string> {
  const path = LAYOUT.blockSource(fx.root, attachPodUID, pv);
  await mkdir(join(path, '..'), { recursive: true });
  await symlink(to, path);
  return path;
}

beforeAll(async () => {
  await assertPrivateMountNamespace();
});

beforeEach(async () => {
  fx = await HostFixture.create();
  cgroup = await fx.devicesCgroup();
  launcherUID = randomUUID();
  attachPodUID = randomUUID();
  vmiUID = randomUUID();
  await fx.launcherPod(launcherUID);
});

afterEach(async () => {
  const remaining = await fx.dispose();
  expect(remaining, 'loop devices left attached').toEqual([]);
  expect(await mountsUnder(fx.base)).toEqual([]);
});

describe('block sources', () => {
  it("refuses a source that links to another pod's device node: no node, no cgroup rule", async () => {
    const otherPod = randomUUID();
    const other = await fx.blockPvc(otherPod, 'pv-other');
    await linkBlockSource('pv-blk-1', other.node);

    const refused = mounter().plug(request());
    await expect(refused).rejects.toBeInstanceOf(PathEscapeError);
    await expect(refused).rejects.toMatchObject({
      reason: 'PathEscape',
      root: join(fx.root, 'pods', attachPodUID),
    });
    await expectNothingMade();
  });

  it('refuses a source that links to the loop device in /dev (outside the kubelet root)', async () => {
    const loop = await fx.blockPvc(randomUUID(), 'pv-some-loop');
    await linkBlockSource('pv-blk-1', loop.device);
    await expect(mounter().plug(request())).rejects.toBeInstanceOf(PathEscapeError);
    await expectNothingMade();
  });

  it("refuses a pod folder that is a link to another pod's folder", async () => {
    const otherPod = randomUUID();
    await fx.blockPvc(otherPod, 'pv-blk-1');
    await symlink(join(fx.root, 'pods', otherPod), join(fx.root, 'pods', attachPodUID));
    await expect(mounter().plug(request())).rejects.toBeInstanceOf(PathEscapeError);
    await expectNothingMade();
  });

  it("accepts a real kubelet's layout: the pod's node links into the CSI plugins folder", async () => {
    // A real kubelet maps a CSI block volume as pods/<uid>/volumeDevices/<driver>/<pv> → a device
    // file it publishes under plugins/; that is still this pod's device.
    const loop = await fx.blockPvc(randomUUID(), 'pv-published');
    const published = join(
      fx.root,
      'plugins',
      'kubernetes.io',
      'csi',
      'volumeDevices',
      'publish',
      'pv-blk-1',
      attachPodUID,
    );
    await mkdir(join(published, '..'), { recursive: true });
    await exec('mknod', ['-m', '0660', published, 'b', String(loop.major), String(loop.minor)]);
    await linkBlockSource('pv-blk-1', published);

    const plugged = await mounter().plug(request());
    expect(plugged.device).toEqual({ major: loop.major, minor: loop.minor });
    const target = join(hotplugDir(), 'data-blk');
    expect(splitDeviceNumber((await stat(target, { bigint: true })).rdev)).toEqual({
      major: loop.major,
      minor: loop.minor,
    });
    await mounter().unplug({ vmiUID, volume: 'data-blk' });
    await expectNothingMade();
  });
});

describe('filesystem sources and the launcher folder', () => {
  it("refuses a volume folder that links into another pod's volume: nothing mounted", async () => {
    const otherPod = randomUUID();
    await fx.filesystemPvc(otherPod, 'pv-secret');
    const pvDir = join(LAYOUT.fsSourceDir(fx.root, attachPodUID, 'pv-fs-1'), '..');
    await mkdir(pvDir, { recursive: true });
    await symlink(LAYOUT.fsSourceDir(fx.root, otherPod, 'pv-secret'), join(pvDir, 'mount'));

    const refused = mounter().plug(
      request({ volume: 'data-fs', pvName: 'pv-fs-1', mode: VolumeMode.Filesystem }),
    );
    await expect(refused).rejects.toBeInstanceOf(PathEscapeError);
    await expect(refused).rejects.toThrow(/is outside .*pods\//);
    await expectNothingMade();
  });

  it("refuses a launcher hotplug folder that links to another launcher's", async () => {
    const otherLauncher = randomUUID();
    const otherDir = await fx.launcherPod(otherLauncher);
    const evilLauncher = randomUUID();
    const emptyDir = join(LAYOUT.hotplugDir(fx.root, evilLauncher), '..');
    await mkdir(emptyDir, { recursive: true });
    await symlink(otherDir, join(emptyDir, 'hotplug-disks'));
    await fx.filesystemPvc(attachPodUID, 'pv-fs-1');

    await expect(
      mounter().plug(
        request({
          launcherUID: evilLauncher,
          volume: 'data-fs',
          pvName: 'pv-fs-1',
          mode: VolumeMode.Filesystem,
        }),
      ),
    ).rejects.toBeInstanceOf(PathEscapeError);
    expect(await readdir(otherDir)).toEqual([]);
    await expectNothingMade();
  });

  it('refuses an overlong PV name before touching the disk (InvalidNameError)', async () => {
    await expect(mounter().plug(request({ pvName: 'p'.repeat(300) }))).rejects.toBeInstanceOf(
      InvalidNameError,
    );
    await expect(mounter().plug(request({ pvName: 'pv\0x' }))).rejects.toBeInstanceOf(
      PathEscapeError,
    );
    await expectNothingMade();
  });
});

describe('namespaces', () => {
  it('refuses to unplug or replace a volume recorded for another namespace; it stays mounted', async () => {
    const img = await fx.filesystemPvc(attachPodUID, 'pv-fs-1');
    const fs = request({
      namespace: 'ns-b',
      volume: 'data-fs',
      pvName: 'pv-fs-1',
      mode: VolumeMode.Filesystem,
    });
    const target = join(hotplugDir(), 'data-fs.img');
    await mounter().plug(fs);
    expect((await loadCheckpoint(fx.stateDir, vmiUID)).entries).toMatchObject([
      { namespace: 'ns-b', volume: 'data-fs', target },
    ]);

    // A work item for ns-a carrying the UID of ns-b's VMI.
    await expect(
      mounter().unplug({ namespace: 'ns-a', vmiUID, volume: 'data-fs' }),
    ).rejects.toBeInstanceOf(ForeignVolumeError);
    // Also when it would plug the volume elsewhere (another launcher: the recorded one is not
    // undone first).
    const otherLauncher = randomUUID();
    await fx.launcherPod(otherLauncher);
    for (const foreign of [fs, { ...fs, launcherUID: otherLauncher }]) {
      await expect(mounter().plug({ ...foreign, namespace: 'ns-a' })).rejects.toMatchObject({
        name: 'ForeignVolumeError',
        reason: 'ForeignVolume',
        recordedNamespace: 'ns-b',
      });
    }
    expect(await readdir(LAYOUT.hotplugDir(fx.root, otherLauncher))).toEqual([]);
    expect(await mountsUnder(fx.base)).toEqual([target]);
    // Still the attachment pod's disk: a bind mount shows the source's inode.
    const [onTarget, ofSource] = await Promise.all([stat(target), stat(img)]);
    expect([onTarget.dev, onTarget.ino]).toEqual([ofSource.dev, ofSource.ino]);

    expect(await mounter().unplug({ namespace: 'ns-b', vmiUID, volume: 'data-fs' })).toMatchObject(
      { unmounted: 1, removed: true },
    );
    await expect(lstat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    await expectNothingMade();
  });
});
