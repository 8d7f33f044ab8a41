import type { PersistentVolumeClaimInfo } from '@plugline/contracts';
import type { VolumeMode } from './pod.js';
import { PhaseMessage, Reason, VolumePhase } from '@plugline/contracts';

/** The PVC fields readiness depends on (core/v1 names). */
export interface PersistentVolumeClaim {
  metadata: { name?: string; uid?: string; annotations?: Record<string, string> };
  spec?: {
    accessModes?: string[];
    volumeMode?: VolumeMode;
    storageClassName?: string;
    resources?: { requests?: Record<string, string> };
  };
  status?: {
    phase?: 'Pending' | 'Bound' | 'Lost';
    capacity?: Record<string, string>;
    accessModes?: string[];
  };
}

/** The DataVolume fields readiness depends on (cdi.kubevirt.io/v1beta1). */
export interface DataVolume {
  metadata: { name?: string };
  status?: { phase?: string; progress?: string };
}

export const DataVolumePhase = {
  Succeeded: 'Succeeded',
  PendingPopulation: 'PendingPopulation',
  WaitForFirstConsumer: 'WaitForFirstConsumer',
} as const;

export type PvcReadiness =
  | {
      ready: true;
      mode: VolumeMode;
      pvcUID?: string;
      claimInfo: PersistentVolumeClaimInfo;
      /** The PVC binds only once a pod uses it: the attachment pod is its first consumer. */
      waitForFirstConsumer: boolean;
    }
  | {
      ready: false;
      phase: typeof VolumePhase.Pending;
      reason: typeof Reason.FailedPvcNotFound | typeof Reason.PVCNotReady;
      message: string;
    };

export interface PvcReadinessInput {
  claimName: string;
  pvc: PersistentVolumeClaim | undefined;
  dataVolume?: DataVolume;
  /** `volumeBindingMode` of the PVC's StorageClass, when known. */
  bindingMode?: 'Immediate' | 'WaitForFirstConsumer';
}

/** CDI's `IsSucceededOrPendingPopulation`: the DataVolume's data is there, or waits for a consumer. */
export function isSucceededOrPendingPopulation(dv: DataVolume | undefined): boolean {
  const phase = dv?.status?.phase;
  return (
    dv === undefined ||
    phase === DataVolumePhase.Succeeded ||
    phase === DataVolumePhase.PendingPopulation ||
    phase === DataVolumePhase.WaitForFirstConsumer
  );
}

function claimInfoOf(claimName: string, pvc: PersistentVolumeClaim): PersistentVolumeClaimInfo {
  const info: PersistentVolumeClaimInfo = {
    claimName,
    volumeMode: pvc.spec?.volumeMode ?? 'Filesystem',
  };
  const accessModes = pvc.status?.accessModes ?? pvc.spec?.accessModes;
  if (accessModes !== undefined) info.accessModes = [...accessModes];
  if (pvc.status?.capacity !== undefined) info.capacity = { ...pvc.status.capacity };
  if (pvc.spec?.resources?.requests !== undefined)
    info.requests = { ...pvc.spec.resources.requests };
  return info;
}

function dataVolumeMessage(claimName: string, dv: DataVolume | undefined): string {
  const progress = dv?.status?.progress;
  const suffix = progress === undefined ? '' : ` (${progress})`;
  return `DataVolume ${dv?.metadata.name ?? claimName} is in phase ${dv?.status?.phase ?? 'Pending'}${suffix}`;
}

/**
 * Whether a hotplug volume's claim can go on an attachment pod (KubeVirt `watch/vmi/storage.go`):
 * the PVC exists and is Bound (or is waiting for its first consumer, which the attachment pod
 * will be), and its DataVolume, if any, passes `IsSucceededOrPendingPopulation`. Otherwise the
 * volume stays `Pending` with KubeVirt's reason and message.
 */
export function pvcReadiness(input: PvcReadinessInput): PvcReadiness {
  const { claimName, pvc, dataVolume } = input;
  if (pvc === undefined) {
    return {
      ready: false,
      phase: VolumePhase.Pending,
      reason: Reason.FailedPvcNotFound,
      message: PhaseMessage.pvcNotFound(claimName),
    };
  }
  const pvcPhase = pvc.status?.phase ?? 'Pending';
  const dvWaits =
    dataVolume?.status?.phase === DataVolumePhase.WaitForFirstConsumer ||
    dataVolume?.status?.phase === DataVolumePhase.PendingPopulation;
  const waitForFirstConsumer =
    pvcPhase === 'Pending' && (input.bindingMode === 'WaitForFirstConsumer' || dvWaits);
  if (pvcPhase !== 'Bound' && !waitForFirstConsumer) {
    return {
      ready: false,
      phase: VolumePhase.Pending,
      reason: Reason.PVCNotReady,
      message: PhaseMessage.pvcInPhase(pvcPhase),
    };
  }
  if (!isSucceededOrPendingPopulation(dataVolume)) {
    return {
      ready: false,
      phase: VolumePhase.Pending,
      reason: Reason.PVCNotReady,
      message: dataVolumeMessage(claimName, dataVolume),
    };
  }
  const ready: PvcReadiness = {
    ready: true,
    mode: pvc.spec?.volumeMode === 'Block' ? 'Block' : 'Filesystem',
    claimInfo: claimInfoOf(claimName, pvc),
    waitForFirstConsumer,
  };
  if (pvc.metadata.uid !== undefined) ready.pvcUID = pvc.metadata.uid;
  return ready;
}
