import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { parseQuantity } from './quantity.js';
import { EventRecorder } from './recorder.js';
import { Types } from './resources.js';
import type { KubeObject } from './resources.js';
import type { Store, StoreWatch } from './store.js';
import { SELECTED_NODE, waitsForConsumer } from './storage-controllers.js';
import type { StorageControllers } from './storage-controllers.js';
import {
  attachLoop,
  detachLoop,
  ensureSparseFile,
  linkDiskImage,
  makeDeviceNode,
  removeTree,
} from './volumes.js';
import type { KubeletLayout, LoopDevice } from './volumes.js';
import { cloneJson } from '@plugline/contracts';
import { Timers, WorkQueue } from './workqueue.js';

type Obj = Record<string, unknown>;

export interface KubeletOptions {
  store: Store;
  logger: Logger;
  layout: KubeletLayout;
  nodes: readonly string[];
  podStartLatencyMs: number;
  waitForFirstConsumerClasses: readonly string[];
  storage: StorageControllers;
}

interface PodVolume {
  pv: string;
  block: boolean;
}

interface PodState {
  key: string;
  volumes: PodVolume[];
}

interface NodeSelectorRequirement {
  key: string;
  operator: string;
  values?: string[];
}

interface PodSpec {
  nodeName?: string;
  nodeSelector?: Record<string, string>;
  affinity?: {
    nodeAffinity?: {
      requiredDuringSchedulingIgnoredDuringExecution?: {
        nodeSelectorTerms?: {
          matchExpressions?: NodeSelectorRequirement[];
          matchFields?: NodeSelectorRequirement[];
        }[];
      };
    };
  };
  volumes?: (Obj & { name: string })[];
  containers?: {
    name: string;
    image?: string;
    volumeMounts?: { name: string }[];
    volumeDevices?: { name: string; devicePath: string }[];
  }[];
}

function podSpec(pod: KubeObject): PodSpec {
  return (pod.spec as PodSpec | undefined) ?? {};
}

function nowIso(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function requirementHolds(req: NodeSelectorRequirement, value: string | undefined): boolean {
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    default:
      return false;
  }
}

/** Whether a pod's node selector and required node affinity allow this node. */
export function nodeFits(pod: KubeObject, node: KubeObject): boolean {
  const labels = node.metadata?.labels ?? {};
  const spec = podSpec(pod);
  for (const [k, v] of Object.entries(spec.nodeSelector ?? {})) {
    if (labels[k] !== v) return false;
  }
  const terms =
    spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
  if (!terms || terms.length === 0) return true;
  return terms.some(
    (t) =>
      (t.matchExpressions ?? []).every((r) => requirementHolds(r, labels[r.key])) &&
      (t.matchFields ?? []).every((r) =>
        requirementHolds(r, r.key === 'metadata.name' ? node.metadata?.name : undefined),
      ),
  );
}

/** A node object as a kubelet registers it. */
export function nodeObject(name: string, index: number): KubeObject {
  const now = nowIso();
  const capacity = { cpu: '8', memory: '32Gi', pods: '250', 'ephemeral-storage': '100Gi' };
  return {
    metadata: {
      name,
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'kubevirt.io/schedulable': 'true',
      },
    },
    spec: { podCIDR: `10.244.${index}.0/24` },
    status: {
      capacity,
      allocatable: capacity,
      addresses: [
        { type: 'InternalIP', address: `10.0.0.${index + 10}` },
        { type: 'Hostname', address: name },
      ],
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'kubelet is posting ready status (simulated)',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
      nodeInfo: {
        kubeletVersion: 'v1.32.0-kube-sim',
        kubeProxyVersion: 'v1.32.0-kube-sim',
        operatingSystem: 'linux',
        architecture: 'amd64',
        containerRuntimeVersion: 'sim://1.0',
        osImage: 'kube-sim',
        kernelVersion: '',
        machineID: '',
        systemUUID: '',
        bootID: '',
      },
    },
  };
}

/** A PV's loop device on this node and the pods using it. */
interface PvLoop {
  users: Set<string>;
  /** Settles once `losetup` did; `loop` is its result. */
  device: Promise<LoopDevice>;
  loop?: LoopDevice;
}

/**
 * The scheduler and the kubelets of the simulated nodes. Pods are bound to a node that fits,
 * their volumes are made real on disk (sparse disk images, loop devices, emptyDir folders) in
 * the kubelet's layout, then they go Running with ready containers after `podStartLatencyMs`.
 */
export class KubeletSim {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly layout: KubeletLayout;
  private readonly queue: WorkQueue;
  private readonly timers = new Timers();
  private readonly watches: StoreWatch[] = [];
  private readonly pods = new Map<string, PodState>();
  private readonly uidOfKey = new Map<string, string>();
  private readonly loops = new Map<string, PvLoop>();
  private readonly releasedPvs = new Set<string>();
  private readonly pvOfClaim = new Map<string, string>();
  private readonly scheduler: EventRecorder;
  private ipCounter = 0;
  private stopped = false;

  constructor(private readonly opts: KubeletOptions) {
    this.store = opts.store;
    this.log = opts.logger.child({ component: 'kubelet' });
    this.layout = opts.layout;
    this.queue = new WorkQueue((key) => this.reconcile(key), this.log);
    this.scheduler = new EventRecorder(this.store, 'default-scheduler');
  }

  start(): void {
    for (const [i, name] of this.opts.nodes.entries()) {
      if (!this.store.peek(Types.nodes, undefined, name)) {
        this.store.create(Types.nodes, nodeObject(name, i), { internal: true });
      }
    }
    this.watches.push(
      this.store.watch(
        Types.pods,
        {},
        {
          event: (e) => {
            const key = `${e.object.metadata?.namespace}/${e.object.metadata?.name}`;
            if (e.type === 'DELETED') this.queue.add(`gone/${e.object.metadata?.uid}`);
            this.queue.add(`pod/${key}`);
          },
          closed: () => undefined,
        },
      ),
      this.store.watch(
        Types.persistentvolumeclaims,
        {},
        { event: (e) => this.onClaim(e.type, e.object), closed: () => undefined },
      ),
    );
  }

  /** Stops the kubelets and tears down every volume they set up (loop devices detached). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watches.forEach((w) => w.close());
    this.timers.cancelAll();
    await this.queue.drain();
    for (const uid of [...this.pods.keys()]) await this.teardown(uid);
    for (const pv of [...this.loops.keys()]) await this.detach(pv);
  }

  /** Loop devices currently attached by this simulator, by PV name. */
  loopDevices(): Map<string, string> {
    return new Map(
      [...this.loops].flatMap(([pv, l]) => (l.loop === undefined ? [] : [[pv, l.loop.device]])),
    );
  }

  private onClaim(type: string, pvc: KubeObject): void {
    const { namespace, name } = pvc.metadata ?? {};
    const key = `${namespace}/${name}`;
    const pv = (pvc.spec as Obj | undefined)?.volumeName as string | undefined;
    if (pv) this.pvOfClaim.set(key, pv);
    if (type === 'DELETED') {
      this.queue.add(`release/${key}`);
      return;
    }
    // Pods waiting for this claim try again.
    for (const pod of this.store.all(Types.pods)) {
      if (pod.metadata?.namespace !== namespace) continue;
      const uses = (podSpec(pod).volumes ?? []).some((v) => claimNameOf(v) === name);
      if (uses) this.queue.add(`pod/${namespace}/${pod.metadata?.name}`);
    }
  }

  private async reconcile(key: string): Promise<void> {
    if (this.stopped) return;
    const slash = key.indexOf('/');
    const kind = key.slice(0, slash);
    const rest = key.slice(slash + 1);
    if (kind === 'gone') await this.teardown(rest);
    else if (kind === 'release') await this.release(rest);
    else await this.syncPod(rest);
  }

  private async release(claimKey: string): Promise<void> {
    const pv = this.pvOfClaim.get(claimKey);
    if (!pv) return;
    this.pvOfClaim.delete(claimKey);
    const inUse = [...this.pods.values()].some((p) => p.volumes.some((v) => v.pv === pv));
    if (inUse) {
      this.releasedPvs.add(pv);
      return;
    }
    await this.dropVolume(pv);
  }

  private async dropVolume(pv: string): Promise<void> {
    this.releasedPvs.delete(pv);
    await this.detach(pv);
    await removeTree(`${this.layout.stateDir()}/${pv}`);
    this.opts.storage.releaseVolume(pv);
  }

  private async syncPod(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const pod = this.store.peek(Types.pods, namespace, name);
    const knownUid = this.uidOfKey.get(key);
    if (knownUid && knownUid !== pod?.metadata?.uid) {
      await this.teardown(knownUid);
    }
    if (!pod) return;
    const spec = podSpec(pod);
    if (pod.metadata?.deletionTimestamp) {
      if (spec.nodeName && this.opts.nodes.includes(spec.nodeName)) await this.terminate(pod);
      return;
    }
    if (!spec.nodeName) {
      this.schedule(pod);
      return;
    }
    if (!this.opts.nodes.includes(spec.nodeName)) return;
    const phase = (pod.status as Obj | undefined)?.phase;
    if (phase === 'Running' || phase === 'Succeeded' || phase === 'Failed') return;
    await this.startPod(pod, key);
  }

  private schedule(pod: KubeObject): void {
    const meta = pod.metadata!;
    const nodes = this.opts.nodes
      .map((n) => this.store.peek(Types.nodes, undefined, n))
      .filter((n): n is KubeObject => n !== undefined && nodeFits(pod, n));
    if (nodes.length === 0) {
      const conditions = ((pod.status as Obj | undefined)?.conditions ?? []) as Obj[];
      if (conditions.some((c) => c.type === 'PodScheduled')) return;
      this.setStatus(pod, {
        ...(pod.status as Obj),
        conditions: [
          {
            type: 'PodScheduled',
            status: 'False',
            reason: 'Unschedulable',
            message: `0/${this.opts.nodes.length} nodes are available: ${this.opts.nodes.length} node(s) didn't match Pod's node affinity/selector.`,
            lastTransitionTime: nowIso(),
          },
        ],
      });
      this.scheduler.record(pod, 'Warning', 'FailedScheduling', 'no node matches the pod');
      return;
    }
    const node = nodes[this.ipCounter % nodes.length]!.metadata!.name!;
    const bound = cloneJson(pod);
    (bound.spec as PodSpec).nodeName = node;
    this.store.update(Types.pods, meta.name!, bound, { namespace: meta.namespace });
    this.scheduler.record(
      pod,
      'Normal',
      'Scheduled',
      `Successfully assigned ${meta.namespace}/${meta.name} to ${node}`,
    );
  }

  private setStatus(pod: KubeObject, status: Obj): KubeObject | undefined {
    const current = this.store.peek(Types.pods, pod.metadata?.namespace, pod.metadata!.name!);
    if (!current || current.metadata?.uid !== pod.metadata?.uid) return undefined;
    return this.store.update(
      Types.pods,
      pod.metadata!.name!,
      { ...current, status },
      { namespace: pod.metadata?.namespace, subresource: 'status' },
    );
  }

  /** Resolves the claims of the pod's volumes; undefined while one is not usable yet. */
  private claimsReady(pod: KubeObject): Map<string, KubeObject> | undefined {
    const claims = new Map<string, KubeObject>();
    const meta = pod.metadata!;
    for (const vol of podSpec(pod).volumes ?? []) {
      const claimName = claimNameOf(vol);
      if (!claimName) continue;
      const pvc = this.store.peek(Types.persistentvolumeclaims, meta.namespace, claimName);
      if (!pvc) return undefined;
      const phase = (pvc.status as Obj | undefined)?.phase;
      if (phase !== 'Bound') {
        this.selectNode(pvc, podSpec(pod).nodeName!);
        return undefined;
      }
      claims.set(vol.name, pvc);
    }
    return claims;
  }

  private selectNode(pvc: KubeObject, node: string): void {
    if (!waitsForConsumer(pvc, this.opts.waitForFirstConsumerClasses)) return;
    if (pvc.metadata?.annotations?.[SELECTED_NODE]) return;
    const next = cloneJson(pvc);
    next.metadata!.annotations = { ...next.metadata!.annotations, [SELECTED_NODE]: node };
    this.store.update(Types.persistentvolumeclaims, pvc.metadata!.name!, next, {
      namespace: pvc.metadata?.namespace,
    });
  }

  private async startPod(pod: KubeObject, key: string): Promise<void> {
    const uid = pod.metadata!.uid!;
    if (this.pods.has(uid)) return;
    const claims = this.claimsReady(pod);
    if (!claims) return;
    const state: PodState = { key, volumes: [] };
    this.pods.set(uid, state);
    this.uidOfKey.set(key, uid);
    try {
      await this.setUpVolumes(pod, claims, state);
    } catch (err) {
      this.log.error({ err, pod: key }, 'volume setup failed');
      new EventRecorder(this.store, 'kubelet', podSpec(pod).nodeName).record(
        pod,
        'Warning',
        'FailedMount',
        `volume setup failed: ${String(err)}`,
      );
      return;
    }
    if (this.pods.get(uid) !== state) {
      // Torn down while its volumes were set up: what the setup made after that goes too.
      await removeTree(this.layout.podDir(uid)).catch(() => undefined);
      return;
    }
    if (!(await this.timers.sleep(this.opts.podStartLatencyMs))) return;
    this.markRunning(pod);
  }

  /**
   * Sets up the pod's volumes concurrently, as kubelet's volume manager mounts each volume in an
   * operation of its own: a pod with many claims starts about as fast as one with a few (set up
   * one after the other, 75 claims added a quarter to half a second to a pod's start here).
   */
  private async setUpVolumes(pod: KubeObject, claims: Map<string, KubeObject>, state: PodState) {
    const uid = pod.metadata!.uid!;
    const spec = podSpec(pod);
    const devices = new Set(
      (spec.containers ?? []).flatMap((c) => (c.volumeDevices ?? []).map((d) => d.name)),
    );
    const setUp = async (vol: NonNullable<typeof spec.volumes>[number]): Promise<void> => {
      if (vol.emptyDir !== undefined) {
        await mkdirp(this.layout.emptyDir(uid, vol.name));
        return;
      }
      const pvc = claims.get(vol.name);
      if (!pvc) return;
      const pv = String((pvc.spec as Obj).volumeName);
      const block = (pvc.spec as Obj).volumeMode === 'Block';
      const size = parseQuantity(((pvc.status as Obj).capacity as Obj | undefined)?.storage);
      const backing = this.layout.backingFile(pv, block);
      await ensureSparseFile(backing, size);
      state.volumes.push({ pv, block });
      if (block && devices.has(vol.name)) {
        const loop = await this.attach(pv, backing, uid);
        if (loop === undefined) return; // torn down meanwhile
        await makeDeviceNode(this.layout.blockDevice(uid, pv), loop);
      } else if (!block) {
        await linkDiskImage(backing, this.layout.fsDiskImage(uid, pv));
      }
    };
    // Every setup ends before a failure is reported: none is left running behind it.
    const settled = await Promise.allSettled((spec.volumes ?? []).map(setUp));
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  /**
   * The PV's loop device, shared by every pod on this node that uses it. A pod joins the users
   * before the device exists, so pods starting together share one `losetup` (each running its own
   * left all but one device attached and unknown). Undefined when the pod was torn down while the
   * device was attached (the attachment-orchestrator deletes pods at once, grace 0).
   */
  private async attach(
    pv: string,
    backing: string,
    podUid: string,
  ): Promise<LoopDevice | undefined> {
    let entry = this.loops.get(pv);
    if (entry === undefined) {
      const created: PvLoop = { users: new Set(), device: attachLoop(backing) };
      created.device.then(
        (loop) => {
          created.loop = loop;
          this.log.debug({ pv, device: loop.device }, 'loop device attached');
        },
        () => {
          if (this.loops.get(pv) === created) this.loops.delete(pv);
        },
      );
      this.loops.set(pv, created);
      entry = created;
    }
    entry.users.add(podUid);
    const loop = await entry.device;
    if (this.pods.has(podUid)) return loop;
    await this.leave(pv, podUid);
    return undefined;
  }

  /** The pod no longer uses the PV's loop device; its last user detaches it. */
  private async leave(pv: string, podUid: string): Promise<void> {
    const entry = this.loops.get(pv);
    if (entry === undefined || !entry.users.delete(podUid) || entry.users.size > 0) return;
    await this.detach(pv);
  }

  private async detach(pv: string): Promise<void> {
    const entry = this.loops.get(pv);
    if (!entry) return;
    this.loops.delete(pv);
    try {
      const loop = await entry.device;
      await detachLoop(loop.device);
      this.log.debug({ pv, device: loop.device }, 'loop device detached');
    } catch (err) {
      this.log.error({ err, pv }, 'loop device detach failed');
    }
  }

  private markRunning(pod: KubeObject): void {
    const current = this.store.peek(Types.pods, pod.metadata?.namespace, pod.metadata!.name!);
    if (
      !current ||
      current.metadata?.uid !== pod.metadata?.uid ||
      current.metadata?.deletionTimestamp
    ) {
      return;
    }
    const now = nowIso();
    const n = this.ipCounter++;
    const ip = `10.244.${Math.floor(n / 250) % 250}.${(n % 250) + 2}`;
    const node = this.store.peek(Types.nodes, undefined, podSpec(pod).nodeName ?? '');
    const hostIP = ((node?.status as Obj | undefined)?.addresses as Obj[] | undefined)?.[0]
      ?.address;
    const cond = (type: string) => ({
      type,
      status: 'True',
      lastProbeTime: null,
      lastTransitionTime: now,
    });
    const containers = podSpec(pod).containers ?? [];
    const status: Obj = {
      ...(current.status as Obj),
      phase: 'Running',
      conditions: [
        cond('PodReadyToStartContainers'),
        cond('Initialized'),
        cond('Ready'),
        cond('ContainersReady'),
        cond('PodScheduled'),
      ],
      hostIP,
      hostIPs: hostIP ? [{ ip: hostIP }] : [],
      podIP: ip,
      podIPs: [{ ip }],
      startTime: now,
      containerStatuses: containers.map((c, i) => ({
        name: c.name,
        ready: true,
        started: true,
        restartCount: 0,
        image: c.image ?? '',
        imageID: `sim://${c.image ?? ''}`,
        containerID: `sim://${pod.metadata!.uid}-${i}`,
        state: { running: { startedAt: now } },
      })),
    };
    if (this.setStatus(current, status)) {
      const recorder = new EventRecorder(this.store, 'kubelet', podSpec(pod).nodeName);
      recorder.record(current, 'Normal', 'Started', 'Started container(s)');
    }
  }

  private async terminate(pod: KubeObject): Promise<void> {
    await this.teardown(pod.metadata!.uid!);
    try {
      const current = this.store.peek(Types.pods, pod.metadata?.namespace, pod.metadata!.name!);
      if (current?.metadata?.uid === pod.metadata?.uid) {
        this.store.delete(Types.pods, pod.metadata?.namespace, pod.metadata!.name!, {
          gracePeriodSeconds: 0,
          preconditions: { uid: pod.metadata!.uid! },
        });
      }
    } catch (err) {
      this.log.debug({ err }, 'pod already gone');
    }
  }

  /** Removes everything a pod had on disk; the last user of a loop device detaches it. */
  private async teardown(uid: string): Promise<void> {
    const state = this.pods.get(uid);
    if (!state) return;
    this.pods.delete(uid);
    if (this.uidOfKey.get(state.key) === uid) this.uidOfKey.delete(state.key);
    try {
      await removeTree(this.layout.podDir(uid));
    } catch (err) {
      this.log.warn({ err, podUid: uid }, 'pod folder not fully removed (still mounted?)');
    }
    for (const { pv } of state.volumes) {
      await this.leave(pv, uid);
      const stillUsed = [...this.pods.values()].some((p) => p.volumes.some((v) => v.pv === pv));
      if (this.releasedPvs.has(pv) && !stillUsed) await this.dropVolume(pv);
    }
  }
}

function claimNameOf(vol: Obj): string | undefined {
  const pvc = vol.persistentVolumeClaim as { claimName?: string } | undefined;
  if (pvc?.claimName) return pvc.claimName;
  const dv = vol.dataVolume as { name?: string } | undefined;
  return dv?.name;
}

async function mkdirp(path: string): Promise<void> {
  await mkdir(path, { recursive: true });
}
