/**
 * The subset of KubeVirt's `kubevirt.io/v1` API that the hotplug chain reads and writes.
 * Field names are exactly KubeVirt's (staging/src/kubevirt.io/api/core/v1/types.go, schema.go).
 */

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export const DiskBus = { Scsi: 'scsi', Virtio: 'virtio', Sata: 'sata', Usb: 'usb' } as const;
export type DiskBus = (typeof DiskBus)[keyof typeof DiskBus];

/** Buses a hotplugged disk may use (`ValidateHotplugDiskConfiguration`). */
export const HOTPLUG_DISK_BUSES: readonly DiskBus[] = [DiskBus.Scsi, DiskBus.Virtio];
/** Buses a hotplugged LUN may use. */
export const HOTPLUG_LUN_BUSES: readonly DiskBus[] = [DiskBus.Scsi];

export const DriverCache = {
  None: 'none',
  WriteThrough: 'writethrough',
  WriteBack: 'writeback',
} as const;
export type DriverCache = (typeof DriverCache)[keyof typeof DriverCache];

export const DriverIO = { Native: 'native', Threads: 'threads' } as const;
export type DriverIO = (typeof DriverIO)[keyof typeof DriverIO];

export const DiskErrorPolicy = {
  Stop: 'stop',
  Ignore: 'ignore',
  Report: 'report',
  Enospace: 'enospace',
} as const;
export type DiskErrorPolicy = (typeof DiskErrorPolicy)[keyof typeof DiskErrorPolicy];

export interface DiskTarget {
  bus?: DiskBus;
  readonly?: boolean;
  pciAddress?: string;
}

export interface LunTarget {
  bus?: DiskBus;
  readonly?: boolean;
  reservation?: boolean;
}

export interface CDRomTarget {
  bus?: DiskBus;
  readonly?: boolean;
  tray?: 'open' | 'closed';
}

export interface Disk {
  name: string;
  disk?: DiskTarget;
  lun?: LunTarget;
  cdrom?: CDRomTarget;
  bootOrder?: number;
  serial?: string;
  dedicatedIOThread?: boolean;
  cache?: DriverCache;
  io?: DriverIO;
  errorPolicy?: DiskErrorPolicy;
  shareable?: boolean;
  tag?: string;
}

export interface PersistentVolumeClaimVolumeSource {
  claimName: string;
  readOnly?: boolean;
  hotpluggable?: boolean;
}

export interface DataVolumeSource {
  name: string;
  hotpluggable?: boolean;
}

/** A VMI/VM spec volume. Only the sources hotplug deals with are typed; others pass through. */
export interface Volume {
  name: string;
  persistentVolumeClaim?: PersistentVolumeClaimVolumeSource;
  dataVolume?: DataVolumeSource;
  [otherSource: string]: unknown;
}

/** The volume source of an add request. */
export interface HotplugVolumeSource {
  persistentVolumeClaim?: PersistentVolumeClaimVolumeSource;
  dataVolume?: DataVolumeSource;
}

/** Body of `PUT .../addvolume`. */
export interface AddVolumeOptions {
  name: string;
  disk: Disk;
  volumeSource: HotplugVolumeSource;
  dryRun?: string[];
}

/** Body of `PUT .../removevolume`. */
export interface RemoveVolumeOptions {
  name: string;
  dryRun?: string[];
}

export const PersistentVolumeMode = {
  Block: 'Block',
  Filesystem: 'Filesystem',
  FromStorageProfile: 'FromStorageProfile',
} as const;
export type PersistentVolumeMode = (typeof PersistentVolumeMode)[keyof typeof PersistentVolumeMode];

export interface PersistentVolumeClaimInfo {
  claimName?: string;
  accessModes?: string[];
  volumeMode?: PersistentVolumeMode;
  capacity?: Record<string, string>;
  requests?: Record<string, string>;
  preallocated?: boolean;
  filesystemOverhead?: string;
}

export interface HotplugVolumeStatus {
  attachPodName?: string;
  attachPodUID?: string;
}

/** One entry of `vmi.status.volumeStatus`. KubeVirt's schema requires `name` and `target` (may be ""). */
export interface VolumeStatus {
  name: string;
  target: string;
  phase?: string;
  reason?: string;
  message?: string;
  persistentVolumeClaimInfo?: PersistentVolumeClaimInfo;
  hotplugVolume?: HotplugVolumeStatus;
  size?: number;
}

export interface VirtualMachineInstanceSpec {
  domain: {
    devices: {
      disks?: Disk[];
      [other: string]: unknown;
    };
    [other: string]: unknown;
  };
  volumes?: Volume[];
  nodeSelector?: Record<string, string>;
  [other: string]: unknown;
}

export const VirtualMachineInstancePhase = {
  Pending: 'Pending',
  Scheduling: 'Scheduling',
  Scheduled: 'Scheduled',
  Running: 'Running',
  Succeeded: 'Succeeded',
  Failed: 'Failed',
  Unknown: 'Unknown',
} as const;
export type VirtualMachineInstancePhase =
  (typeof VirtualMachineInstancePhase)[keyof typeof VirtualMachineInstancePhase];

export interface VirtualMachineInstanceStatus {
  phase?: VirtualMachineInstancePhase;
  nodeName?: string;
  volumeStatus?: VolumeStatus[];
  activePods?: Record<string, string>;
  [other: string]: unknown;
}

export interface VirtualMachineInstance {
  apiVersion?: 'kubevirt.io/v1';
  kind?: 'VirtualMachineInstance';
  metadata: ObjectMeta;
  spec: VirtualMachineInstanceSpec;
  status?: VirtualMachineInstanceStatus;
}

export interface VirtualMachineSpec {
  running?: boolean;
  runStrategy?: string;
  template: {
    metadata?: ObjectMeta;
    spec: VirtualMachineInstanceSpec;
  };
  dataVolumeTemplates?: unknown[];
  [other: string]: unknown;
}

export interface VirtualMachine {
  apiVersion?: 'kubevirt.io/v1';
  kind?: 'VirtualMachine';
  metadata: ObjectMeta;
  spec: VirtualMachineSpec;
  status?: Record<string, unknown>;
}

export const KUBEVIRT_GROUP = 'kubevirt.io';
export const KUBEVIRT_VERSION = 'v1';
export const CDI_GROUP = 'cdi.kubevirt.io';
export const CDI_VERSION = 'v1beta1';

/** Labels and annotations KubeVirt puts on pods. */
export const KubevirtLabel = {
  /** `kubevirt.io: virt-launcher` on launcher pods, `kubevirt.io: hotplug-disk` on attachment pods. */
  App: 'kubevirt.io',
  CreatedBy: 'kubevirt.io/created-by',
  OwnerVmiName: 'kubevirt.io/owner-vmi-name',
  OwnerVmiUid: 'kubevirt.io/owner-vmi-uid',
  /** On a VMI, the node it runs on: set by virt-controller once it is scheduled, and what node
   * agents select their VMIs by (`v1.NodeNameLabel`). */
  NodeName: 'kubevirt.io/nodeName',
} as const;

export const LAUNCHER_LABEL_VALUE = 'virt-launcher';
export const HOTPLUG_DISK_LABEL_VALUE = 'hotplug-disk';
/**
 * The uid of the VMI a launcher pod (label `created-by`) or an attachment pod (annotation
 * `owner-vmi-uid`) belongs to; undefined for any other pod.
 */
export function vmiUidOfPod(pod: {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
}): string | undefined {
  const app = pod.metadata?.labels?.[KubevirtLabel.App];
  if (app === LAUNCHER_LABEL_VALUE) return pod.metadata?.labels?.[KubevirtLabel.CreatedBy];
  if (app === HOTPLUG_DISK_LABEL_VALUE)
    return pod.metadata?.annotations?.[KubevirtLabel.OwnerVmiUid];
  return undefined;
}

/** The launcher's emptyDir that hotplugged disks appear in. */
export const HOTPLUG_DISKS_VOLUME = 'hotplug-disks';
/** The attachment pods' name prefix. */
export const ATTACHMENT_POD_PREFIX = 'hp-volume-';

/** The PVC claim name a hotplug volume refers to (a DataVolume's PVC has the DataVolume's name). */
export function claimNameOf(volume: Volume): string | undefined {
  return volume.persistentVolumeClaim?.claimName ?? volume.dataVolume?.name;
}

/** A spec volume is hotpluggable when its PVC or DataVolume source says so. */
export function isHotpluggable(volume: Volume): boolean {
  return (
    volume.persistentVolumeClaim?.hotpluggable === true || volume.dataVolume?.hotpluggable === true
  );
}
