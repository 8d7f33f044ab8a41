import type {
  Disk,
  EventType,
  OperationKind,
  VirtualMachine,
  VirtualMachineInstance,
  VolumeEvent,
  VolumeStatus,
  VirtualMachineInstancePhase,
  EventData,
} from '@plugline/contracts';
import { Stage, buildEvent } from '@plugline/contracts';

/** Deliberately long names, so length limits and truncation bugs show up. */
export const NS = 'namespace-with-a-rather-long-name-for-tests';
export const VMI_NAME = 'virtual-machine-instance-with-a-long-name-0123456789';
export const VMI_UID = '6f1c2a3e-7b4d-4e8f-9a0b-1c2d3e4f5a6b';

export type VmiOption = (vmi: VirtualMachineInstance) => void;

/** `vmi(withHotplugPVC('d1'), withPhase('Running'))` */
export function vmi(...options: VmiOption[]): VirtualMachineInstance {
  const base: VirtualMachineInstance = {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: {
      name: VMI_NAME,
      namespace: NS,
      uid: VMI_UID,
      generation: 3,
      resourceVersion: '100',
    },
    spec: {
      domain: { devices: { disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }] } },
      volumes: [{ name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/fedora' } }],
    },
    status: {
      phase: 'Running',
      nodeName: 'node-with-a-long-name-a',
      volumeStatus: [{ name: 'rootdisk', target: 'vda', phase: 'Ready' }],
    },
  };
  for (const option of options) option(base);
  return base;
}

export const hotplugDisk = (name: string, bus: 'scsi' | 'virtio' = 'scsi'): Disk => ({
  name,
  disk: { bus },
  serial: name,
});

export function withHotplugPVC(name: string, claimName = `claim-${name}`): VmiOption {
  return (v) => {
    (v.spec.volumes ??= []).push({
      name,
      persistentVolumeClaim: { claimName, hotpluggable: true },
    });
    (v.spec.domain.devices.disks ??= []).push(hotplugDisk(name));
  };
}

export function withHotplugDV(name: string, dvName = `dv-${name}`): VmiOption {
  return (v) => {
    (v.spec.volumes ??= []).push({ name, dataVolume: { name: dvName, hotpluggable: true } });
    (v.spec.domain.devices.disks ??= []).push(hotplugDisk(name));
  };
}

export function withPermanentPVC(name: string): VmiOption {
  return (v) => {
    (v.spec.volumes ??= []).push({ name, persistentVolumeClaim: { claimName: `claim-${name}` } });
    (v.spec.domain.devices.disks ??= []).push({ name, disk: { bus: 'virtio' } });
    (v.status ??= {}).volumeStatus = [
      ...(v.status?.volumeStatus ?? []),
      { name, target: 'vdb', phase: 'Ready' },
    ];
  };
}

export function withPhase(phase: VirtualMachineInstancePhase): VmiOption {
  return (v) => {
    (v.status ??= {}).phase = phase;
  };
}

export function withVolumeStatus(status: VolumeStatus): VmiOption {
  return (v) => {
    const list = (v.status ??= {}).volumeStatus ?? [];
    v.status.volumeStatus = [...list.filter((s) => s.name !== status.name), status];
  };
}

export function hotplugStatus(
  name: string,
  phase: string | undefined,
  extra: Partial<VolumeStatus> = {},
): VolumeStatus {
  const s: VolumeStatus = {
    name,
    target: '',
    hotplugVolume: { attachPodName: 'hp-volume-abc', attachPodUID: 'pod-uid-1' },
    ...extra,
  };
  if (phase !== undefined) s.phase = phase;
  return s;
}

export function vm(
  template: VirtualMachineInstance,
  extra: Partial<VirtualMachine['spec']> = {},
): VirtualMachine {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachine',
    metadata: { name: VMI_NAME, namespace: NS, uid: 'vm-uid' },
    spec: { runStrategy: 'Always', template: { spec: structuredClone(template.spec) }, ...extra },
  };
}

let seq = 0;
/** A volume event of `type` for `volume` in operation `operationId`. */
export function event(
  type: EventType,
  volume: string,
  operationId: string,
  data: Partial<Omit<EventData, 'stage' | 'operationId'>> = {},
): VolumeEvent {
  seq += 1;
  const operation: OperationKind =
    data.operation ??
    ([
      'unplug-requested',
      'detached-from-domain',
      'unmounted-from-pod',
      'detaching',
      'released',
      'removed',
    ].includes(type)
      ? 'unplug'
      : 'plug');
  return buildEvent({
    namespace: NS,
    vmi: VMI_NAME,
    volume,
    type,
    stage: Stage.SpecWatcher,
    id: `e${seq}`,
    time: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)),
    data: { vmiUID: VMI_UID, ...data, operation, operationId },
  });
}
