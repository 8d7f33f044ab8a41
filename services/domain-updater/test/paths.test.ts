import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  InvalidNameError,
  PathEscapeError,
  Stage,
  type VirtualMachineInstance,
  type WorkItem,
} from '@plugline/contracts';
import type { DomainDriver } from '@plugline/hypervisor';

import {
  checkedHotplugSource,
  createObserver,
  createdByKeys,
  hotplugHostDir,
  WrongSourceKindError,
  type PodLike,
} from '../src/index.js';

/**
 * Least privilege on the node (issue 9), domain-updater side: the disk source it hands to the
 * hypervisor is built from a validated launcher UID and must really be what node-mounter makes in
 * the launcher pod's own folder — checked on real files, symlinks and device nodes.
 */

const exec = promisify(execFile);

const LAUNCHER = '5f0e8f4e-2f7e-4a8e-9d0e-1f7a3c1d9e11';
const OTHER = '9c4f1a8e-6b0c-4a55-8a8c-2b1f0d7e3a42';
const VMI_UID = '0b7ad3c2-7c2d-4c57-9a39-5a0f6f1bb2a1';

let base: string;
let root: string;

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'plugline-du-paths-'));
  root = join(base, 'kubelet');
  await mkdir(hotplugHostDir(root, LAUNCHER), { recursive: true });
  await mkdir(hotplugHostDir(root, OTHER), { recursive: true });
  await mkdir(join(base, 'outside'));
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

const source = (uid: string, file: string) => join(hotplugHostDir(root, uid), file);

describe('hotplugHostDir', () => {
  it.each(['..', '', 'a/../../..', 'a\0b'])(
    'refuses the launcher UID %j (PathEscapeError)',
    (uid) => {
      expect(() => hotplugHostDir(root, uid)).toThrow(PathEscapeError);
    },
  );

  it.each(['UPPER', '-dash', 'x'.repeat(64), 'x'.repeat(300)])(
    'refuses the launcher UID %j (InvalidNameError)',
    (uid) => {
      expect(() => hotplugHostDir(root, uid)).toThrow(InvalidNameError);
    },
  );

  it('refuses a relative kubelet root', () => {
    expect(() => hotplugHostDir('var/lib/kubelet', LAUNCHER)).toThrow(PathEscapeError);
  });
});

describe('checkedHotplugSource', () => {
  it("returns node-mounter's file or device node, and nothing while there is none", async () => {
    expect(await checkedHotplugSource(root, LAUNCHER, 'data', 'Filesystem')).toBeUndefined();
    await writeFile(source(LAUNCHER, 'data.img'), '');
    expect(await checkedHotplugSource(root, LAUNCHER, 'data', 'Filesystem')).toBe(
      source(LAUNCHER, 'data.img'),
    );
    await exec('mknod', ['-m', '0660', source(LAUNCHER, 'blk'), 'b', '7', '250']);
    expect(await checkedHotplugSource(root, LAUNCHER, 'blk', 'Block')).toBe(
      source(LAUNCHER, 'blk'),
    );
  });

  it.each([
    ['a file outside the kubelet root', () => join(base, 'outside', 'secret.img')],
    ["another pod's disk inside the root", () => source(OTHER, 'theirs.img')],
  ])('refuses a source that is a symlink to %s', async (_, to) => {
    await writeFile(to(), 'not yours');
    await symlink(to(), source(LAUNCHER, 'data.img'));
    await expect(checkedHotplugSource(root, LAUNCHER, 'data', 'Filesystem')).rejects.toBeInstanceOf(
      PathEscapeError,
    );
  });

  it('refuses a block source that is a symlink to a device node (even a real one)', async () => {
    await exec('mknod', ['-m', '0660', source(OTHER, 'theirs'), 'b', '7', '251']);
    await symlink(source(OTHER, 'theirs'), source(LAUNCHER, 'blk'));
    await expect(checkedHotplugSource(root, LAUNCHER, 'blk', 'Block')).rejects.toBeInstanceOf(
      PathEscapeError,
    );
  });

  it("refuses a hotplug folder that links into another pod's folder", async () => {
    const evil = '1a2b3c4d-0000-4000-8000-000000000001';
    const emptyDir = join(hotplugHostDir(root, evil), '..');
    await mkdir(emptyDir, { recursive: true });
    await symlink(hotplugHostDir(root, OTHER), join(emptyDir, 'hotplug-disks'));
    await writeFile(source(OTHER, 'data.img'), '');
    const refused = checkedHotplugSource(root, evil, 'data', 'Filesystem');
    await expect(refused).rejects.toBeInstanceOf(PathEscapeError);
    await expect(refused).rejects.toMatchObject({ root: join(root, 'pods', evil) });
  });

  it('refuses a source of the wrong kind (WrongSourceKindError)', async () => {
    await mkdir(source(LAUNCHER, 'dir.img'));
    await expect(checkedHotplugSource(root, LAUNCHER, 'dir', 'Filesystem')).rejects.toBeInstanceOf(
      WrongSourceKindError,
    );
    await writeFile(source(LAUNCHER, 'plain'), 'a file, not a device');
    await expect(checkedHotplugSource(root, LAUNCHER, 'plain', 'Block')).rejects.toMatchObject({
      reason: 'WrongFileKind',
    });
  });
});

describe('the observer', () => {
  const vmi: VirtualMachineInstance = {
    metadata: { name: 'vm', namespace: 'ns-a', uid: VMI_UID, generation: 1 },
    spec: {
      domain: { devices: { disks: [{ name: 'data', disk: { bus: 'scsi' } }] } },
      volumes: [
        { name: 'data', persistentVolumeClaim: { claimName: 'pvc-data', hotpluggable: true } },
      ],
    },
    status: { nodeName: 'node-a', phase: 'Running' },
  };
  const item: WorkItem = {
    v: 1,
    stage: Stage.DomainUpdater,
    namespace: 'ns-a',
    vmi: 'vm',
    vmiUID: VMI_UID,
    volume: 'data',
    node: 'node-a',
    operationId: 'op-1',
    operation: 'plug',
    cause: 'mounted-to-pod',
    issuedAt: new Date(0).toISOString(),
  };
  const launcherPod = (uid: string, namespace: string): PodLike & { metadata: object } => ({
    metadata: {
      name: `virt-launcher-${uid.slice(0, 5)}`,
      namespace,
      uid,
      labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': VMI_UID },
    },
    spec: { nodeName: 'node-a' },
    status: { phase: 'Running' },
  });

  function observer(pods: PodLike[]) {
    return createObserver({
      node: 'node-a',
      kubeletRoot: root,
      diskSourceDir: 'host',
      vmis: { get: () => vmi },
      api: { getVmi: () => Promise.resolve(vmi) },
      launchersOf: (uid) => pods.filter((p) => createdByKeys(p).includes(uid)),
      pvcs: { get: () => ({ metadata: { name: 'pvc-data' }, spec: { volumeMode: 'Filesystem' } }) },
      driver: { listDisks: () => Promise.resolve([]) } as unknown as DomainDriver,
      probe: () => Promise.resolve(false),
    });
  }

  it('reports a symlinked source as a PathEscape plan error, with no disk to attach', async () => {
    await writeFile(join(base, 'outside', 'secret.img'), 'secret');
    await symlink(join(base, 'outside', 'secret.img'), source(LAUNCHER, 'data.img'));
    const observation = await observer([launcherPod(LAUNCHER, 'ns-a')]).observe(item);
    expect(observation).toMatchObject({
      kind: 'observed',
      plan: null,
      planError: { reason: 'PathEscape' },
    });
  });

  it("ignores a launcher pod in another namespace carrying the VMI's labels", async () => {
    await writeFile(source(OTHER, 'data.img'), '');
    const observation = await observer([launcherPod(OTHER, 'ns-b')]).observe(item);
    expect(observation).toMatchObject({ kind: 'observed', sourceReady: false, plan: null });
  });

  it('reports a launcher pod UID that is no UID as a plan error', async () => {
    const observation = await observer([launcherPod('../../..', 'ns-a')]).observe(item);
    expect(observation).toMatchObject({ kind: 'observed', planError: { reason: 'PathEscape' } });
  });
});
