import { Pod as K8sPod } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { AttachmentPodError, attachmentPodName, buildAttachmentPod } from '../src/index.js';
import { blockVolume, fsVolume, launcher, NODE, NS, vmi } from './fixtures.js';

describe('attachmentPodName', () => {
  it('is deterministic over the volume set and a DNS-1123 label', () => {
    const v = vmi();
    const a = attachmentPodName(v, ['b', 'a']);
    expect(a).toBe(attachmentPodName(v, ['a', 'b', 'a']));
    expect(a).not.toBe(attachmentPodName(v, ['a']));
    expect(a).not.toBe(
      attachmentPodName(
        vmi((x) => (x.metadata.uid = 'other')),
        ['a', 'b'],
      ),
    );
    expect(a).toMatch(/^hp-volume-[0-9a-f]{10}$/);
    expect(a.length).toBeLessThanOrEqual(63);
  });
});

describe('buildAttachmentPod', () => {
  const v = vmi();
  const pod = buildAttachmentPod({
    vmi: v,
    launcherPod: launcher(),
    volumes: [fsVolume('fs1'), blockVolume('blk1')],
  });
  const container = pod.spec!.containers[0]!;

  it('validates against the Kubernetes Pod schema', () => {
    expect(() => new K8sPod(pod as never).validate()).not.toThrow();
  });

  it.each([
    ['name', pod.metadata.name, attachmentPodName(v, ['fs1', 'blk1'])],
    ['namespace', pod.metadata.namespace, NS],
    ['labels', pod.metadata.labels, { 'kubevirt.io': 'hotplug-disk' }],
    [
      'annotations',
      pod.metadata.annotations,
      {
        'kubevirt.io/owner-vmi-name': v.metadata.name,
        'kubevirt.io/owner-vmi-uid': v.metadata.uid,
      },
    ],
    [
      'ownerReferences',
      pod.metadata.ownerReferences,
      [
        {
          apiVersion: 'v1',
          kind: 'Pod',
          name: 'virt-launcher-vm-abcde',
          uid: 'launcher-uid-1',
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    ],
    [
      'nodeAffinity',
      pod.spec!.affinity,
      {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              {
                matchExpressions: [
                  { key: 'kubernetes.io/hostname', operator: 'In', values: [NODE] },
                ],
              },
            ],
          },
        },
      },
    ],
    [
      'tolerations',
      pod.spec!.tolerations!.map((t) => t.key),
      [
        'node.kubernetes.io/unschedulable',
        'node.kubernetes.io/network-unavailable',
        'node.kubernetes.io/disk-pressure',
        'node.kubernetes.io/memory-pressure',
        'node.kubernetes.io/pid-pressure',
        'dedicated',
      ],
    ],
    ['terminationGracePeriodSeconds', pod.spec!.terminationGracePeriodSeconds, 0],
    ['priorityClassName', pod.spec!.priorityClassName, undefined],
    ['container name', container.name, 'hotplug-disk'],
    ['image', container.image, 'quay.io/kubevirt/virt-launcher:v1.6.0'],
    ['command', container.command, ['/usr/bin/container-disk', '--copy-path', '/path/hp']],
    [
      'resources',
      container.resources,
      { requests: { cpu: '10m', memory: '2M' }, limits: { cpu: '100m', memory: '80M' } },
    ],
    [
      'securityContext',
      container.securityContext,
      {
        runAsUser: 107,
        runAsNonRoot: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
        seccompProfile: { type: 'RuntimeDefault' },
      },
    ],
    [
      'volumeMounts',
      container.volumeMounts,
      [
        { name: 'hotplug-disks', mountPath: '/path', mountPropagation: 'HostToContainer' },
        { name: 'fs1', mountPath: '/fs1' },
      ],
    ],
    [
      'volumeDevices',
      container.volumeDevices,
      [{ name: 'blk1', devicePath: '/path/blk1/pvc-uid-blk1' }],
    ],
    [
      'volumes',
      pod.spec!.volumes,
      [
        { name: 'hotplug-disks', emptyDir: {} },
        { name: 'blk1', persistentVolumeClaim: { claimName: 'claim-blk1' } },
        { name: 'fs1', persistentVolumeClaim: { claimName: 'claim-fs1' } },
      ],
    ],
  ])('%s', (_field, actual, expected) => {
    expect(actual).toEqual(expected);
  });

  it('takes image and resources overrides, omits mounts of mounted filesystem volumes', () => {
    const p = buildAttachmentPod({
      vmi: v,
      launcherPod: launcher(),
      volumes: [{ ...fsVolume('fs1'), mounted: true }],
      image: 'example/img:1',
      resources: { requests: { cpu: '1m', memory: '1M' }, limits: { cpu: '2m', memory: '2M' } },
    });
    expect(p.spec!.containers[0]!.image).toBe('example/img:1');
    expect(p.spec!.containers[0]!.resources?.limits.cpu).toBe('2m');
    expect(p.spec!.containers[0]!.volumeMounts).toHaveLength(1);
    expect(p.spec!.volumes).toHaveLength(2);
  });

  it.each([
    ['an unscheduled launcher', { launcherPod: launcher({ nodeName: undefined }) }],
    ['a reserved volume name', { volumes: [fsVolume('hotplug-disks')] }],
  ])('refuses %s', (_what, override) => {
    expect(() =>
      buildAttachmentPod({
        vmi: v,
        launcherPod: launcher(),
        volumes: [fsVolume('a')],
        ...override,
      }),
    ).toThrow(AttachmentPodError);
  });
});

describe('the schema check itself', () => {
  it('rejects a malformed pod', () => {
    const bad = buildAttachmentPod({
      vmi: vmi(),
      launcherPod: launcher(),
      volumes: [fsVolume('a')],
    });
    (bad.spec!.containers[0] as { name?: unknown }).name = 42;
    expect(() => new K8sPod(bad as never).validate()).toThrow();
  });
});
