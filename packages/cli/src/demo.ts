/**
 * The objects of a running VM as KubeVirt would have them (a VMI on a node with its launcher
 * pod), PVCs and DataVolumes, created through the Kubernetes API: the embedded default's demo
 * namespace, and what chain tests build their scenarios from.
 */
import { randomBytes } from 'node:crypto';
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import {
  CDI_GROUP,
  CDI_VERSION,
  HOTPLUG_DISKS_VOLUME,
  KUBEVIRT_GROUP,
  KUBEVIRT_VERSION,
  KubevirtLabel,
  LAUNCHER_LABEL_VALUE,
  type VirtualMachineInstance,
} from '@plugline/contracts';

const JSON_PATCH = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

export interface VmiSpecOptions {
  namespace: string;
  name: string;
  node: string;
  /** Milliseconds to wait for the launcher pod to run (default 30 s). */
  timeoutMs?: number;
}

export interface SeededVmi {
  vmi: VirtualMachineInstance;
  launcher: V1Pod;
}

export interface PvcOptions {
  namespace: string;
  name: string;
  mode: 'Filesystem' | 'Block';
  /** Default `1Gi`. */
  size?: string;
  annotations?: Record<string, string>;
}

export interface DataVolumeOptions {
  namespace: string;
  name: string;
  /** How long the simulated import takes (`sim.plugline.io/import-duration-ms`). */
  importMs?: number;
  size?: string;
  mode?: 'Filesystem' | 'Block';
}

function suffix(): string {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join('');
}

async function poll<T>(
  check: () => Promise<T | undefined>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Creates a namespace (nothing when it exists). */
export async function ensureNamespace(kc: KubeConfig, name: string): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  try {
    await core.createNamespace({ body: { metadata: { name } } });
  } catch (err) {
    if ((err as { code?: number }).code !== 409) throw err;
  }
}

/**
 * A running VMI as KubeVirt leaves it: the VMI (a containerDisk root disk, Running on `node`,
 * `activePods` naming its launcher) and the launcher pod (`kubevirt.io: virt-launcher`,
 * `kubevirt.io/created-by: <vmi uid>`, owned by the VMI, with the `hotplug-disks` emptyDir),
 * running on the node through the kubelet simulator.
 */
export async function createRunningVmi(
  kc: KubeConfig,
  options: VmiSpecOptions,
): Promise<SeededVmi> {
  const { namespace, name, node } = options;
  const custom = kc.makeApiClient(CustomObjectsApi);
  const core = kc.makeApiClient(CoreV1Api);
  const vmiRef = {
    group: KUBEVIRT_GROUP,
    version: KUBEVIRT_VERSION,
    plural: 'virtualmachineinstances',
    namespace,
  };
  const created = (await custom.createNamespacedCustomObject({
    ...vmiRef,
    body: {
      apiVersion: `${KUBEVIRT_GROUP}/${KUBEVIRT_VERSION}`,
      kind: 'VirtualMachineInstance',
      // Labelled with its node as virt-controller labels a scheduled VMI.
      metadata: {
        name,
        namespace,
        labels: { 'kubevirt.io/domain': name, [KubevirtLabel.NodeName]: node },
      },
      spec: {
        domain: {
          devices: { disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }] },
          resources: { requests: { memory: '128Mi' } },
        },
        volumes: [
          { name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/alpine:3.20' } },
        ],
      },
    },
  })) as VirtualMachineInstance;
  const uid = created.metadata.uid ?? '';
  const launcher = await core.createNamespacedPod({
    namespace,
    body: {
      metadata: {
        name: `virt-launcher-${name}-${suffix()}`,
        namespace,
        labels: {
          [KubevirtLabel.App]: LAUNCHER_LABEL_VALUE,
          [KubevirtLabel.CreatedBy]: uid,
          'vm.kubevirt.io/name': name,
        },
        annotations: { 'kubevirt.io/domain': name },
        ownerReferences: [
          {
            apiVersion: `${KUBEVIRT_GROUP}/${KUBEVIRT_VERSION}`,
            kind: 'VirtualMachineInstance',
            name,
            uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: {
        nodeName: node,
        containers: [
          {
            name: 'compute',
            image: 'quay.io/kubevirt/virt-launcher:v1.6.0',
            volumeMounts: [
              { name: HOTPLUG_DISKS_VOLUME, mountPath: '/var/run/kubevirt/hotplug-disks' },
            ],
          },
        ],
        volumes: [{ name: HOTPLUG_DISKS_VOLUME, emptyDir: {} }],
      },
    },
  });
  const launcherName = launcher.metadata?.name ?? '';
  const running = await poll(
    async () => {
      const pod = await core.readNamespacedPod({ namespace, name: launcherName });
      return pod.status?.phase === 'Running' ? pod : undefined;
    },
    options.timeoutMs ?? 30_000,
    `launcher pod ${namespace}/${launcherName} to run`,
  );
  const podUid = running.metadata?.uid ?? '';
  const vmi = (await custom.patchNamespacedCustomObjectStatus(
    {
      ...vmiRef,
      name,
      body: [
        {
          op: 'add',
          path: '/status',
          value: {
            phase: 'Running',
            nodeName: node,
            activePods: { [podUid]: node },
            conditions: [{ type: 'Ready', status: 'True' }],
            volumeStatus: [{ name: 'rootdisk', target: 'vda' }],
          },
        },
      ],
    },
    JSON_PATCH,
  )) as VirtualMachineInstance;
  return { vmi, launcher: running };
}

/** A PVC (bound at once by the simulated storage unless annotated otherwise). */
export async function createPvc(kc: KubeConfig, options: PvcOptions): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespacedPersistentVolumeClaim({
    namespace: options.namespace,
    body: {
      metadata: {
        name: options.name,
        namespace: options.namespace,
        ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
      },
      spec: {
        accessModes: ['ReadWriteOnce'],
        volumeMode: options.mode,
        resources: { requests: { storage: options.size ?? '1Gi' } },
      },
    },
  });
}

/** A CDI DataVolume importing from an HTTP source for `importMs`. */
export async function createDataVolume(kc: KubeConfig, options: DataVolumeOptions): Promise<void> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  await custom.createNamespacedCustomObject({
    group: CDI_GROUP,
    version: CDI_VERSION,
    plural: 'datavolumes',
    namespace: options.namespace,
    body: {
      apiVersion: `${CDI_GROUP}/${CDI_VERSION}`,
      kind: 'DataVolume',
      metadata: {
        name: options.name,
        namespace: options.namespace,
        ...(options.importMs === undefined
          ? {}
          : { annotations: { 'sim.plugline.io/import-duration-ms': String(options.importMs) } }),
      },
      spec: {
        source: { http: { url: 'https://example.invalid/images/disk.img' } },
        pvc: {
          accessModes: ['ReadWriteOnce'],
          volumeMode: options.mode ?? 'Filesystem',
          resources: { requests: { storage: options.size ?? '1Gi' } },
        },
      },
    },
  });
}

/** The demo namespace of the embedded default. */
export const DEMO = {
  namespace: 'demo',
  vmi: 'demo',
  filesystemPvc: 'demo-fs',
  blockPvc: 'demo-block',
  dataVolume: 'demo-dv',
  importMs: 5000,
} as const;

/** Seeds the demo namespace: VMI `demo` running on `node`, PVCs `demo-fs` and `demo-block`, DataVolume `demo-dv`. */
export async function seedDemo(kc: KubeConfig, node: string): Promise<SeededVmi> {
  await ensureNamespace(kc, DEMO.namespace);
  const seeded = await createRunningVmi(kc, { namespace: DEMO.namespace, name: DEMO.vmi, node });
  await createPvc(kc, { namespace: DEMO.namespace, name: DEMO.filesystemPvc, mode: 'Filesystem' });
  await createPvc(kc, { namespace: DEMO.namespace, name: DEMO.blockPvc, mode: 'Block' });
  await createDataVolume(kc, {
    namespace: DEMO.namespace,
    name: DEMO.dataVolume,
    importMs: DEMO.importMs,
  });
  return seeded;
}
