import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readdir, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { InvalidNameError, PathEscapeError } from '@plugline/contracts';

import {
  ForeignVolumeError,
  loadCheckpoint,
  readDeviceRules,
  splitDeviceNumber,
} from '../src/index.js';
import { LAYOUT, mountsUnder } from './host.js';
import { useLauncherNode } from './launcher-node.js';

/**
 * Least privilege on the node (issue 9): the node-mounter refuses any path outside the kubelet
 * root and any source that is not the attachment pod's own — with real files, symlinks, loop
 * devices and a real devices cgroup, inside a private mount namespace. After every refusal
 * nothing is mounted, no device node is made, no cgroup rule is written, nothing is checkpointed.
 */

const exec = promisify(execFile);

const node = useLauncherNode();

const hotplugDir = () => LAYOUT.hotplugDir(node.fx.root, node.launcherUID);

/** Nothing of the volume exists on the launcher's side, in the cgroup or in the checkpoint. */
async function expectNothingMade(): Promise<void> {
  expect(await readdir(hotplugDir())).toEqual([]);
  expect(await mountsUnder(node.fx.base)).toEqual([]);
  expect(await readDeviceRules(node.cgroup)).toEqual([]);
  expect((await loadCheckpoint(node.fx.stateDir, node.vmiUID)).entries).toEqual([]);
}

/** Makes the attachment pod's block source for `pv` a symlink to `to`. */
async function linkBlockSource(pv: string, to: string): Promise<string> {
  const path = LAYOUT.blockSource(node.fx.root, node.attachPodUID, pv);
  await mkdir(join(path, '..'), { recursive: true });
  await symlink(to, path);
  return path;
}

describe('block sources', () => {
  it("refuses a source that links to another pod's device node: no node, no cgroup rule", async () => {
    const otherPod = randomUUID();
    const other = await node.fx.blockPvc(otherPod, 'pv-other');
    await linkBlockSource('pv-blk-1', other.node);

    const refused = node.mounter().plug(node.blockRequest());
    await expect(refused).rejects.toBeInstanceOf(PathEscapeError);
    await expect(refused).rejects.toMatchObject({
      reason: 'PathEscape',
      root: join(node.fx.root, 'pods', node.attachPodUID),
    });
    await expectNothingMade();
  });

  it('refuses a source that links to the loop device in /dev (outside the kubelet root)', async () => {
    const loop = await node.fx.blockPvc(randomUUID(), 'pv-some-loop');
    await linkBlockSource('pv-blk-1', loop.device);
    await expect(node.mounter().plug(node.blockRequest())).rejects.toBeInstanceOf(PathEscapeError);
    await expectNothingMade();
  });

  it("refuses a pod folder that is a link to another pod's folder", async () => {
    const otherPod = randomUUID();
    await node.fx.blockPvc(otherPod, 'pv-blk-1');
    await symlink(
      join(node.fx.root, 'pods', otherPod),
      join(node.fx.root, 'pods', node.attachPodUID),
    );
    await expect(node.mounter().plug(node.blockRequest())).rejects.toBeInstanceOf(PathEscapeError);
    await expectNothingMade();
  });

  it("accepts a real kubelet's layout: the pod's node links into the CSI plugins folder", async () => {
    // A real kubelet maps a CSI block volume as pods/<uid>/volumeDevices/<driver>/<pv> → a device
    // file it publishes under plugins/; that is still this pod's device.
    const loop = await node.fx.blockPvc(randomUUID(), 'pv-published');
    const published = join(
      node.fx.root,
      'plugins',
      'kubernetes.io',
      'csi',
      'volumeDevices',
      'publish',
      'pv-blk-1',
      node.attachPodUID,
    );
    await mkdir(join(published, '..'), { recursive: true });
    await exec('mknod', ['-m', '0660', published, 'b', String(loop.major), String(loop.minor)]);
    await linkBlockSource('pv-blk-1', published);

    const plugged = await node.mounter().plug(node.blockRequest());
    expect(plugged.device).toEqual({ major: loop.major, minor: loop.minor });
    const target = join(hotplugDir(), 'data-blk');
    expect(splitDeviceNumber((await stat(target, { bigint: true })).rdev)).toEqual({
      major: loop.major,
      minor: loop.minor,
    });
    await node.mounter().unplug({ vmiUID: node.vmiUID, volume: 'data-blk' });
    await expectNothingMade();
  });
});

describe('filesystem sources and the launcher folder', () => {
  it("refuses a volume folder that links into another pod's volume: nothing mounted", async () => {
    const otherPod = randomUUID();
    await node.fx.filesystemPvc(otherPod, 'pv-secret');
    const pvDir = join(LAYOUT.fsSourceDir(node.fx.root, node.attachPodUID, 'pv-fs-1'), '..');
    await mkdir(pvDir, { recursive: true });
    await symlink(LAYOUT.fsSourceDir(node.fx.root, otherPod, 'pv-secret'), join(pvDir, 'mount'));

    const refused = node.mounter().plug(node.fsRequest());
    await expect(refused).rejects.toBeInstanceOf(PathEscapeError);
    await expect(refused).rejects.toThrow(/is outside .*pods\//);
    await expectNothingMade();
  });

  it("refuses a launcher hotplug folder that links to another launcher's", async () => {
    const otherLauncher = randomUUID();
    const otherDir = await node.fx.launcherPod(otherLauncher);
    const evilLauncher = randomUUID();
    await node.fx.linkedLauncherPod(evilLauncher, otherDir);
    await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');

    await expect(
      node.mounter().plug(
        node.fsRequest({
          launcherUID: evilLauncher,
        }),
      ),
    ).rejects.toBeInstanceOf(PathEscapeError);
    expect(await readdir(otherDir)).toEqual([]);
    await expectNothingMade();
  });

  it('refuses an overlong PV name before touching the disk (InvalidNameError)', async () => {
    await expect(
      node.mounter().plug(node.blockRequest({ pvName: 'p'.repeat(300) })),
    ).rejects.toBeInstanceOf(InvalidNameError);
    await expect(
      node.mounter().plug(node.blockRequest({ pvName: 'pv\0x' })),
    ).rejects.toBeInstanceOf(PathEscapeError);
    await expectNothingMade();
  });
});

describe('namespaces', () => {
  it('refuses to unplug or replace a volume recorded for another namespace; it stays mounted', async () => {
    const img = await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    const fs = node.fsRequest({
      namespace: 'ns-b',
    });
    const target = join(hotplugDir(), 'data-fs.img');
    await node.mounter().plug(fs);
    expect((await loadCheckpoint(node.fx.stateDir, node.vmiUID)).entries).toMatchObject([
      { namespace: 'ns-b', volume: 'data-fs', target },
    ]);

    // A work item for ns-a carrying the UID of ns-b's VMI.
    await expect(
      node.mounter().unplug({ namespace: 'ns-a', vmiUID: node.vmiUID, volume: 'data-fs' }),
    ).rejects.toBeInstanceOf(ForeignVolumeError);
    // Also when it would plug the volume elsewhere (another launcher: the recorded one is not
    // undone first).
    const otherLauncher = randomUUID();
    await node.fx.launcherPod(otherLauncher);
    for (const foreign of [fs, { ...fs, launcherUID: otherLauncher }]) {
      await expect(node.mounter().plug({ ...foreign, namespace: 'ns-a' })).rejects.toMatchObject({
        name: 'ForeignVolumeError',
        reason: 'ForeignVolume',
        recordedNamespace: 'ns-b',
      });
    }
    expect(await readdir(LAYOUT.hotplugDir(node.fx.root, otherLauncher))).toEqual([]);
    expect(await mountsUnder(node.fx.base)).toEqual([target]);
    // Still the attachment pod's disk: a bind mount shows the source's inode.
    const [onTarget, ofSource] = await Promise.all([stat(target), stat(img)]);
    expect([onTarget.dev, onTarget.ino]).toEqual([ofSource.dev, ofSource.ino]);

    expect(
      await node.mounter().unplug({ namespace: 'ns-b', vmiUID: node.vmiUID, volume: 'data-fs' }),
    ).toMatchObject({ unmounted: 1, removed: true });
    await expect(lstat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    await expectNothingMade();
  });
});
