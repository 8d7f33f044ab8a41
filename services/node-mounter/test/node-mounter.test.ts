import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';
import { createActor, waitFor } from 'xstate';

import { InvalidNameError, PathEscapeError } from '@plugline/contracts';

import {
  checkpointPath,
  isMountedOn,
  loadCheckpoint,
  nodeMounterActors,
  nodeMounterMachine,
  NodeMounter,
  readDeviceRules,
  splitDeviceNumber,
} from '../src/index.js';
import { canReadFromCgroup, LAYOUT, mountsUnder, mountTable } from './host.js';
import { useLauncherNode } from './launcher-node.js';

/**
 * Real mounts, device nodes, loop devices and a real v1 devices cgroup, inside a private mount
 * namespace (scripts/with-private-mounts), on the kubelet layout kube-sim writes.
 */

const node = useLauncherNode();

describe('filesystem volume', () => {
  it('plug bind-mounts disk.img onto <vol>.img; unplug unmounts and unlinks', async () => {
    const img = await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    const hotplug = LAYOUT.hotplugDir(node.fx.root, node.launcherUID);
    const target = join(hotplug, 'data-fs.img');
    const m = node.mounter();

    const plugged = await m.plug(node.fsRequest());
    expect(plugged).toMatchObject({
      type: 'mounted-to-pod',
      changed: true,
      target,
      source: img,
      sourceMismatch: false,
    });
    expect(await mountsUnder(node.fx.base)).toEqual([target]);
    expect(await readFile(target, 'utf8')).toMatch(/^disk of pv-fs-1\n/);
    const st = await stat(target);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([107, 107, 0o660]);
    expect((await loadCheckpoint(node.fx.stateDir, node.vmiUID)).entries).toEqual([
      { volume: 'data-fs', mode: 'Filesystem', target, source: img },
    ]);

    const again = await m.plug(node.fsRequest());
    expect(again.changed).toBe(false);
    expect(await mountsUnder(node.fx.base)).toEqual([target]);

    const unplugged = await m.unplug({ vmiUID: node.vmiUID, volume: 'data-fs' });
    expect(unplugged).toMatchObject({
      type: 'unmounted-from-pod',
      changed: true,
      unmounted: 1,
      removed: true,
      target,
    });
    expect(await mountsUnder(node.fx.base)).toEqual([]);
    await expect(lstat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readFile(img, 'utf8')).toMatch(/^disk of pv-fs-1\n/);
    await expect(lstat(checkpointPath(node.fx.stateDir, node.vmiUID))).rejects.toMatchObject({
      code: 'ENOENT',
    });

    const twice = await m.unplug({ vmiUID: node.vmiUID, volume: 'data-fs' });
    expect(twice).toMatchObject({ changed: false, unmounted: 0, removed: false });
  });

  it('tells a placeholder file from a mounted one, and unmounts mounts stacked on the target', async () => {
    const img = await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    const target = join(LAYOUT.hotplugDir(node.fx.root, node.launcherUID), 'data-fs.img');
    const m = node.mounter();
    await m.plug(node.fsRequest());
    expect(await isMountedOn(target)).toBe(true);
    // Someone mounted it once more on top: the mount is still seen, and unplug removes both.
    await promisify(execFile)('mount', ['--bind', img, target]);
    expect(await mountTable().then((t) => t.filter((e) => e.mountPoint === target))).toHaveLength(
      2,
    );
    expect(await m.unplug({ vmiUID: node.vmiUID, volume: 'data-fs' })).toMatchObject({
      unmounted: 2,
      removed: true,
    });
    expect(await mountsUnder(node.fx.base)).toEqual([]);

    await writeFile(target, '');
    expect(await isMountedOn(target)).toBe(false);
    expect(await isMountedOn(join(target, '..', 'absent.img'))).toBe(false);
  });

  it('mounts and unmounts many volumes of one VMI at once, recording every one', async () => {
    const volumes = Array.from({ length: 12 }, (_, i) => ({ volume: `v${i}`, pvName: `pv-${i}` }));
    for (const v of volumes) await node.fx.filesystemPvc(node.attachPodUID, v.pvName, 1024 * 1024);
    const m = node.mounter();
    const plugged = await Promise.all(volumes.map((v) => m.plug(node.fsRequest(v))));
    expect(plugged.every((f) => f.changed)).toBe(true);
    expect((await mountsUnder(node.fx.base)).length).toBe(volumes.length);
    const recorded = (await loadCheckpoint(node.fx.stateDir, node.vmiUID)).entries;
    expect(recorded.map((e) => e.volume).sort()).toEqual(volumes.map((v) => v.volume).sort());

    const unplugged = await Promise.all(
      volumes.map((v) => m.unplug({ vmiUID: node.vmiUID, volume: v.volume })),
    );
    expect(unplugged.map((f) => f.unmounted)).toEqual(volumes.map(() => 1));
    expect(await mountsUnder(node.fx.base)).toEqual([]);
    await expect(lstat(checkpointPath(node.fx.stateDir, node.vmiUID))).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('records what it mounted through plugs and unplugs that overlap, as a fresh node-mounter reads it', async () => {
    const volumes = Array.from({ length: 9 }, (_, i) => ({ volume: `v${i}`, pvName: `pv-${i}` }));
    for (const v of volumes) await node.fx.filesystemPvc(node.attachPodUID, v.pvName, 1024 * 1024);
    const [first, second, third] = [volumes.slice(0, 3), volumes.slice(3, 6), volumes.slice(6)];
    const m = node.mounter();
    await Promise.all([...first, ...second].map((v) => m.plug(node.fsRequest(v))));
    // unplug the first three while the last three are plugged
    await Promise.all([
      ...first.map((v) => m.unplug({ vmiUID: node.vmiUID, volume: v.volume })),
      ...third.map((v) => m.plug(node.fsRequest(v))),
    ]);
    const kept = [...second, ...third].map((v) => v.volume).sort();
    const recorded = (await loadCheckpoint(node.fx.stateDir, node.vmiUID)).entries;
    expect(recorded.map((e) => e.volume).sort()).toEqual(kept);
    expect((await mountsUnder(node.fx.base)).length).toBe(kept.length);

    // Another node-mounter (a restart) undoes every one of them from the file alone.
    const restarted = node.mounter();
    const unplugged = await Promise.all(
      kept.map((volume) => restarted.unplug({ vmiUID: node.vmiUID, volume })),
    );
    expect(unplugged.map((f) => f.unmounted)).toEqual(kept.map(() => 1));
    expect(await mountsUnder(node.fx.base)).toEqual([]);
    await expect(lstat(checkpointPath(node.fx.stateDir, node.vmiUID))).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('a missing disk.img is NotFound and mounts nothing', async () => {
    await expect(node.mounter().plug(node.fsRequest())).rejects.toMatchObject({
      reason: 'NotFound',
    });
    expect(await mountsUnder(node.fx.base)).toEqual([]);
  });
});

describe('block volume', () => {
  it('plug makes the node with the loop device number and allows it in the cgroup; unplug undoes both', async () => {
    const loop = await node.fx.blockPvc(node.attachPodUID, 'pv-blk-1');
    const target = join(LAYOUT.hotplugDir(node.fx.root, node.launcherUID), 'data-blk');
    const m = node.mounter();
    expect(await readDeviceRules(node.cgroup)).toEqual([]);

    const plugged = await m.plug(node.blockRequest());
    expect(plugged).toMatchObject({
      changed: true,
      target,
      device: { major: loop.major, minor: loop.minor },
      cgroup: { kind: 'applied', version: 'v1', rule: `b ${loop.major}:${loop.minor} rwm` },
    });
    const st = await stat(target, { bigint: true });
    expect(st.isBlockDevice()).toBe(true);
    expect(splitDeviceNumber(st.rdev)).toEqual({ major: loop.major, minor: loop.minor });
    expect([st.uid, st.gid, st.mode & 0o777n]).toEqual([107n, 107n, 0o660n]);
    expect(await readDeviceRules(node.cgroup)).toEqual([`b ${loop.major}:${loop.minor} rwm`]);
    expect(await mountsUnder(node.fx.base)).toEqual([]);
    // The rule is effective: a process in the launcher's cgroup can read the disk through the node.
    expect(await canReadFromCgroup(node.cgroup, target)).toBe(true);

    expect((await m.plug(node.blockRequest())).changed).toBe(false);
    expect(await readDeviceRules(node.cgroup)).toEqual([`b ${loop.major}:${loop.minor} rwm`]);

    const unplugged = await m.unplug({ vmiUID: node.vmiUID, volume: 'data-blk' });
    expect(unplugged).toMatchObject({
      changed: true,
      removed: true,
      cgroup: { kind: 'applied', file: join(node.cgroup, 'devices.deny') },
    });
    await expect(lstat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readDeviceRules(node.cgroup)).toEqual([]);
    expect(await canReadFromCgroup(node.cgroup, loop.device)).toBe(false);
    expect(await m.unplug({ vmiUID: node.vmiUID, volume: 'data-blk' })).toMatchObject({
      changed: false,
      removed: false,
    });
  });

  it('a wrong node at the target is replaced; a source that is no block device is refused', async () => {
    const loop = await node.fx.blockPvc(node.attachPodUID, 'pv-blk-1');
    const target = join(LAYOUT.hotplugDir(node.fx.root, node.launcherUID), 'data-blk');
    await writeFile(target, 'stale');
    const plugged = await node.mounter().plug(node.blockRequest());
    expect(plugged.changed).toBe(true);
    expect(splitDeviceNumber((await stat(target, { bigint: true })).rdev)).toEqual({
      major: loop.major,
      minor: loop.minor,
    });
    await node.mounter().unplug({ vmiUID: node.vmiUID, volume: 'data-blk' });

    const fake = LAYOUT.blockSource(node.fx.root, node.attachPodUID, 'pv-not-blk');
    await writeFile(fake, 'not a device');
    await expect(
      node.mounter().plug(node.blockRequest({ volume: 'other', pvName: 'pv-not-blk' })),
    ).rejects.toMatchObject({
      name: 'WrongFileKindError',
    });
  });
});

describe('restart', () => {
  it('a new NodeMounter unplugs what an earlier one plugged (from the checkpoint alone)', async () => {
    await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    const loop = await node.fx.blockPvc(node.attachPodUID, 'pv-blk-1');
    await node.mounter().plug(node.fsRequest());
    await node.mounter().plug(node.blockRequest());
    expect(await mountsUnder(node.fx.base)).toHaveLength(1);
    expect(await readDeviceRules(node.cgroup)).toEqual([`b ${loop.major}:${loop.minor} rwm`]);

    const restarted = new NodeMounter({ kubeletRoot: node.fx.root, stateDir: node.fx.stateDir }); // no cgroup resolver
    expect(await restarted.unplug({ vmiUID: node.vmiUID, volume: 'data-fs' })).toMatchObject({
      unmounted: 1,
      removed: true,
    });
    expect(await restarted.unplug({ vmiUID: node.vmiUID, volume: 'data-blk' })).toMatchObject({
      removed: true,
      cgroup: { kind: 'applied' },
    });
    expect(await mountsUnder(node.fx.base)).toEqual([]);
    expect(await readDeviceRules(node.cgroup)).toEqual([]);
  });

  it('reconcile at start undoes what no spec wants and keeps what one does', async () => {
    await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-2');
    const loop = await node.fx.blockPvc(node.attachPodUID, 'pv-blk-1');
    await node.mounter().plug(node.fsRequest());
    await node.mounter().plug(node.fsRequest({ volume: 'keep-fs', pvName: 'pv-fs-2' }));
    await node.mounter().plug(node.blockRequest());
    const hotplug = LAYOUT.hotplugDir(node.fx.root, node.launcherUID);
    await writeFile(join(node.fx.stateDir, `${randomUUID()}.json`), '{ not json');

    const report = await new NodeMounter({
      kubeletRoot: node.fx.root,
      stateDir: node.fx.stateDir,
    }).reconcile(new Map([[node.vmiUID, ['keep-fs']]]));
    expect(report.outcomes.map((o) => [o.action, o.volume, o.error])).toEqual([
      ['unmount', 'data-fs', undefined],
      ['removeBlockNode', 'data-blk', undefined],
    ]);
    expect(report.facts.map((f) => f.volume)).toEqual(['data-fs', 'data-blk']);
    expect(report.problems).toHaveLength(1);
    expect(await mountsUnder(node.fx.base)).toEqual([join(hotplug, 'keep-fs.img')]);
    expect(await readDeviceRules(node.cgroup)).toEqual([]);
    expect(loop.major).toBeGreaterThan(0);
    expect(
      (await loadCheckpoint(node.fx.stateDir, node.vmiUID)).entries.map((e) => e.volume),
    ).toEqual(['keep-fs']);

    const none = await new NodeMounter({
      kubeletRoot: node.fx.root,
      stateDir: node.fx.stateDir,
    }).reconcile(new Map());
    expect(none.outcomes.map((o) => o.action)).toEqual(['unmount']);
    expect(await mountsUnder(node.fx.base)).toEqual([]);
  });
});

describe('traversal', () => {
  it.each([
    ['volume ..', { volume: '..' }],
    ['volume with a slash', { volume: 'a/../../x' }],
    ['absolute pv name', { pvName: '/etc' }],
    ['pv name ..', { pvName: '..' }],
    ['launcher UID ..', { launcherUID: '..' }],
    ['attachment pod UID with a slash', { attachPodUID: '../../..' }],
  ])('refuses %s with PathEscapeError', async (_, overrides) => {
    await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    await expect(node.mounter().plug(node.fsRequest(overrides))).rejects.toBeInstanceOf(
      PathEscapeError,
    );
    expect(await mountsUnder(node.fx.base)).toEqual([]);
  });

  it('refuses a name that breaks DNS-1123 with InvalidNameError', async () => {
    await expect(node.mounter().plug(node.fsRequest({ volume: 'Data' }))).rejects.toBeInstanceOf(
      InvalidNameError,
    );
  });

  it('refuses symlinks out of the kubelet root (source, launcher folder, target)', async () => {
    const outside = join(node.fx.base, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'disk.img'), 'secret');
    // The attachment pod's mount dir points outside.
    const pvDir = join(LAYOUT.fsSourceDir(node.fx.root, node.attachPodUID, 'pv-evil'), '..');
    await mkdir(pvDir, { recursive: true });
    await symlink(outside, join(pvDir, 'mount'));
    await expect(node.mounter().plug(node.fsRequest({ pvName: 'pv-evil' }))).rejects.toBeInstanceOf(
      PathEscapeError,
    );

    // The launcher's hotplug folder points outside.
    const evilLauncher = randomUUID();
    await node.fx.linkedLauncherPod(evilLauncher, outside);
    await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    await expect(
      node.mounter().plug(node.fsRequest({ launcherUID: evilLauncher })),
    ).rejects.toBeInstanceOf(PathEscapeError);

    // The target itself is a symlink to a file outside.
    await symlink(
      join(outside, 'disk.img'),
      join(LAYOUT.hotplugDir(node.fx.root, node.launcherUID), 'data-fs.img'),
    );
    await expect(node.mounter().plug(node.fsRequest())).rejects.toBeInstanceOf(PathEscapeError);

    expect(await mountsUnder(node.fx.base)).toEqual([]);
    expect(await readFile(join(outside, 'disk.img'), 'utf8')).toBe('secret');
  });

  it('refuses a checkpoint whose target was tampered to point outside the root', async () => {
    const victim = join(node.fx.base, 'victim');
    await writeFile(victim, 'keep me');
    await mkdir(node.fx.stateDir, { recursive: true });
    await writeFile(
      checkpointPath(node.fx.stateDir, node.vmiUID),
      JSON.stringify({
        version: 1,
        vmiUID: node.vmiUID,
        entries: [{ volume: 'x', mode: 'Filesystem', target: victim, source: '' }],
      }),
    );
    await expect(
      node.mounter().unplug({ vmiUID: node.vmiUID, volume: 'x' }),
    ).rejects.toBeInstanceOf(PathEscapeError);
    expect(await readFile(victim, 'utf8')).toBe('keep me');
  });
});

describe('machine with the real actors', () => {
  it('PLUG reaches mounted with the mount made; UNPLUG after release reaches unmounted with it gone', async () => {
    await node.fx.filesystemPvc(node.attachPodUID, 'pv-fs-1');
    const actor = createActor(
      nodeMounterMachine.provide({ actors: nodeMounterActors(node.mounter()) }),
      {
        input: { volume: node.fsRequest() },
      },
    );
    actor.start();
    try {
      actor.send({ type: 'PLUG' });
      await waitFor(actor, (s) => s.matches('mounted'), { timeout: 10_000 });
      expect(await mountsUnder(node.fx.base)).toHaveLength(1);
      actor.send({ type: 'UNPLUG', domainReleased: false });
      expect(actor.getSnapshot().value).toBe('mounted');
      actor.send({ type: 'UNPLUG', domainReleased: true });
      await waitFor(actor, (s) => s.matches('unmounted'), { timeout: 10_000 });
      expect(await mountsUnder(node.fx.base)).toEqual([]);
    } finally {
      actor.stop();
    }
  });
});
