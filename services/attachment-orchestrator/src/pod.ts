import { createHash } from 'node:crypto';
import type { ObjectMeta, VirtualMachineInstance } from '@plugline/contracts';
import {
  ATTACHMENT_POD_PREFIX,
  HOTPLUG_DISK_LABEL_VALUE,
  HOTPLUG_DISKS_VOLUME,
  KubevirtLabel,
  PluglineError,
} from '@plugline/contracts';

/** The Pod fields this service reads and writes (core/v1 names). */
export interface Toleration {
  key?: string;
  operator?: 'Exists' | 'Equal';
  value?: string;
  effect?: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';
  tolerationSeconds?: number;
}

export interface ResourceRequirements {
  requests: Record<string, string>;
  limits: Record<string, string>;
}

export interface PodContainer {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  resources?: ResourceRequirements;
  securityContext?: Record<string, unknown>;
  volumeMounts?: Array<{ name: string; mountPath: string; mountPropagation?: string }>;
  volumeDevices?: Array<{ name: string; devicePath: string }>;
}

export interface PodVolume {
  name: string;
  emptyDir?: Record<string, unknown>;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
}

export interface Pod {
  apiVersion?: 'v1';
  kind?: 'Pod';
  metadata: ObjectMeta;
  spec?: {
    nodeName?: string;
    containers: PodContainer[];
    volumes?: PodVolume[];
    tolerations?: Toleration[];
    affinity?: Record<string, unknown>;
    securityContext?: Record<string, unknown>;
    terminationGracePeriodSeconds?: number;
    [other: string]: unknown;
  };
  status?: {
    phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
    conditions?: Array<{ type: string; status: string }>;
    containerStatuses?: Array<{ name: string; ready: boolean }>;
  };
}

export type VolumeMode = 'Block' | 'Filesystem';

/** A volume the attachment pod carries. */
export interface AttachmentVolume {
  /** The VMI volume name (also the pod volume's name). */
  name: string;
  claimName: string;
  mode: VolumeMode;
  /** The PVC's UID; a block device appears at `/path/<name>/<pvcUID>` (the claim name if unknown). */
  pvcUID?: string;
  readOnly?: boolean;
  /** Already mounted into the launcher: a filesystem volume gets no volumeMount (KubeVirt). */
  mounted?: boolean;
}

export interface AttachmentPodInput {
  vmi: VirtualMachineInstance;
  launcherPod: Pod;
  volumes: readonly AttachmentVolume[];
  /** Defaults to the launcher's `compute` container image. */
  image?: string;
  /** `supportContainerResources` of type `hotplug-disk`; defaults to KubeVirt's. */
  resources?: ResourceRequirements;
}

export class AttachmentPodError extends PluglineError {
  override name = 'AttachmentPodError';
  constructor(message: string, options?: ErrorOptions) {
    super('InvalidAttachmentPod', message, options);
  }
}

export const HOTPLUG_CONTAINER_NAME = 'hotplug-disk';
export const HOTPLUG_MOUNT_PATH = '/path';
export const HOTPLUG_COMMAND: readonly string[] = [
  '/usr/bin/container-disk',
  '--copy-path',
  '/path/hp',
];
export const HOTPLUG_RUN_AS_USER = 107;
export const DEFAULT_HOTPLUG_RESOURCES: Readonly<ResourceRequirements> = Object.freeze({
  requests: { cpu: '10m', memory: '2M' },
  limits: { cpu: '100m', memory: '80M' },
});
/** Tolerations every attachment pod carries (plus the launcher's own, KubeVirt #14661). */
export const ATTACHMENT_POD_TOLERATIONS: readonly Toleration[] = [
  'node.kubernetes.io/unschedulable',
  'node.kubernetes.io/network-unavailable',
  'node.kubernetes.io/disk-pressure',
  'node.kubernetes.io/memory-pressure',
  'node.kubernetes.io/pid-pressure',
].map((key) => ({ key, operator: 'Exists' as const, effect: 'NoSchedule' as const }));

const HASH_LENGTH = 10;

/**
 * The attachment pod's deterministic name: `hp-volume-` + a short hash of the VMI's UID and the
 * sorted volume set. Two replicas planning the same set name the same pod, so the loser's create
 * is a harmless AlreadyExists. Always a DNS-1123 label of 20 characters.
 */
export function attachmentPodName(
  vmi: VirtualMachineInstance,
  volumeNames: readonly string[],
): string {
  const set = [...new Set(volumeNames)].sort();
  const digest = createHash('sha256')
    .update(`${vmi.metadata.uid ?? ''}\n${set.join('\n')}`)
    .digest('hex');
  return `${ATTACHMENT_POD_PREFIX}${digest.slice(0, HASH_LENGTH)}`;
}

function tolerationsFor(launcher: Pod): Toleration[] {
  const all = [...ATTACHMENT_POD_TOLERATIONS, ...(launcher.spec?.tolerations ?? [])];
  const seen = new Set<string>();
  return all.filter((t) => {
    const key = JSON.stringify([t.key, t.operator, t.value, t.effect, t.tolerationSeconds]);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function imageOf(launcher: Pod): string | undefined {
  const containers = launcher.spec?.containers ?? [];
  return (containers.find((c) => c.name === 'compute') ?? containers[0])?.image;
}

function checkInput(input: AttachmentPodInput): { node: string; image: string } {
  const node = input.launcherPod.spec?.nodeName;
  if (node === undefined || node === '')
    throw new AttachmentPodError('the launcher pod is not scheduled to a node');
  if (input.launcherPod.metadata.uid === undefined || input.launcherPod.metadata.name === undefined)
    throw new AttachmentPodError('the launcher pod has no name or uid');
  const image = input.image ?? imageOf(input.launcherPod);
  if (image === undefined) throw new AttachmentPodError('no image for the hotplug-disk container');
  for (const v of input.volumes) {
    if (v.name === HOTPLUG_DISKS_VOLUME)
      throw new AttachmentPodError(`volume name ${v.name} is reserved`);
  }
  return { node, image };
}

/**
 * The attachment pod KubeVirt's virt-controller renders (`services/template.go`): it holds the
 * PVCs on the launcher's node so kubelet attaches them there; block PVCs as `volumeDevices`,
 * filesystem PVCs as `volumeMounts`. Pure: builds the object, creates nothing.
 */
export function buildAttachmentPod(input: AttachmentPodInput): Pod {
  const { vmi, launcherPod, volumes } = input;
  const { node, image } = checkInput(input);
  const resources = structuredClone(input.resources ?? DEFAULT_HOTPLUG_RESOURCES);
  const volumeMounts: NonNullable<PodContainer['volumeMounts']> = [
    {
      name: HOTPLUG_DISKS_VOLUME,
      mountPath: HOTPLUG_MOUNT_PATH,
      mountPropagation: 'HostToContainer',
    },
  ];
  const volumeDevices: NonNullable<PodContainer['volumeDevices']> = [];
  const podVolumes: PodVolume[] = [{ name: HOTPLUG_DISKS_VOLUME, emptyDir: {} }];
  for (const v of [...volumes].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const claim: { claimName: string; readOnly?: boolean } = { claimName: v.claimName };
    if (v.readOnly === true) claim.readOnly = true;
    podVolumes.push({ name: v.name, persistentVolumeClaim: claim });
    if (v.mode === 'Block') {
      volumeDevices.push({
        name: v.name,
        devicePath: `${HOTPLUG_MOUNT_PATH}/${v.name}/${v.pvcUID ?? v.claimName}`,
      });
    } else if (v.mounted !== true) {
      volumeMounts.push({ name: v.name, mountPath: `/${v.name}` });
    }
  }
  const container: PodContainer = {
    name: HOTPLUG_CONTAINER_NAME,
    image,
    command: [...HOTPLUG_COMMAND],
    resources,
    securityContext: {
      runAsUser: HOTPLUG_RUN_AS_USER,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts,
  };
  if (volumeDevices.length > 0) container.volumeDevices = volumeDevices;
  const seLinuxLevel = (
    launcherPod.spec?.securityContext?.seLinuxOptions as { level?: string } | undefined
  )?.level;
  if (seLinuxLevel !== undefined)
    container.securityContext = {
      ...container.securityContext,
      seLinuxOptions: { level: seLinuxLevel },
    };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: attachmentPodName(
        vmi,
        volumes.map((v) => v.name),
      ),
      namespace: vmi.metadata.namespace ?? launcherPod.metadata.namespace ?? 'default',
      labels: { [KubevirtLabel.App]: HOTPLUG_DISK_LABEL_VALUE },
      annotations: {
        [KubevirtLabel.OwnerVmiName]: vmi.metadata.name ?? '',
        [KubevirtLabel.OwnerVmiUid]: vmi.metadata.uid ?? '',
      },
      ownerReferences: [
        {
          apiVersion: 'v1',
          kind: 'Pod',
          name: launcherPod.metadata.name as string,
          uid: launcherPod.metadata.uid as string,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              {
                matchExpressions: [
                  { key: 'kubernetes.io/hostname', operator: 'In', values: [node] },
                ],
              },
            ],
          },
        },
      },
      tolerations: tolerationsFor(launcherPod),
      terminationGracePeriodSeconds: 0,
      containers: [container],
      volumes: podVolumes,
    },
  };
}

/** The VMI volume names an attachment pod carries (its PVC-backed pod volumes). */
export function volumesOfPod(pod: Pod): string[] {
  return (pod.spec?.volumes ?? [])
    .filter((v) => v.persistentVolumeClaim !== undefined)
    .map((v) => v.name)
    .sort();
}

/** Running with its container ready: only then may the volumes be reported attached. */
export function isPodRunningAndReady(pod: Pod): boolean {
  if (pod.status?.phase !== 'Running') return false;
  const statuses = pod.status.containerStatuses ?? [];
  return statuses.length > 0 && statuses.every((s) => s.ready);
}
