import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it, onTestFailed, onTestFinished } from 'vitest';

import { connectBus, durableName, provision, StreamName } from '@plugline/bus';
import type { Bus } from '@plugline/bus';
import {
  deadLetterSubject,
  encodeMessage,
  encodeToken,
  EventType,
  Stage,
  workSubject,
} from '@plugline/contracts';
import type { VirtualMachineInstance, VolumeEvent, WorkItem } from '@plugline/contracts';
import { startKubeSim, Types } from '@plugline/kube-sim';
import type { KubeObject, KubeSim } from '@plugline/kube-sim';
import { createLogger, memoryDestination } from '@plugline/telemetry';
import type { MemoryDestination } from '@plugline/telemetry';
import { startNats, waitFor } from '@plugline/testkit';
import type { NatsServer } from '@plugline/testkit';

import {
  loadCheckpoint,
  parseConfig,
  readDeviceRules,
  splitDeviceNumber,
  startNodeMounter,
} from '../src/index.js';
import type { NodeMounterService } from '../src/index.js';
import { assertPrivateMountNamespace, LAYOUT, mountsUnder } from './host.js';

/**
 * Stage tier: the node-mounter service in-process against a real nats-server and kube-sim with
 * its kubelet (real disk images and loop devices), as root in a private mount namespace, with a
 * real v1 devices cgroup standing for the launcher pod's.
 */

const exec = promisify(execFile);
const NODE = 'node-1';
const OTHER_NODE = 'node-2';
const FS_VOL = 'fsvol';
const BLK_VOL = 'blkvol';
const FS_CLAIM = 'fs-claim-data';
const BLK_CLAIM = 'blk-claim-data';
const decoder = new TextDecoder();

let nats: NatsServer;
let sim: KubeSim;
let bus: Bus;
let base: string;
let kubeletRoot: string;
let stateDir: string;
let cgroupRoot: string;
let podCgroup: string;
let service: NodeMounterService | undefined;
let logs: MemoryDestination;
const ns = `nm-${randomBytes(4).toString('hex')}`;
const vmiName = `vm-${randomBytes(4).toString('hex')}`;
let vmiUID: string;
let launcherUID: string;
let attachmentName: string;
let hotplugDir: string;
let blockDevice: { major: number; minor: number };

function config() {
  return parseConfig({
    NATS_URL: nats.url,
    KUBECONFIG: sim.kubeconfigPath,
    NODE_NAME: NODE,
    KUBELET_ROOT: kubeletRoot,
    PLUGLINE_STATE_DIR: stateDir,
    PLUGLINE_DEVICE_CGROUP_ROOT: cgroupRoot,
    PLUGLINE_ACK_WAIT_MS: '5000',
    PLUGLINE_CONCURRENCY: '4',
  });
}

async function startService(
  options: { podCacheCatchUpMs?: number } = {},
): Promise<NodeMounterService> {
  logs = memoryDestination();
  const logger = createLogger({ level: 'debug' }, logs);
  service = await startNodeMounter(config(), { logger, bus, ...options });
  return service;
}

/** Sets the attachment pod's container readiness (it stays Running, so the kubelet leaves it). */
function setAttachmentReady(ready: boolean): void {
  const pod = structuredClone(sim.store.get(Types.pods, ns, attachmentName));
  const status = pod.status as { containerStatuses?: { ready?: boolean }[] };
  status.containerStatuses = (status.containerStatuses ?? [{}]).map((s) => ({ ...s, ready }));
  sim.store.update(Types.pods, attachmentName, pod, { namespace: ns, subresource: 'status' });
}

/** How many of the running service's work items ended resting as `waiting`. */
async function restedWaiting(): Promise<number> {
  const m = await service!.metrics.messagesHandled.get();
  return m.values
    .filter((v) => v.labels.outcome === 'waiting')
    .reduce((sum, v) => sum + v.value, 0);
}

async function stopService(): Promise<void> {
  await service?.stop();
  service = undefined;
}

function hotplugVolume(name: string, claimName: string) {
  return { name, persistentVolumeClaim: { claimName, hotpluggable: true } };
}

function vmiManifest(): KubeObject {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: { name: vmiName },
    spec: {
      domain: {
        devices: {
          disks: [
            { name: FS_VOL, disk: { bus: 'scsi' } },
            { name: BLK_VOL, disk: { bus: 'scsi' } },
          ],
        },
      },
      volumes: [hotplugVolume(FS_VOL, FS_CLAIM), hotplugVolume(BLK_VOL, BLK_CLAIM)],
    },
  };
}

function currentVmi(): VirtualMachineInstance {
  return sim.store.get(
    Types.virtualmachineinstances,
    ns,
    vmiName,
  ) as unknown as VirtualMachineInstance;
}

/** Sets the VMI's hotplug volumes (and disks) to `volumes`. */
function setSpecVolumes(volumes: readonly string[]): void {
  const vmi = structuredClone(currentVmi());
  const all = vmiManifest().spec as VirtualMachineInstance['spec'];
  vmi.spec.volumes = (all.volumes ?? []).filter((v) => volumes.includes(v.name));
  vmi.spec.domain.devices.disks = (all.domain.devices.disks ?? []).filter((d) =>
    volumes.includes(d.name),
  );
  sim.store.update(Types.virtualmachineinstances, vmiName, vmi as unknown as KubeObject, {
    namespace: ns,
  });
}

function setStatus(status: VirtualMachineInstance['status']): void {
  const vmi = structuredClone(currentVmi());
  sim.store.update(
    Types.virtualmachineinstances,
    vmiName,
    { ...(vmi as unknown as KubeObject), status },
    { namespace: ns, subresource: 'status' },
  );
}

function claim(name: string, block: boolean, size: string): KubeObject {
  return {
    metadata: { name },
    spec: {
      accessModes: ['ReadWriteOnce'],
      volumeMode: block ? 'Block' : 'Filesystem',
      resources: { requests: { storage: size } },
    },
  };
}

function launcherPod(uid: string): KubeObject {
  return {
    metadata: {
      name: `virt-launcher-${vmiName}-abcde`,
      labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': uid },
    },
    spec: {
      nodeName: NODE,
      containers: [
        {
          name: 'compute',
          image: 'virt-launcher',
          volumeMounts: [{ name: 'hotplug-disks', mountPath: '/var/run/kubevirt/hotplug-disks' }],
        },
      ],
      volumes: [{ name: 'hotplug-disks', emptyDir: {} }],
    },
  };
}

/** An attachment pod as the orchestrator renders it (filesystem as a mount, block as a device). */
function attachmentPod(uid: string): KubeObject {
  return {
    metadata: {
      name: `hp-volume-${randomBytes(4).toString('hex')}`,
      labels: { 'kubevirt.io': 'hotplug-disk' },
      annotations: { 'kubevirt.io/owner-vmi-name': vmiName, 'kubevirt.io/owner-vmi-uid': uid },
    },
    spec: {
      nodeName: NODE,
      terminationGracePeriodSeconds: 0,
      containers: [
        {
          name: 'hotplug-disk',
          image: 'virt-launcher',
          volumeMounts: [
            { name: 'hotplug-disks', mountPath: '/path' },
            { name: FS_VOL, mountPath: `/${FS_VOL}` },
          ],
          volumeDevices: [{ name: BLK_VOL, devicePath: `/path/${BLK_VOL}/${BLK_CLAIM}` }],
        },
      ],
      volumes: [
        { name: 'hotplug-disks', emptyDir: {} },
        { name: FS_VOL, persistentVolumeClaim: { claimName: FS_CLAIM } },
        { name: BLK_VOL, persistentVolumeClaim: { claimName: BLK_CLAIM } },
      ],
    },
  };
}

async function podRunning(name: string): Promise<KubeObject> {
  return waitFor(
    () => {
      const pod = sim.store.peek(Types.pods, ns, name);
      return (pod?.status as { phase?: string } | undefined)?.phase === 'Running' ? pod : undefined;
    },
    { timeout: 15_000, description: `pod ${name} Running` },
  );
}

function workItem(overrides: Partial<WorkItem> = {}): WorkItem {
  return {
    v: 1,
    stage: Stage.NodeMounter,
    node: NODE,
    namespace: ns,
    vmi: vmiName,
    vmiUID,
    volume: FS_VOL,
    operationId: `op-${randomUUID()}`,
    operation: 'plug',
    cause: EventType.AttachedToNode,
    issuedAt: new Date().toISOString(),
    ...overrides,
  };
}

async function publishWork(item: WorkItem): Promise<void> {
  await bus.js.publish(workSubject(item), encodeMessage(item), {
    msgID: `${item.vmiUID}:${item.volume}:${item.operationId}:work.${item.stage}.${item.cause}`,
  });
}

async function streamMessages(
  stream: string,
): Promise<{ subject: string; data: Uint8Array; header?: { get(k: string): string } }[]> {
  const info = await bus.jsm.streams.info(stream);
  const out: { subject: string; data: Uint8Array; header?: { get(k: string): string } }[] = [];
  if (info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await bus.jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push({ subject: m.subject, data: m.data, header: m.header });
  }
  return out;
}

async function events(type: EventType, operationId: string): Promise<VolumeEvent[]> {
  return (await streamMessages(StreamName.Events))
    .map((m) => JSON.parse(decoder.decode(m.data)) as VolumeEvent)
    .filter((e) => e.type === `io.plugline.volume.${type}` && e.data.operationId === operationId);
}

async function workFor(stage: Stage, operationId: string): Promise<WorkItem[]> {
  return (await streamMessages(StreamName.Work))
    .map((m) => JSON.parse(decoder.decode(m.data)) as WorkItem)
    .filter((w) => w.stage === stage && w.operationId === operationId);
}

/** Resolves once the node-mounter's consumer has nothing pending or unacknowledged. */
async function drained(): Promise<void> {
  await waitFor(
    async () => {
      const info = await bus.jsm.consumers.info(
        StreamName.Work,
        durableName(Stage.NodeMounter, NODE),
      );
      return info.num_pending === 0 && info.num_ack_pending === 0;
    },
    { timeout: 15_000, description: 'the node-mounter consumer to drain' },
  );
}

/** Exactly what the launcher's hotplug folder holds: files, mounts, and the cgroup's rules. */
async function launcherView() {
  return {
    files: (await readdir(hotplugDir)).sort(),
    mounts: (await mountsUnder(hotplugDir)).map((p) => p.slice(hotplugDir.length + 1)).sort(),
    rules: (await readDeviceRules(podCgroup)).filter((r) => r !== ''),
  };
}

const blockRule = () => `b ${blockDevice.major}:${blockDevice.minor} rwm`;

beforeAll(async () => {
  await assertPrivateMountNamespace();
  base = await mkdtemp(join(tmpdir(), 'plugline-nm-stage-'));
  kubeletRoot = join(base, 'kubelet');
  stateDir = join(base, 'state');
  await mkdir(kubeletRoot);
  cgroupRoot = join('/sys/fs/cgroup/devices', `plugline-test-${randomBytes(6).toString('hex')}`);
  await mkdir(cgroupRoot);
  nats = await startNats();
  sim = await startKubeSim({
    kubelet: true,
    kubeletRoot,
    nodes: [NODE, OTHER_NODE],
    namespaces: [ns],
    podStartLatencyMs: 5,
  });
  bus = await connectBus({ servers: nats.url, name: 'node-mounter-test' });
  await provision(bus, { consumers: [{ stage: Stage.NodeMounter, node: NODE }] });

  const vmi = sim.store.create(Types.virtualmachineinstances, vmiManifest(), { namespace: ns });
  vmiUID = vmi.metadata!.uid!;
  setStatus({ phase: 'Running', nodeName: NODE });
  sim.store.create(Types.persistentvolumeclaims, claim(FS_CLAIM, false, '64Mi'), { namespace: ns });
  sim.store.create(Types.persistentvolumeclaims, claim(BLK_CLAIM, true, '16Mi'), { namespace: ns });
  const launcher = sim.store.create(Types.pods, launcherPod(vmiUID), { namespace: ns });
  launcherUID = launcher.metadata!.uid!;
  const attachment = sim.store.create(Types.pods, attachmentPod(vmiUID), { namespace: ns });
  attachmentName = attachment.metadata!.name!;
  await podRunning(launcher.metadata!.name!);
  await podRunning(attachment.metadata!.name!);
  hotplugDir = LAYOUT.hotplugDir(kubeletRoot, launcherUID);
  const pvName = (
    sim.store.get(Types.persistentvolumeclaims, ns, BLK_CLAIM).spec as { volumeName: string }
  ).volumeName;
  const source = LAYOUT.blockSource(kubeletRoot, attachment.metadata!.uid!, pvName);
  blockDevice = splitDeviceNumber((await stat(source, { bigint: true })).rdev);

  // The launcher's device cgroup, allowing nothing yet, so its rules are exactly what we add.
  podCgroup = join(cgroupRoot, `pod${launcherUID}`);
  await mkdir(podCgroup);
  await writeFile(join(podCgroup, 'devices.deny'), 'a');

  await startService();
}, 60_000);

afterAll(async () => {
  await stopService().catch(() => undefined);
  await bus?.close().catch(() => undefined);
  // Mounts vanish with the private namespace anyway; unmount now so the trees can be removed.
  for (const mountPoint of (await mountsUnder(base ?? '/nonexistent')).reverse()) {
    await exec('umount', [mountPoint]).catch(() => undefined);
  }
  await sim?.stop();
  await nats?.stop();
  for (const dir of [podCgroup, cgroupRoot]) {
    if (dir !== undefined && existsSync(dir)) await rmdir(dir).catch(() => undefined);
  }
  if (base !== undefined) await rm(base, { recursive: true, force: true });
}, 60_000);

describe('node-mounter stage (real NATS, kube-sim kubelet, mounts, loop devices, cgroup)', () => {
  const plugOp = `op-plug-${randomUUID()}`;
  const unplugOp = `op-unplug-${randomUUID()}`;

  function dumpLogsOnFailure(): void {
    onTestFailed(() => {
      console.error(
        logs.lines
          .slice(-60)
          .map((l) => JSON.stringify(l))
          .join('\n'),
      );
    });
  }

  it('plugs a filesystem and a block volume into the launcher, with facts and next work', async () => {
    dumpLogsOnFailure();
    expect(await launcherView()).toEqual({ files: [], mounts: [], rules: [] });
    await publishWork(workItem({ volume: FS_VOL, operationId: plugOp }));
    await publishWork(workItem({ volume: BLK_VOL, operationId: plugOp }));

    const mounted = await waitFor(
      async () => {
        const found = await events(EventType.MountedToPod, plugOp);
        return found.length === 2 ? found : undefined;
      },
      { timeout: 15_000, description: 'two mounted-to-pod facts' },
    );
    expect(await launcherView()).toEqual({
      files: [BLK_VOL, `${FS_VOL}.img`],
      mounts: [`${FS_VOL}.img`],
      rules: [blockRule()],
    });
    const node = await lstat(join(hotplugDir, BLK_VOL), { bigint: true });
    expect(node.isBlockDevice()).toBe(true);
    expect(splitDeviceNumber(node.rdev)).toEqual(blockDevice);
    expect([Number(node.uid), Number(node.gid), Number(node.mode) & 0o777]).toEqual([
      107, 107, 0o660,
    ]);
    const img = await stat(join(hotplugDir, `${FS_VOL}.img`));
    expect(img.size).toBe(64 * 1024 * 1024);

    const byVolume = new Map(mounted.map((e) => [e.subject.split('/')[2], e]));
    const fsFact = byVolume.get(FS_VOL)!;
    expect(fsFact.data).toMatchObject({
      operation: 'plug',
      vmiUID,
      node: NODE,
      phase: 'MountedToPod',
      reason: 'VolumeMountedToPod',
      stage: Stage.NodeMounter,
      details: { mode: 'Filesystem', changed: true, cgroup: 'none' },
    });
    expect(fsFact.data.attachPod?.name).toMatch(/^hp-volume-/);
    expect(byVolume.get(BLK_VOL)!.data.details).toMatchObject({
      mode: 'Block',
      changed: true,
      cgroup: 'allowed',
      device: `${blockDevice.major}:${blockDevice.minor}`,
    });

    const next = await waitFor(async () => {
      const w = await workFor(Stage.DomainUpdater, plugOp);
      return w.length === 2 ? w : undefined;
    });
    for (const w of next) {
      expect(w).toMatchObject({
        node: NODE,
        namespace: ns,
        vmi: vmiName,
        vmiUID,
        operation: 'plug',
        cause: EventType.MountedToPod,
      });
    }
    expect(next.map((w) => w.volume).sort()).toEqual([BLK_VOL, FS_VOL]);
    const checkpoint = await loadCheckpoint(stateDir, vmiUID);
    expect(checkpoint.entries.map((e) => e.volume).sort()).toEqual([BLK_VOL, FS_VOL]);
  });

  it('a repeated plug nudge changes nothing and leaves exactly one mount', async () => {
    dumpLogsOnFailure();
    const again = `op-again-${randomUUID()}`;
    await publishWork(workItem({ volume: FS_VOL, operationId: again, cause: 'resync' }));
    const [fact] = await waitFor(async () => {
      const found = await events(EventType.MountedToPod, again);
      return found.length === 1 ? found : undefined;
    });
    expect(fact!.data.details).toMatchObject({ changed: false });
    expect((await launcherView()).mounts).toEqual([`${FS_VOL}.img`]);
  });

  it('waits in its handling for its pod cache to show the attachment pod ready, not resting the unit', async () => {
    dumpLogsOnFailure();
    // Started with the pod not ready in its cache (the informers sync before the stage runs),
    // and a bound far above what the test needs, so only the change below ends the wait.
    await stopService();
    setAttachmentReady(false);
    await startService({ podCacheCatchUpMs: 30_000 });
    try {
      const op = `op-catch-up-${randomUUID()}`;
      await publishWork(workItem({ volume: FS_VOL, operationId: op }));
      await waitFor(
        () =>
          logs.lines.some(
            (l) =>
              l.msg === 'waiting for the pod cache to show the attachment pod ready' &&
              l.volume === FS_VOL,
          ),
        { interval: 5, description: 'the handling waiting on the pod cache' },
      );
      setAttachmentReady(true);
      const [fact] = await waitFor(async () => {
        const found = await events(EventType.MountedToPod, op);
        return found.length === 1 ? found : undefined;
      });
      expect(fact!.data.details).toMatchObject({ changed: false });
      expect(await restedWaiting()).toBe(0);
    } finally {
      setAttachmentReady(true);
      await stopService();
      await startService();
    }
  });

  it('survives a restart between plug and unplug: reconcile keeps what the spec wants', async () => {
    dumpLogsOnFailure();
    await stopService();
    const restarted = await startService();
    expect(restarted.reconciled.facts).toEqual([]);
    expect(restarted.reconciled.outcomes).toEqual([]);
    await waitFor(() => restarted.ready(), { description: 'the restarted service to be ready' });
    expect(await launcherView()).toEqual({
      files: [BLK_VOL, `${FS_VOL}.img`],
      mounts: [`${FS_VOL}.img`],
      rules: [blockRule()],
    });
  });

  it('keeps, at a restart, the volumes of a VMI its cache lacks (not labelled with a node yet) that the API server places here by its launcher', async () => {
    dumpLogsOnFailure();
    const plugged = await launcherView();
    expect(plugged.mounts).toEqual([`${FS_VOL}.img`]);
    await stopService();
    // Its informer selects VMIs by the kubevirt.io/nodeName label; this one has neither the
    // label nor a status.nodeName, and its launcher runs on this node.
    const unplaced = structuredClone(currentVmi());
    delete unplaced.metadata.labels;
    sim.store.update(Types.virtualmachineinstances, vmiName, unplaced as unknown as KubeObject, {
      namespace: ns,
    });
    setStatus({ phase: 'Running' });
    const restarted = await startService();
    expect(restarted.reconciled.outcomes).toEqual([]);
    expect(await launcherView()).toEqual(plugged);
    // Placed again (kube-sim labels it from its status) for the tests that follow.
    setStatus({ phase: 'Running', nodeName: NODE });
  });

  it('does not unmount while the domain may still hold the disk', async () => {
    dumpLogsOnFailure();
    setSpecVolumes([]);
    setStatus({
      phase: 'Running',
      nodeName: NODE,
      volumeStatus: [
        { name: FS_VOL, target: 'sda', phase: 'Ready' },
        { name: BLK_VOL, target: 'sdb', phase: 'Ready' },
      ],
    });
    const early = `op-early-${randomUUID()}`;
    await publishWork(
      workItem({ volume: FS_VOL, operationId: early, operation: 'unplug', cause: 'resync' }),
    );
    await drained();
    expect(await events(EventType.UnmountedFromPod, early)).toEqual([]);
    expect((await launcherView()).mounts).toEqual([`${FS_VOL}.img`]);
  });

  it("keeps a plug's item whose volume left the spec while the domain may hold it, and plugs when the volume returns with no new nudge", async () => {
    dumpLogsOnFailure();
    const readd = `op-readd-${randomUUID()}`;
    const looks = () =>
      logs.lines.filter(
        (l) =>
          l.msg === 'decided from the truth' &&
          l.volume === FS_VOL &&
          (l.decision as { reason?: string } | undefined)?.reason === 'DomainMayHoldDisk',
      ).length;
    const before = looks();
    await publishWork(workItem({ volume: FS_VOL, operationId: readd }));
    await waitFor(() => looks() > before, {
      description: 'the plug looked at while its volume is out of the spec',
    });
    expect(await events(EventType.MountedToPod, readd)).toEqual([]);

    // Back in the spec, and no work item says so: the spec-watcher never saw it leave.
    setSpecVolumes([FS_VOL, BLK_VOL]);
    onTestFinished(() => setSpecVolumes([]));
    await waitFor(async () => (await events(EventType.MountedToPod, readd)).length === 1, {
      timeout: 15_000,
      description: "the plug's mounted-to-pod",
    });
    const next = await waitFor(async () => {
      const work = await workFor(Stage.DomainUpdater, readd);
      return work.length === 1 ? work : undefined;
    });
    expect(next[0]).toMatchObject({ operation: 'plug', volume: FS_VOL, node: NODE });
    await drained();
  });

  it('unplugs after detached-from-domain, following the restart: nothing left, facts and orchestrator work', async () => {
    dumpLogsOnFailure();
    for (const volume of [FS_VOL, BLK_VOL]) {
      await publishWork(
        workItem({
          volume,
          operationId: unplugOp,
          operation: 'unplug',
          cause: EventType.DetachedFromDomain,
        }),
      );
    }
    const unmounted = await waitFor(
      async () => {
        const found = await events(EventType.UnmountedFromPod, unplugOp);
        return found.length === 2 ? found : undefined;
      },
      { timeout: 15_000, description: 'two unmounted-from-pod facts' },
    );
    expect(await launcherView()).toEqual({ files: [], mounts: [], rules: [] });
    const byVolume = new Map(unmounted.map((e) => [e.subject.split('/')[2], e]));
    expect(byVolume.get(FS_VOL)!.data).toMatchObject({
      operation: 'unplug',
      node: NODE,
      phase: 'UnMountedFromPod',
      reason: 'VolumeUnMountedFromPod',
      details: { mode: 'Filesystem', changed: true, unmounted: 1, removed: true },
    });
    expect(byVolume.get(BLK_VOL)!.data.details).toMatchObject({
      mode: 'Block',
      changed: true,
      removed: true,
      cgroup: 'denied',
    });
    const next = await waitFor(async () => {
      const w = await workFor(Stage.AttachmentOrchestrator, unplugOp);
      return w.length === 2 ? w : undefined;
    });
    for (const w of next) {
      expect(w.node).toBeUndefined();
      expect(w).toMatchObject({ operation: 'unplug', cause: EventType.UnmountedFromPod, vmiUID });
    }
    expect((await loadCheckpoint(stateDir, vmiUID)).entries).toEqual([]);

    // Idempotent: the same nudge again changes nothing.
    const twice = `op-twice-${randomUUID()}`;
    await publishWork(
      workItem({
        volume: BLK_VOL,
        operationId: twice,
        operation: 'unplug',
        cause: EventType.DetachedFromDomain,
      }),
    );
    const [fact] = await waitFor(async () => {
      const found = await events(EventType.UnmountedFromPod, twice);
      return found.length === 1 ? found : undefined;
    });
    expect(fact!.data.details).toMatchObject({ changed: false });
  });

  it('plugs by the spec, not the message: a volume back in the spec is re-plugged on a release nudge', async () => {
    dumpLogsOnFailure();
    setSpecVolumes([FS_VOL, BLK_VOL]);
    setStatus({ phase: 'Running', nodeName: NODE });
    const back = `op-back-${randomUUID()}`;
    // As the chain's items do, the nudge carries the generation its sender saw: a cache that has
    // not caught up with the spec yet is then read past (the nudge names an unplug, and a cache
    // still without the volume would agree with it).
    const observedGeneration = currentVmi().metadata.generation;
    expect(observedGeneration).toBeGreaterThan(1);
    for (const volume of [FS_VOL, BLK_VOL]) {
      await publishWork(
        workItem({
          volume,
          operationId: back,
          operation: 'unplug',
          cause: EventType.DetachedFromDomain,
          observedGeneration,
        }),
      );
    }
    await waitFor(async () => (await events(EventType.MountedToPod, back)).length === 2, {
      timeout: 15_000,
      description: 'both volumes mounted again',
    });
    expect(await launcherView()).toEqual({
      files: [BLK_VOL, `${FS_VOL}.img`],
      mounts: [`${FS_VOL}.img`],
      rules: [blockRule()],
    });
  });

  it('reconciles at start: what no spec wants any more is unmounted while the service was down', async () => {
    dumpLogsOnFailure();
    await stopService();
    setSpecVolumes([]);
    const restarted = await startService();
    expect(restarted.reconciled.facts.map((f) => f.volume).sort()).toEqual([BLK_VOL, FS_VOL]);
    expect(await launcherView()).toEqual({ files: [], mounts: [], rules: [] });
    expect((await loadCheckpoint(stateDir, vmiUID)).entries).toEqual([]);
  });

  it('while running, undoes what no spec wants on the second look (an unplug that never came)', async () => {
    dumpLogsOnFailure();
    setSpecVolumes([FS_VOL, BLK_VOL]);
    const replug = `op-replug-${randomUUID()}`;
    for (const volume of [FS_VOL, BLK_VOL]) {
      await publishWork(workItem({ volume, operationId: replug }));
    }
    await waitFor(async () => (await events(EventType.MountedToPod, replug)).length === 2, {
      timeout: 15_000,
      description: 'both volumes mounted',
    });
    const plugged = await launcherView();
    expect(plugged.mounts).toEqual([`${FS_VOL}.img`]);
    // The spec drops both and no unplug work follows, as when an earlier stage lost it.
    setSpecVolumes([]);
    const firstLook = await waitFor(
      async () => {
        const report = await service!.reconcile();
        return report.deferred === 2 ? report : undefined;
      },
      { description: 'a look that finds both volumes unwanted' },
    );
    expect(firstLook.outcomes).toEqual([]);
    expect(await launcherView()).toEqual(plugged);
    const secondLook = await service!.reconcile();
    expect(secondLook.outcomes.map((o) => [o.volume, o.error]).sort()).toEqual([
      [BLK_VOL, undefined],
      [FS_VOL, undefined],
    ]);
    expect(await launcherView()).toEqual({ files: [], mounts: [], rules: [] });
    expect((await loadCheckpoint(stateDir, vmiUID)).entries).toEqual([]);
  });

  it('never consumes a work item for another node', async () => {
    dumpLogsOnFailure();
    setSpecVolumes([FS_VOL, BLK_VOL]);
    const foreign = workItem({ node: OTHER_NODE, operationId: `op-foreign-${randomUUID()}` });
    await publishWork(foreign);
    // A barrier on our own node: once it is handled, the foreign item has had every chance.
    const barrier = `op-barrier-${randomUUID()}`;
    await publishWork(workItem({ volume: FS_VOL, operationId: barrier }));
    await waitFor(async () => (await events(EventType.MountedToPod, barrier)).length === 1, {
      timeout: 15_000,
    });
    await drained();
    const stored = await bus.jsm.streams.getMessage(StreamName.Work, {
      last_by_subj: workSubject(foreign),
    });
    expect(JSON.parse(decoder.decode(stored!.data))).toMatchObject({
      operationId: foreign.operationId,
    });
    expect(await events(EventType.MountedToPod, foreign.operationId)).toEqual([]);
  });

  it('refuses names that would escape the kubelet root: dead-letters bad names, terminates a bad UID', async () => {
    dumpLogsOnFailure();
    // A volume name with a traversal is no DNS-1123 label: never decoded, dead-lettered.
    const evil = {
      ...workItem({ operationId: `op-evil-${randomUUID()}` }),
      volume: '../../../../etc',
    };
    const subject = workSubject({ ...evil, volume: 'x' }).replace(
      /\.x$/,
      `.${encodeToken(evil.volume)}`,
    );
    await bus.js.publish(subject, new TextEncoder().encode(JSON.stringify(evil)));
    const letter = await waitFor(async () =>
      (await streamMessages(StreamName.DeadLetters)).find(
        (m) =>
          m.subject === deadLetterSubject(Stage.NodeMounter) &&
          m.header?.get('Plugline-Subject') === subject,
      ),
    );
    expect(letter.header!.get('Plugline-Reason')).toBe('invalid-data');
    expect(letter.header!.get('Plugline-Error')).toMatch(/volume is not a DNS-1123 label/);

    // A VMI UID of `..` passes the envelope check but never becomes a path: terminated, `failed`.
    const dots = workItem({ vmiUID: '..', operationId: `op-dots-${randomUUID()}` });
    await publishWork(dots);
    const [failed] = await waitFor(async () => {
      const found = await events(EventType.Failed, dots.operationId);
      return found.length === 1 ? found : undefined;
    });
    expect(failed!.data.reason).toBe('PathEscape');
    expect(failed!.data.message).toMatch(/outside/);
    await drained();
    expect(existsSync(join(stateDir, '...json'))).toBe(false);
    expect((await readdir(stateDir)).every((f) => /^[a-z0-9-]+\.json$/.test(f))).toBe(true);
  });
});
