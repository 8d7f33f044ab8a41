import { randomUUID } from 'node:crypto';

import { afterEach, beforeAll, beforeEach, expect } from 'vitest';

import { NodeMounter, VolumeMode } from '../src/index.js';
import type { PlugRequest } from '../src/index.js';
import { assertPrivateMountNamespace, HostFixture, mountsUnder } from './host.js';

/**
 * One node per test, for the files that mount for real: a fresh kubelet root with one launcher
 * pod, a devices cgroup that allows nothing, and new UIDs for the VMI, its launcher and its
 * attachment pod. After each test every loop device is detached and nothing stays mounted.
 */
export interface LauncherNode {
  readonly fx: HostFixture;
  /** The launcher's devices cgroup. */
  readonly cgroup: string;
  readonly vmiUID: string;
  readonly launcherUID: string;
  readonly attachPodUID: string;
  /** A node-mounter on this kubelet root, placing devices in {@link cgroup}. */
  mounter(): NodeMounter;
  /** A plug of the filesystem volume `data-fs` (PV `pv-fs-1`) into this launcher. */
  fsRequest(overrides?: Partial<PlugRequest>): PlugRequest;
  /** A plug of the block volume `data-blk` (PV `pv-blk-1`) into this launcher. */
  blockRequest(overrides?: Partial<PlugRequest>): PlugRequest;
}

interface NodeState {
  fx: HostFixture;
  cgroup: string;
  vmiUID: string;
  launcherUID: string;
  attachPodUID: string;
}

/**
 * Registers the hooks that make a {@link LauncherNode} before each test of the calling file and
 * check and dispose of it after; its fields may be read only inside tests and hooks.
 */
export function useLauncherNode(): LauncherNode {
  let state: NodeState | undefined;
  /** Disposed of after the test even when the rest of the setup failed. */
  let made: HostFixture | undefined;
  const current = (): NodeState => {
    if (state === undefined) throw new Error('the launcher node exists only inside a test');
    return state;
  };
  const request =
    (volume: Pick<PlugRequest, 'volume' | 'pvName' | 'mode'>) =>
    (overrides: Partial<PlugRequest> = {}): PlugRequest => {
      const { vmiUID, launcherUID, attachPodUID } = current();
      return { vmiUID, launcherUID, attachPodUID, ...volume, ...overrides };
    };

  beforeAll(async () => {
    await assertPrivateMountNamespace();
  });

  beforeEach(async () => {
    const fx = await HostFixture.create();
    made = fx;
    const launcherUID = randomUUID();
    await fx.launcherPod(launcherUID);
    const cgroup = await fx.devicesCgroup();
    state = { fx, cgroup, launcherUID, attachPodUID: randomUUID(), vmiUID: randomUUID() };
  });

  afterEach(async () => {
    const fx = made;
    made = undefined;
    state = undefined;
    if (fx === undefined) return;
    const remaining = await fx.dispose();
    expect(remaining, 'loop devices left attached').toEqual([]);
    expect(await mountsUnder(fx.base)).toEqual([]);
  });

  return {
    get fx() {
      return current().fx;
    },
    get cgroup() {
      return current().cgroup;
    },
    get vmiUID() {
      return current().vmiUID;
    },
    get launcherUID() {
      return current().launcherUID;
    },
    get attachPodUID() {
      return current().attachPodUID;
    },
    mounter: () => {
      const { fx, cgroup } = current();
      return new NodeMounter({
        kubeletRoot: fx.root,
        stateDir: fx.stateDir,
        cgroupDirFor: () => cgroup,
      });
    },
    fsRequest: request({ volume: 'data-fs', pvName: 'pv-fs-1', mode: VolumeMode.Filesystem }),
    blockRequest: request({ volume: 'data-blk', pvName: 'pv-blk-1', mode: VolumeMode.Block }),
  };
}
