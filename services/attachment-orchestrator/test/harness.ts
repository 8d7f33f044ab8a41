// Stage-test harness: a real nats-server, kube-sim (kubelet on), a stand-in for the rest of the
// chain (a status projector like spec-watcher's, a node-mounter that marks volumes Ready), and
// a recorder of every pod the orchestrator made.
import { randomBytes, randomUUID } from 'node:crypto';
import { connectBus, provision, type Bus } from '@plugline/bus';
import {
  applyEventToVolumeStatus,
  EventType,
  eventTypeOf,
  keyOfEvent,
  Stage,
  workSubject,
  encodeMessage,
  type VirtualMachineInstance,
  type VolumeEvent,
  type VolumeStatus,
  type WorkItem,
} from '@plugline/contracts';
import { loadKubeConfig } from '@plugline/kube';
import { PatchType, startKubeSim, Types, type KubeSim, type StoreWatch } from '@plugline/kube-sim';
import { silentLogger } from '@plugline/telemetry';
import { startNats, waitFor, type NatsServer } from '@plugline/testkit';
import type { Pod } from '../src/index.js';

export const NODE = 'node-a';
export const OTHER_NODE = 'node-b';
export const LAUNCHER_IMAGE = 'quay.io/kubevirt/virt-launcher:v1.6.0';

export const rand = (prefix: string): string => `${prefix}-${randomBytes(4).toString('hex')}`;

export interface PodRecord {
  at: number;
  type: string;
  name: string;
  uid: string;
  phase: string | undefined;
  deleting: boolean;
  owner: string | undefined;
}

export interface Harness {
  nats: NatsServer;
  sim: KubeSim;
  bus: Bus;
  kc: ReturnType<typeof loadKubeConfig>;
  events: VolumeEvent[];
  nodeWork: WorkItem[];
  /** Work the orchestrator sent the domain-updater (unplugs it sends down the node stages). */
  domainWork: WorkItem[];
  podLog: PodRecord[];
  /** Volumes (`ns/vmi/volume`) whose node-mount work the fake node-mounter ignores. */
  holdMount: Set<string>;
  stop(): Promise<void>;
}

const decoder = new TextDecoder();

function vmiStatus(sim: KubeSim, ns: string, name: string): VolumeStatus[] {
  const vmi = sim.store.peek(Types.virtualmachineinstances, ns, name) as
    VirtualMachineInstance | undefined;
  return vmi?.status?.volumeStatus ?? [];
}

export function writeVolumeStatus(
  sim: KubeSim,
  ns: string,
  name: string,
  update: (entries: VolumeStatus[]) => VolumeStatus[],
): void {
  if (sim.store.peek(Types.virtualmachineinstances, ns, name) === undefined) return;
  const next = update(structuredClone(vmiStatus(sim, ns, name)));
  sim.store.patch(
    Types.virtualmachineinstances,
    name,
    PatchType.Merge,
    { status: { volumeStatus: next } },
    { namespace: ns, subresource: 'status' },
  );
}

/** The operation spec-watcher considers current per `ns/vmi/volume`: older facts are ignored. */
const currentOps = new Map<string, string>();

/**
 * What spec-watcher's projector does with a fact of the current operation (`released` drops the
 * entry, as the `removed` it answers with would).
 */
function project(sim: KubeSim, event: VolumeEvent): void {
  const { namespace, vmi, volume } = keyOfEvent(event);
  const current = currentOps.get(`${namespace}/${vmi}/${volume}`);
  if (current !== undefined && current !== event.data.operationId) return;
  writeVolumeStatus(sim, namespace, vmi, (entries) => {
    const current = entries.find((e) => e.name === volume);
    const rest = entries.filter((e) => e.name !== volume);
    if (eventTypeOf(event) === EventType.Released) return rest;
    const { status } = applyEventToVolumeStatus(current, event);
    return status === undefined ? rest : [...rest, status];
  });
}

/**
 * spec-watcher's reset of a re-added volume's entry (its status reducer's `requested`): no phase,
 * no target, the pod it named kept.
 */
export function resetForReadd(sim: KubeSim, ns: string, vmi: string, volume: string): void {
  writeVolumeStatus(sim, ns, vmi, (entries) =>
    entries.map((e) =>
      e.name === volume ? { name: volume, target: '', hotplugVolume: e.hotplugVolume ?? {} } : e,
    ),
  );
}

export function setPhase(
  sim: KubeSim,
  ns: string,
  vmi: string,
  volume: string,
  phase: string,
): void {
  writeVolumeStatus(sim, ns, vmi, (entries) =>
    entries.map((e) =>
      e.name === volume ? { ...e, phase, ...(phase === 'Ready' ? { target: 'sda' } : {}) } : e,
    ),
  );
}

function recordPods(sim: KubeSim, log: PodRecord[]): StoreWatch {
  return sim.store.watch(
    Types.pods,
    { resourceVersion: '0' },
    {
      event(e) {
        const pod = e.object as Pod;
        if (pod.metadata.labels?.['kubevirt.io'] !== 'hotplug-disk') return;
        log.push({
          at: Date.now(),
          type: e.type,
          name: pod.metadata.name ?? '',
          uid: pod.metadata.uid ?? '',
          phase: pod.status?.phase,
          deleting: pod.metadata.deletionTimestamp !== undefined,
          owner: pod.metadata.annotations?.['kubevirt.io/owner-vmi-name'],
        });
      },
      closed() {},
    },
  );
}

export async function startHarness(): Promise<Harness> {
  const nats = await startNats();
  const sim = await startKubeSim({
    nodes: [NODE, OTHER_NODE],
    podStartLatencyMs: 30,
    dataVolumeImportMs: 200,
  });
  const bus = await connectBus({ servers: nats.url, name: 'orchestrator-test' });
  await provision(bus, {
    memory: true,
    consumers: [{ stage: Stage.AttachmentOrchestrator, ackWaitMs: 2000 }],
  });
  const kc = loadKubeConfig({ kubeconfig: sim.kubeconfigPath });
  const events: VolumeEvent[] = [];
  const nodeWork: WorkItem[] = [];
  const domainWork: WorkItem[] = [];
  const podLog: PodRecord[] = [];
  const holdMount = new Set<string>();
  const subs: ReturnType<Bus['nc']['subscribe']>[] = [
    bus.nc.subscribe('plugline.v1.events.>', {
      callback: (_err, msg) => {
        const event = JSON.parse(decoder.decode(msg.data)) as VolumeEvent;
        events.push(event);
        project(sim, event);
      },
    }),
    bus.nc.subscribe(`plugline.v1.work.${Stage.NodeMounter}.>`, {
      callback: (_err, msg) => {
        const item = JSON.parse(decoder.decode(msg.data)) as WorkItem;
        nodeWork.push(item);
        // The rest of the chain: the volume is mounted and the domain has it.
        if (!holdMount.has(`${item.namespace}/${item.vmi}/${item.volume}`))
          setPhase(sim, item.namespace, item.vmi, item.volume, 'Ready');
      },
    }),
    bus.nc.subscribe(`plugline.v1.work.${Stage.DomainUpdater}.>`, {
      callback: (_err, msg) => {
        domainWork.push(JSON.parse(decoder.decode(msg.data)) as WorkItem);
      },
    }),
  ];
  const podWatch = recordPods(sim, podLog);
  return {
    nats,
    sim,
    bus,
    kc,
    events,
    nodeWork,
    domainWork,
    podLog,
    holdMount,
    async stop() {
      podWatch.close();
      for (const s of subs) s.unsubscribe();
      await bus.close().catch(() => undefined);
      await sim.stop();
      await nats.stop();
    },
  };
}

/** A VMI Running on `NODE` with its launcher pod (also Running). */
export async function createRunningVmi(
  h: Harness,
  ns: string,
  name: string,
): Promise<{ vmi: VirtualMachineInstance; launcher: Pod }> {
  if (h.sim.store.peek(Types.namespaces, undefined, ns) === undefined)
    h.sim.store.create(Types.namespaces, { metadata: { name: ns } });
  const created = h.sim.store.create(
    Types.virtualmachineinstances,
    {
      apiVersion: 'kubevirt.io/v1',
      kind: 'VirtualMachineInstance',
      metadata: { name },
      spec: {
        domain: {
          devices: { disks: [{ name: 'containerdisk', disk: { bus: 'virtio' } }] },
          resources: { requests: { memory: '128Mi' } },
        },
        volumes: [{ name: 'containerdisk', containerDisk: { image: 'quay.io/kubevirt/cirros' } }],
      },
    },
    { namespace: ns },
  ) as unknown as VirtualMachineInstance;
  const uid = created.metadata.uid ?? '';
  const launcher = h.sim.store.create(
    Types.pods,
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `virt-launcher-${name}-${randomBytes(3).toString('hex')}`,
        labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': uid },
      },
      spec: {
        nodeName: NODE,
        containers: [{ name: 'compute', image: LAUNCHER_IMAGE }],
        volumes: [{ name: 'hotplug-disks', emptyDir: {} }],
        tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'vms', effect: 'NoSchedule' }],
      },
    },
    { namespace: ns },
  ) as Pod;
  h.sim.store.patch(
    Types.virtualmachineinstances,
    name,
    PatchType.Merge,
    {
      status: {
        phase: 'Running',
        nodeName: NODE,
        activePods: { [launcher.metadata.uid ?? '']: NODE },
        volumeStatus: [],
      },
    },
    { namespace: ns, subresource: 'status' },
  );
  await waitFor(
    () =>
      (h.sim.store.peek(Types.pods, ns, launcher.metadata.name ?? '') as Pod | undefined)?.status
        ?.phase === 'Running',
    { description: 'the launcher pod Running' },
  );
  return { vmi: created, launcher };
}

export function createPvc(
  h: Harness,
  ns: string,
  name: string,
  mode: 'Filesystem' | 'Block',
  annotations: Record<string, string> = {},
): void {
  h.sim.store.create(
    Types.persistentvolumeclaims,
    {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name, annotations },
      spec: {
        accessModes: ['ReadWriteOnce'],
        volumeMode: mode,
        resources: { requests: { storage: '8Mi' } },
      },
    },
    { namespace: ns },
  );
}

/** Adds a hotplug volume to the VMI's spec, as `virtctl addvolume` does. */
export function addVolume(
  h: Harness,
  ns: string,
  vmi: string,
  volume: string,
  source: { claim: string } | { dataVolume: string },
): void {
  const src =
    'claim' in source
      ? { persistentVolumeClaim: { claimName: source.claim, hotpluggable: true } }
      : { dataVolume: { name: source.dataVolume, hotpluggable: true } };
  h.sim.store.patch(
    Types.virtualmachineinstances,
    vmi,
    PatchType.Json,
    [
      { op: 'add', path: '/spec/volumes/-', value: { name: volume, ...src } },
      {
        op: 'add',
        path: '/spec/domain/devices/disks/-',
        value: { name: volume, disk: { bus: 'scsi' } },
      },
    ],
    { namespace: ns },
  );
}

export function removeVolume(h: Harness, ns: string, vmi: string, volume: string): void {
  const current = h.sim.store.get(
    Types.virtualmachineinstances,
    ns,
    vmi,
  ) as unknown as VirtualMachineInstance;
  const volumes = (current.spec.volumes ?? []).filter((v) => v.name !== volume);
  const disks = (current.spec.domain.devices.disks ?? []).filter((d) => d.name !== volume);
  h.sim.store.patch(
    Types.virtualmachineinstances,
    vmi,
    PatchType.Merge,
    { spec: { volumes, domain: { devices: { disks } } } },
    { namespace: ns },
  );
}

/** Publishes a work item to the orchestrator, as spec-watcher or node-mounter would. */
export async function sendWork(
  h: Harness,
  vmi: VirtualMachineInstance,
  volume: string,
  fields: { operationId: string; operation: 'plug' | 'unplug'; cause: string },
): Promise<void> {
  currentOps.set(`${vmi.metadata.namespace}/${vmi.metadata.name}/${volume}`, fields.operationId);
  const item: WorkItem = {
    v: 1,
    stage: Stage.AttachmentOrchestrator,
    namespace: vmi.metadata.namespace ?? '',
    vmi: vmi.metadata.name ?? '',
    vmiUID: vmi.metadata.uid ?? '',
    volume,
    ...fields,
    issuedAt: new Date().toISOString(),
  };
  await h.bus.js.publish(workSubject(item), encodeMessage(item), {
    msgID: `${item.vmiUID}:${volume}:${item.operationId}:${item.cause}:${randomUUID()}`,
  });
}

/** `requested`, as spec-watcher sends it for a new volume. */
export function requestPlug(
  h: Harness,
  vmi: VirtualMachineInstance,
  volume: string,
  operationId = rand('op'),
): Promise<void> {
  return sendWork(h, vmi, volume, { operationId, operation: 'plug', cause: EventType.Requested });
}

/** node-mounter's `unmounted-from-pod`: the status shows it, and the orchestrator is nudged. */
export function reportUnmounted(
  h: Harness,
  vmi: VirtualMachineInstance,
  volume: string,
  operationId: string,
): Promise<void> {
  setPhase(
    h.sim,
    vmi.metadata.namespace ?? '',
    vmi.metadata.name ?? '',
    volume,
    'UnMountedFromPod',
  );
  return sendWork(h, vmi, volume, {
    operationId,
    operation: 'unplug',
    cause: EventType.UnmountedFromPod,
  });
}

export function statusOf(
  h: Harness,
  ns: string,
  vmi: string,
  volume: string,
): VolumeStatus | undefined {
  return vmiStatus(h.sim, ns, vmi).find((s) => s.name === volume);
}

export function eventsOf(h: Harness, ns: string, vmi: string, volume?: string): VolumeEvent[] {
  return h.events.filter((e) => {
    const k = keyOfEvent(e);
    return k.namespace === ns && k.vmi === vmi && (volume === undefined || k.volume === volume);
  });
}

export function typesOf(events: VolumeEvent[]): string[] {
  return events.map(eventTypeOf);
}

/** The live attachment pods of a VMI, from the API server. */
export function attachmentPods(h: Harness, ns: string, vmi: string): Pod[] {
  return [...h.sim.store.all(Types.pods)]
    .map((p) => p as Pod)
    .filter(
      (p) =>
        p.metadata.namespace === ns &&
        p.metadata.labels?.['kubevirt.io'] === 'hotplug-disk' &&
        p.metadata.annotations?.['kubevirt.io/owner-vmi-name'] === vmi,
    );
}

export function createdPodNames(h: Harness, vmi: string): string[] {
  return [
    ...new Set(h.podLog.filter((r) => r.type === 'ADDED' && r.owner === vmi).map((r) => r.name)),
  ];
}

export const silent = silentLogger;
