import type { VirtualMachineInstance, VolumeStatus } from '@plugline/contracts';
import type { AttachmentVolume, Observation, PersistentVolumeClaim, Pod } from '../src/index.js';
import { buildAttachmentPod } from '../src/index.js';

export const NS = 'namespace-with-a-rather-long-name-for-tests';
export const NODE = 'node-with-a-long-name-a';

export type VmiOption = (vmi: VirtualMachineInstance) => void;
export function vmi(...options: VmiOption[]): VirtualMachineInstance {
  const v: VirtualMachineInstance = {
    metadata: {
      name: 'virtual-machine-instance-with-a-long-name-0123456789',
      namespace: NS,
      uid: '6f1c2a3e-7b4d-4e8f-9a0b-1c2d3e4f5a6b',
    },
    spec: { domain: { devices: { disks: [] } }, volumes: [] },
    status: { phase: 'Running', nodeName: NODE, volumeStatus: [] },
  };
  for (const o of options) o(v);
  return v;
}
export const withHotplugPVC =
  (name: string): VmiOption =>
  (v) => {
    v.spec.volumes!.push({
      name,
      persistentVolumeClaim: { claimName: `claim-${name}`, hotpluggable: true },
    });
    v.spec.domain.devices.disks!.push({ name, disk: { bus: 'scsi' } });
  };
export const withVolumeStatus =
  (s: VolumeStatus): VmiOption =>
  (v) => {
    v.status!.volumeStatus = [...v.status!.volumeStatus!.filter((x) => x.name !== s.name), s];
  };

export function launcher(extra: Partial<NonNullable<Pod['spec']>> = {}): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'virt-launcher-vm-abcde', namespace: NS, uid: 'launcher-uid-1' },
    spec: {
      nodeName: NODE,
      containers: [{ name: 'compute', image: 'quay.io/kubevirt/virt-launcher:v1.6.0' }],
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'vms', effect: 'NoSchedule' }],
      ...extra,
    },
    status: { phase: 'Running' },
  };
}

export const fsVolume = (name: string): AttachmentVolume => ({
  name,
  claimName: `claim-${name}`,
  mode: 'Filesystem',
});
export const blockVolume = (name: string): AttachmentVolume => ({
  name,
  claimName: `claim-${name}`,
  mode: 'Block',
  pvcUID: `pvc-uid-${name}`,
});

/** An attachment pod for `volumes` as the API server would show it, in `phase`. */
export function attachmentPod(
  v: VirtualMachineInstance,
  volumes: AttachmentVolume[],
  phase: 'Pending' | 'Running',
  uid = `uid-${volumes.map((x) => x.name).join('-')}`,
): Pod {
  const pod = buildAttachmentPod({ vmi: v, launcherPod: launcher(), volumes });
  pod.metadata.uid = uid;
  pod.spec!.nodeName = NODE;
  pod.status =
    phase === 'Running'
      ? { phase, containerStatuses: [{ name: 'hotplug-disk', ready: true }] }
      : { phase };
  return pod;
}

/** A Filesystem claim, Bound. */
export function boundPvc(name: string): PersistentVolumeClaim {
  return {
    metadata: { name, uid: `uid-${name}` },
    spec: { volumeMode: 'Filesystem', accessModes: ['ReadWriteOnce'] },
    status: { phase: 'Bound' },
  };
}

/**
 * What the caches show for `v`: its launcher, no attachment pod, and the claims of the volumes
 * `bound` (`claim-<volume>`) Bound; `overrides` replaces any of it.
 */
export function observed(
  v: VirtualMachineInstance,
  bound: readonly string[],
  overrides: Partial<Observation> = {},
): Observation {
  const claims = bound.map((volume) => `claim-${volume}`);
  return {
    vmi: v,
    launcher: launcher(),
    pods: [],
    pvcs: Object.fromEntries(claims.map((claim) => [claim, boundPvc(claim)])),
    dataVolumes: {},
    ...overrides,
  };
}
