import { randomUUID } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { ConfigError, EventType, Stage } from '@plugline/contracts';
import type { VirtualMachineInstance, WorkItem } from '@plugline/contracts';

import {
  decide,
  DecisionKind,
  parseConfig,
  vmiKeyOfPod,
  vmiPodsKey,
  wantedVolumes,
} from '../src/index.js';
import type { PodView, PvcView, VolumeView } from '../src/index.js';

/** Pure: the decision table of `decide`, `wantedVolumes`, and config parsing. */

const NODE = 'node-a';
const vmiUID = randomUUID();
const launcherUID = randomUUID();
const attachUID = randomUUID();

function vmi(
  volumes: string[],
  status: VirtualMachineInstance['status'] = {},
): VirtualMachineInstance {
  return {
    metadata: { name: 'vm-long-name-for-tests', namespace: 'ns-a', uid: vmiUID, generation: 3 },
    spec: {
      domain: { devices: {} },
      volumes: volumes.map((name) => ({
        name,
        persistentVolumeClaim: { claimName: `claim-${name}`, hotpluggable: true },
      })),
    },
    status: { nodeName: NODE, phase: 'Running', ...status },
  };
}

const launcher: PodView = {
  metadata: {
    name: 'virt-launcher-x',
    namespace: 'ns-a',
    uid: launcherUID,
    labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': vmiUID },
  },
  status: { phase: 'Running' },
};

function attachment(phase = 'Running', volumes = ['data']): PodView {
  return {
    metadata: {
      name: 'hp-volume-abc',
      namespace: 'ns-a',
      uid: attachUID,
      creationTimestamp: '2024-01-01T00:00:00Z',
      labels: { 'kubevirt.io': 'hotplug-disk' },
      annotations: { 'kubevirt.io/owner-vmi-uid': vmiUID },
    },
    spec: {
      nodeName: NODE,
      volumes: volumes.map((name) => ({
        name,
        persistentVolumeClaim: { claimName: `claim-${name}` },
      })),
    },
    status: { phase, containerStatuses: [{ ready: phase === 'Running' }] },
  };
}

const boundPvc: PvcView = {
  metadata: { name: 'claim-data' },
  spec: { volumeName: 'pvc-1234', volumeMode: 'Block' },
  status: { phase: 'Bound' },
};

function item(overrides: Partial<WorkItem> = {}): WorkItem {
  return {
    v: 1,
    stage: Stage.NodeMounter,
    node: NODE,
    namespace: 'ns-a',
    vmi: 'vm-long-name-for-tests',
    vmiUID,
    volume: 'data',
    operationId: 'op-1',
    operation: 'plug',
    cause: EventType.AttachedToNode,
    issuedAt: new Date(0).toISOString(),
    ...overrides,
  };
}

function view(overrides: Partial<VolumeView> = {}): VolumeView {
  return {
    item: item(),
    node: NODE,
    vmi: vmi(['data']),
    pods: [launcher, attachment()],
    pvc: (name) => (name === 'claim-data' ? boundPvc : undefined),
    ...overrides,
  };
}

describe('decide', () => {
  it('plugs a hotplug volume in the spec once launcher, attachment pod and PVC are there', () => {
    expect(decide(view())).toEqual({
      kind: DecisionKind.Plug,
      request: {
        namespace: 'ns-a',
        vmiUID,
        launcherUID,
        attachPodUID: attachUID,
        volume: 'data',
        pvName: 'pvc-1234',
        mode: 'Block',
      },
      attachPod: { name: 'hp-volume-abc', uid: attachUID },
      launcherPod: 'virt-launcher-x',
    });
  });

  it.each([
    ['no launcher', { pods: [attachment()] }, 'LauncherPodNotFound'],
    [
      'attachment pod pending',
      { pods: [launcher, attachment('Pending')] },
      'AttachmentPodNotRunning',
    ],
    [
      'attachment pod without the volume',
      { pods: [launcher, attachment('Running', ['other'])] },
      'AttachmentPodNotRunning',
    ],
    ['no PVC', { pvc: (): PvcView | undefined => undefined }, 'FailedPvcNotFound'],
    [
      'PVC not bound',
      { pvc: (): PvcView => ({ spec: {}, status: { phase: 'Pending' } }) },
      'PVCNotReady',
    ],
  ] as const)('waits: %s', (_name, overrides, reason) => {
    expect(decide(view(overrides as Partial<VolumeView>))).toMatchObject({
      kind: DecisionKind.Wait,
      reason,
    });
  });

  it('plugs by the spec even on a release nudge (direction from the spec)', () => {
    const d = decide(
      view({ item: item({ operation: 'unplug', cause: EventType.DetachedFromDomain }) }),
    );
    expect(d.kind).toBe(DecisionKind.Plug);
  });

  it('unplugs a volume gone from the spec after detached-from-domain, with the target guess', () => {
    const d = decide(
      view({
        item: item({ operation: 'unplug', cause: EventType.DetachedFromDomain }),
        vmi: vmi([], { volumeStatus: [{ name: 'data', target: 'sda' }] }),
      }),
    );
    expect(d).toEqual({
      kind: DecisionKind.Unplug,
      request: { namespace: 'ns-a', vmiUID, volume: 'data', launcherUID, mode: 'Block' },
      why: 'NotInSpec',
    });
  });

  it('skips while the status still shows a target and the cause is not a release', () => {
    const d = decide(
      view({
        item: item({ operation: 'unplug', cause: 'resync' }),
        vmi: vmi([], { volumeStatus: [{ name: 'data', target: 'sda' }] }),
      }),
    );
    expect(d).toMatchObject({ kind: DecisionKind.Skip, reason: 'DomainMayHoldDisk' });
  });

  it('skips while the status entry is still Ready, even without a target', () => {
    const d = decide(
      view({
        item: item({ operation: 'unplug', cause: 'resync' }),
        vmi: vmi([], { volumeStatus: [{ name: 'data', target: '', phase: 'Ready' }] }),
      }),
    );
    expect(d).toMatchObject({ kind: DecisionKind.Skip, reason: 'DomainMayHoldDisk' });
  });

  it.each(['AttachedToNode', 'MountedToPod'])(
    'skips a %s entry: domain-updater may have attached it before the status says so',
    (phase) => {
      const d = decide(
        view({
          item: item({ operation: 'unplug', cause: 'resync' }),
          vmi: vmi([], { volumeStatus: [{ name: 'data', target: '', phase }] }),
        }),
      );
      expect(d).toMatchObject({ kind: DecisionKind.Skip, reason: 'DomainMayHoldDisk' });
    },
  );

  it.each([
    ['a target', { name: 'data', target: 'sda', phase: 'Ready' }],
    ['a MountedToPod entry', { name: 'data', target: '', phase: 'MountedToPod' }],
  ])(
    "waits on a plug's item whose volume left the spec while %s may be in the domain: it may come back with no new operation",
    (_, entry) => {
      const d = decide(
        view({ item: item({ cause: 'resync' }), vmi: vmi([], { volumeStatus: [entry] }) }),
      );
      expect(d).toMatchObject({ kind: DecisionKind.Wait, reason: 'DomainMayHoldDisk' });
    },
  );

  it('unplugs when the status has no target for the volume', () => {
    const d = decide(
      view({
        item: item({ cause: 'resync' }),
        vmi: vmi([], { volumeStatus: [{ name: 'data', target: '' }] }),
      }),
    );
    expect(d.kind).toBe(DecisionKind.Unplug);
  });

  it('unplugs from the checkpoint only when the VMI is gone or replaced', () => {
    for (const gone of [
      undefined,
      { ...vmi(['data']), metadata: { name: 'x', uid: randomUUID() } },
    ]) {
      expect(decide(view({ vmi: gone, pods: [] }))).toEqual({
        kind: DecisionKind.Unplug,
        request: { namespace: 'ns-a', vmiUID, volume: 'data' },
        why: 'VmiGone',
      });
    }
  });

  it.each([
    ['..', 'PathEscape'],
    ['a/../../b', 'PathEscape'],
    ['UPPER', 'InvalidName'],
  ])('refuses the VMI UID %j (%s)', (uid, reason) => {
    expect(decide(view({ item: item({ vmiUID: uid }) }))).toMatchObject({
      kind: DecisionKind.Refuse,
      reason,
    });
  });

  it('refuses an item for another node', () => {
    expect(decide(view({ item: item({ node: 'node-b' }) }))).toMatchObject({
      kind: DecisionKind.Refuse,
      reason: 'WrongNode',
    });
  });

  it('skips a volume that is not hotpluggable', () => {
    const cold = vmi([]);
    cold.spec.volumes = [{ name: 'data', persistentVolumeClaim: { claimName: 'claim-data' } }];
    expect(decide(view({ vmi: cold }))).toMatchObject({
      kind: DecisionKind.Skip,
      reason: 'NotHotpluggable',
    });
  });
});

describe("decide never reaches another VMI's pods or devices", () => {
  /** A pod as it would be in another namespace (same labels, annotations, volume names). */
  const elsewhere = (pod: PodView): PodView => ({
    ...pod,
    metadata: { ...pod.metadata, namespace: 'ns-b' },
  });

  it('an item naming the UID of a VMI in another namespace unplugs nothing of that VMI', () => {
    // ns-a/vm-long-name-for-tests does not exist; the item carries the UID of a VMI in ns-b whose
    // launcher and attachment pod run on this node.
    const d = decide(
      view({ vmi: undefined, pods: [elsewhere(launcher), elsewhere(attachment())] }),
    );
    // No target guess from the other namespace's launcher; the namespace goes with the request so
    // the mounter refuses that VMI's checkpointed volume (ForeignVolumeError, node-mounter.test).
    expect(d).toEqual({
      kind: DecisionKind.Unplug,
      request: { namespace: 'ns-a', vmiUID, volume: 'data' },
      why: 'VmiGone',
    });
  });

  it('does not plug from a launcher or attachment pod in another namespace', () => {
    expect(decide(view({ pods: [elsewhere(launcher), attachment()] }))).toMatchObject({
      kind: DecisionKind.Wait,
      reason: 'LauncherPodNotFound',
    });
    expect(decide(view({ pods: [launcher, elsewhere(attachment())] }))).toMatchObject({
      kind: DecisionKind.Wait,
      reason: 'AttachmentPodNotRunning',
    });
  });

  it('does not plug from an attachment pod carrying the volume name with another PVC', () => {
    const stale = attachment();
    stale.spec = {
      ...stale.spec,
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'claim-other' } }],
    };
    const other: PvcView = { ...boundPvc, metadata: { name: 'claim-other' } };
    const d = decide(
      view({
        pods: [launcher, stale],
        pvc: (name) =>
          name === 'claim-other' ? other : name === 'claim-data' ? boundPvc : undefined,
      }),
    );
    expect(d).toMatchObject({ kind: DecisionKind.Wait, reason: 'AttachmentPodNotRunning' });
  });

  it("indexes a VMI's launcher and attachment pods under its namespace and uid, no other pod", () => {
    const key = vmiPodsKey('ns-a', vmiUID);
    expect(vmiKeyOfPod(launcher)).toBe(key);
    expect(vmiKeyOfPod(attachment())).toBe(key);
    // The same labels in another namespace: another key (decide would refuse them anyway).
    expect(vmiKeyOfPod(elsewhere(launcher))).toBe(vmiPodsKey('ns-b', vmiUID));
    // An attachment pod's owner is its annotation; the created-by label does not make one.
    const unowned = attachment();
    unowned.metadata = {
      ...unowned.metadata,
      labels: { 'kubevirt.io': 'hotplug-disk', 'kubevirt.io/created-by': vmiUID },
      annotations: {},
    };
    expect(vmiKeyOfPod(unowned)).toBeUndefined();
    const other: PodView = {
      metadata: { name: 'web', namespace: 'ns-a', labels: { 'kubevirt.io/created-by': vmiUID } },
    };
    expect(vmiKeyOfPod(other)).toBeUndefined();
  });
});

describe('wantedVolumes', () => {
  it('keeps spec volumes and volumes with a status target of VMIs on this node only', () => {
    const here = vmi(['a'], {
      volumeStatus: [
        { name: 'b', target: 'sdb' },
        { name: 'c', target: '' },
      ],
    });
    const elsewhere = {
      ...vmi(['z']),
      metadata: { uid: randomUUID() },
      status: { nodeName: 'node-b' },
    };
    const wanted = wantedVolumes([here, elsewhere], NODE, []);
    expect([...wanted.keys()]).toEqual([vmiUID]);
    expect([...wanted.get(vmiUID)!].sort()).toEqual(['a', 'b']);
  });
});

describe('parseConfig', () => {
  const env = {
    NATS_URL: 'nats://127.0.0.1:4333,nats://127.0.0.1:4334',
    KUBECONFIG: '/tmp/kubeconfig',
    NODE_NAME: NODE,
    KUBELET_ROOT: '/var/lib/kubelet',
    PLUGLINE_STATE_DIR: '/var/lib/plugline/node-mounter',
  };

  it('applies defaults and freezes', () => {
    const config = parseConfig(env);
    expect(config).toMatchObject({
      natsUrls: ['nats://127.0.0.1:4333', 'nats://127.0.0.1:4334'],
      logLevel: 'info',
      healthPort: 0,
      healthHost: '127.0.0.1',
      concurrency: 32,
      streamReplicas: 1,
      ackWaitMs: 30_000,
      deviceCgroupRoot: undefined,
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it.each([
    ['NODE_NAME', { NODE_NAME: undefined }],
    ['NODE_NAME', { NODE_NAME: 'Bad_Node' }],
    ['KUBELET_ROOT', { KUBELET_ROOT: 'relative/root' }],
    ['PLUGLINE_STATE_DIR', { PLUGLINE_STATE_DIR: undefined }],
    ['PLUGLINE_DEVICE_CGROUP_ROOT', { PLUGLINE_DEVICE_CGROUP_ROOT: 'sys/fs/cgroup' }],
    ['NATS_URL', { NATS_URL: ' ' }],
    ['PLUGLINE_CONCURRENCY', { PLUGLINE_CONCURRENCY: '0' }],
    ['LOG_LEVEL', { LOG_LEVEL: 'loud' }],
  ])('fails fast naming %s', (field, overrides) => {
    let error: unknown;
    try {
      parseConfig({ ...env, ...overrides });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).field).toBe(field);
  });
});
