/** Fixture builders: functional options over a running VMI / a VM with long, random-looking names. */
import type {
  AddVolumeOptions,
  Disk,
  VirtualMachine,
  VirtualMachineInstance,
  Volume,
} from '../src/index.js';

export type VmiOption = (vmi: VirtualMachineInstance) => void;

export function vmi(...options: VmiOption[]): VirtualMachineInstance {
  const v: VirtualMachineInstance = {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: { name: 'vmi-7f3k2q9x', namespace: 'tenant-a1b2c3', uid: 'b6e0c1e4-0d65-4c1f-9a7e' },
    spec: {
      domain: { devices: { disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }] } },
      volumes: [{ name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/fedora' } }],
    },
    status: { phase: 'Running', nodeName: 'node-01' },
  };
  for (const option of options) option(v);
  return v;
}

export const withPhase =
  (phase: NonNullable<VirtualMachineInstance['status']>['phase']): VmiOption =>
  (v) => {
    v.status = { ...v.status, phase };
  };

export function hotplugPvcVolume(name: string, claimName = name, hotpluggable = true): Volume {
  return { name, persistentVolumeClaim: { claimName, hotpluggable } };
}

export const withVolume =
  (volume: Volume, disk: Disk = { name: volume.name, disk: { bus: 'scsi' } }): VmiOption =>
  (v) => {
    v.spec.volumes = [...(v.spec.volumes ?? []), volume];
    v.spec.domain.devices.disks = [...(v.spec.domain.devices.disks ?? []), disk];
  };

export const withHotplugPVC = (name: string, claimName = name): VmiOption =>
  withVolume(hotplugPvcVolume(name, claimName));

export function vm(...options: VmiOption[]): VirtualMachine {
  const template = vmi(...options);
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachine',
    metadata: { name: 'vm-7f3k2q9x', namespace: 'tenant-a1b2c3' },
    spec: { runStrategy: 'Always', template: { spec: template.spec } },
  };
}

export function addBody(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'data-disk-4k9',
    disk: { disk: { bus: 'scsi' }, serial: 'data-disk-4k9' },
    volumeSource: { persistentVolumeClaim: { claimName: 'pvc-data-4k9' } },
    ...overrides,
  };
}

export function addOptions(name = 'data-disk-4k9', claimName = 'pvc-data-4k9'): AddVolumeOptions {
  return {
    name,
    disk: { name, disk: { bus: 'scsi' }, serial: name },
    volumeSource: { persistentVolumeClaim: { claimName, hotpluggable: true } },
  };
}
