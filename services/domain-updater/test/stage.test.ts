import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, ensureStageBuckets, kvKey, StreamName, type Bus } from '@plugline/bus';
import {
  decodeEvent,
  decodeWorkItem,
  encodeMessage,
  eventSubject,
  newOperationId,
  Stage,
  workSubject,
  type Disk,
  type VirtualMachineInstance,
  type VolumeEvent,
  type WorkItem,
} from '@plugline/contracts';
import {
  createSimulatedDriver,
  type DomainDriver,
  type SimulatedDriver,
} from '@plugline/hypervisor';
import { loadKubeConfig } from '@plugline/kube';
import { startKubeSim, Types, type KubeObject, type KubeSim } from '@plugline/kube-sim';
import { silentLogger } from '@plugline/telemetry';
import { startNats, tempDir, waitFor, type NatsServer, type TempDir } from '@plugline/testkit';
import {
  hotplugHostDir,
  provisionDomainUpdater,
  startDomainUpdater,
  type DomainUpdater,
  type DomainUpdaterSettings,
} from '../src/index.js';

/**
 * Stage tier: the domain-updater in-process against a real nats-server, kube-sim (with its
 * kubelet, for the launcher's hotplug folder) and the simulated hypervisor, wrapped to count the
 * attach and detach calls. The test stands in for node-mounter by creating the source file.
 */

const NODE = 'node-a';
const DETACH_TIMEOUT_MS = 400;
const ns = `du-${randomBytes(4).toString('hex')}`;

let nats: NatsServer;
let sim: KubeSim;
let bus: Bus;
let dir: TempDir;
let hypervisor: SimulatedDriver;
let updater: DomainUpdater | undefined;
const calls = { attach: [] as string[], detach: [] as string[] };
/** When each detach call was made (epoch ms), by domain. */
const detachTimes = new Map<string, number[]>();
const events: VolumeEvent[] = [];
const nodeMounterWork: WorkItem[] = [];
const ownWork: WorkItem[] = [];

/** The simulated driver, counting the calls that change a domain. */
function counting(driver: SimulatedDriver): DomainDriver {
  return {
    attachDisk: (domain, xml, o) => {
      calls.attach.push(`${domain}:${/alias name='([^']+)'/.exec(xml)?.[1] ?? '?'}`);
      return driver.attachDisk(domain, xml, o);
    },
    detachDisk: (domain, target, o) => {
      calls.detach.push(`${domain}:${target}`);
      detachTimes.set(domain, [...(detachTimes.get(domain) ?? []), Date.now()]);
      return driver.detachDisk(domain, target, o);
    },
    listDisks: (d, o) => driver.listDisks(d, o),
    domainXml: (d, o) => driver.domainXml(d, o),
    subscribe: (l) => driver.subscribe(l),
    events: (o) => driver.events(o),
    close: () => Promise.resolve(),
  };
}

const settings = (): DomainUpdaterSettings => ({
  nodeName: NODE,
  kubeletRoot: sim.kubeletRoot,
  hypervisor: 'simulated',
  libvirtUri: 'qemu:///system',
  simStateDir: dir.join('hv-state'),
  simDetachDelayMs: 30,
  detachTimeoutMs: DETACH_TIMEOUT_MS,
  diskSourceDir: 'host',
  confirmTimeoutMs: 2000,
  concurrency: 8,
});

async function startUpdater(
  overrides: Partial<DomainUpdaterSettings> = {},
): Promise<DomainUpdater> {
  const kc = loadKubeConfig({ kubeconfig: sim.kubeconfigPath });
  return startDomainUpdater(
    { ...settings(), ...overrides },
    {
      bus,
      kc,
      logger: silentLogger(),
      driver: counting(hypervisor),
      defineDomain: (d) => hypervisor.defineDomain(d),
      listDomains: () => hypervisor.listDomains(),
    },
  );
}

interface TestVmi {
  name: string;
  uid: string;
  domain: string;
  hotplugDir: string;
}

function vmiOf(name: string): VirtualMachineInstance {
  return sim.store.get(
    Types.virtualmachineinstances,
    ns,
    name,
  ) as unknown as VirtualMachineInstance;
}

async function createVmi(name: string): Promise<TestVmi> {
  const created = sim.store.create(
    Types.virtualmachineinstances,
    {
      apiVersion: 'kubevirt.io/v1',
      kind: 'VirtualMachineInstance',
      metadata: { name },
      spec: { domain: { devices: { disks: [] } }, volumes: [] },
    },
    { namespace: ns },
  );
  const uid = created.metadata!.uid!;
  sim.store.update(
    Types.virtualmachineinstances,
    name,
    { ...structuredClone(created), status: { phase: 'Running', nodeName: NODE } },
    { namespace: ns, subresource: 'status' },
  );
  const pod = sim.store.create(
    Types.pods,
    {
      metadata: {
        name: `virt-launcher-${name}-abcde`,
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
    },
    { namespace: ns },
  );
  const hotplugDir = hotplugHostDir(sim.kubeletRoot, pod.metadata!.uid!);
  await waitFor(() => existsSync(hotplugDir), { timeout: 10_000, description: 'launcher folder' });
  return { name, uid, domain: `${ns}_${name}`, hotplugDir };
}

/** Adds a volume (PVC, spec volume and disk) and its source file, as node-mounter would. */
async function plugVolume(vmi: TestVmi, volume: string, bus_ = 'scsi'): Promise<void> {
  sim.store.create(
    Types.persistentvolumeclaims,
    {
      metadata: { name: `claim-${volume}` },
      spec: {
        accessModes: ['ReadWriteOnce'],
        volumeMode: 'Filesystem',
        resources: { requests: { storage: '16Mi' } },
      },
    },
    { namespace: ns },
  );
  await addBack(vmi, volume, bus_);
}

/** Puts a volume (its PVC still there) back into the spec, and its source file. */
async function addBack(vmi: TestVmi, volume: string, bus_ = 'scsi'): Promise<void> {
  const current = structuredClone(vmiOf(vmi.name));
  current.spec.volumes = [
    ...(current.spec.volumes ?? []),
    { name: volume, persistentVolumeClaim: { claimName: `claim-${volume}`, hotpluggable: true } },
  ];
  const disk: Disk = { name: volume, disk: { bus: bus_ as 'scsi' }, serial: `serial-${volume}` };
  current.spec.domain.devices.disks = [...(current.spec.domain.devices.disks ?? []), disk];
  sim.store.update(Types.virtualmachineinstances, vmi.name, current as unknown as KubeObject, {
    namespace: ns,
  });
  await writeFile(`${vmi.hotplugDir}/${volume}.img`, Buffer.alloc(1024 * 1024));
}

function unplugVolume(vmi: TestVmi, volume: string): void {
  const current = structuredClone(vmiOf(vmi.name));
  current.spec.volumes = (current.spec.volumes ?? []).filter((v) => v.name !== volume);
  current.spec.domain.devices.disks = (current.spec.domain.devices.disks ?? []).filter(
    (d) => d.name !== volume,
  );
  sim.store.update(Types.virtualmachineinstances, vmi.name, current as unknown as KubeObject, {
    namespace: ns,
  });
}

function workFor(vmi: TestVmi, volume: string, operation: 'plug' | 'unplug'): WorkItem {
  return {
    v: 1,
    stage: Stage.DomainUpdater,
    node: NODE,
    namespace: ns,
    vmi: vmi.name,
    vmiUID: vmi.uid,
    volume,
    operationId: `op-${operation}-${volume}`,
    operation,
    cause: operation === 'plug' ? 'mounted-to-pod' : 'unplug-requested',
    issuedAt: new Date().toISOString(),
  };
}

/** Publishes a work item with a fresh `Nats-Msg-Id`, so a repeat is really delivered twice. */
async function publish(item: WorkItem): Promise<void> {
  await bus.js.publish(workSubject(item), encodeMessage(item), { msgID: randomUUID() });
}

const eventsOf = (volume: string, type: string) =>
  events.filter(
    (e) =>
      e.subject.startsWith(`${ns}/`) &&
      e.subject.endsWith(`/${volume}`) &&
      e.type === `io.plugline.volume.${type}`,
  );

/** The volume's last `ready` the event stream keeps (what the status is made from). */
async function lastStoredReady(vmi: string, volume: string): Promise<VolumeEvent | undefined> {
  const last = await bus.jsm.streams.getMessage(StreamName.Events, {
    last_by_subj: eventSubject({ namespace: ns, vmi, volume }, 'ready'),
  });
  const decoded = last === null ? undefined : decodeEvent(last.data);
  return decoded?.ok === true ? decoded.value : undefined;
}

async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
): Promise<Exclude<T, undefined | false>> {
  return waitFor(check, { timeout: 10_000, description: what });
}

async function liveDisk(vmi: TestVmi, volume: string) {
  return (await hypervisor.listDisks(vmi.domain)).find((d) => d.alias === `ua-${volume}`);
}

/** A detach is asked again only once the one before it has timed out: never twice in a timeout. */
function expectOnePerTimeout(times: readonly number[]): void {
  expect(times.length).toBeGreaterThanOrEqual(2);
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  expect(Math.min(...gaps)).toBeGreaterThanOrEqual(DETACH_TIMEOUT_MS);
}

beforeAll(async () => {
  dir = await tempDir('domain-updater-');
  nats = await startNats();
  sim = await startKubeSim({ nodes: [NODE], namespaces: [ns], podStartLatencyMs: 10 });
  bus = await connectBus({ servers: nats.url, name: 'domain-updater-test' });
  await provisionDomainUpdater(bus, { nodeName: NODE });
  bus.nc.subscribe('plugline.v1.events.>', {
    callback: (_err, msg) => {
      const decoded = decodeEvent(msg.data);
      if (decoded.ok) events.push(decoded.value);
    },
  });
  bus.nc.subscribe(`plugline.v1.work.${Stage.NodeMounter}.>`, {
    callback: (_err, msg) => {
      const decoded = decodeWorkItem(msg.data);
      if (decoded.ok) nodeMounterWork.push(decoded.value);
    },
  });
  bus.nc.subscribe(`plugline.v1.work.${Stage.DomainUpdater}.>`, {
    callback: (_err, msg) => {
      const decoded = decodeWorkItem(msg.data);
      if (decoded.ok) ownWork.push(decoded.value);
    },
  });
  hypervisor = createSimulatedDriver({ detachDelayMs: 30, stateDir: dir.join('hv-state') });
  updater = await startUpdater();
}, 60_000);

afterAll(async () => {
  await updater?.stop();
  await hypervisor?.close();
  await bus?.close();
  await sim?.stop();
  await nats?.stop();
  await dir?.remove();
}, 60_000);

describe('domain-updater on the simulated hypervisor', () => {
  let vm1: TestVmi;

  it('defines the domain of a running VMI and attaches a mounted volume: ready with target sda', async () => {
    vm1 = await createVmi('vm1');
    await plugVolume(vm1, 'data1');
    await publish(workFor(vm1, 'data1', 'plug'));
    const ready = await until('ready of data1', () => eventsOf('data1', 'ready')[0]);
    expect(ready.data).toMatchObject({
      target: 'sda',
      operationId: 'op-plug-data1',
      operation: 'plug',
      phase: 'Ready',
      reason: 'VolumeReady',
      node: NODE,
      vmiUID: vm1.uid,
    });
    expect(ready.source).toBe('plugline/domain-updater');
    const disk = await liveDisk(vm1, 'data1');
    expect(disk).toMatchObject({
      target: 'sda',
      bus: 'scsi',
      serial: 'serial-data1',
      sourcePath: `${vm1.hotplugDir}/data1.img`,
    });
    expect(calls.attach).toEqual([`${vm1.domain}:ua-data1`]);
  });

  it('gives a second volume the next free target (sdb) and a virtio disk vda', async () => {
    await plugVolume(vm1, 'data2');
    await plugVolume(vm1, 'fast', 'virtio');
    await publish(workFor(vm1, 'data2', 'plug'));
    await publish(workFor(vm1, 'fast', 'plug'));
    const sdb = await until('ready of data2', () => eventsOf('data2', 'ready')[0]);
    const vda = await until('ready of fast', () => eventsOf('fast', 'ready')[0]);
    expect(sdb.data.target).toBe('sdb');
    expect(vda.data.target).toBe('vda');
    expect((await liveDisk(vm1, 'fast'))?.bus).toBe('virtio');
  });

  it('attaches once when the same work item is delivered twice', async () => {
    await plugVolume(vm1, 'twice');
    const item = workFor(vm1, 'twice', 'plug');
    await Promise.all([publish(item), publish(item)]);
    await until('ready of twice', () => eventsOf('twice', 'ready')[0]);
    // Both deliveries are handled (the consumer has nothing pending) before counting.
    await until('both deliveries handled', async () => {
      const info = await bus.jsm.consumers.info('PLUGLINE_WORK', `domain-updater-${NODE}`);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    expect(calls.attach.filter((c) => c.endsWith(':ua-twice'))).toHaveLength(1);
    expect(
      (await hypervisor.listDisks(vm1.domain)).filter((d) => d.alias === 'ua-twice'),
    ).toHaveLength(1);
    expect(eventsOf('twice', 'ready')).toHaveLength(1);
  });

  it('gives volumes planned together distinct targets at the first attempt (one attach call each)', async () => {
    const vm5 = await createVmi('vm5');
    const names = Array.from({ length: 12 }, (_, i) => `many${i}`);
    for (const n of names) await plugVolume(vm5, n);
    await Promise.all(names.map((n) => publish(workFor(vm5, n, 'plug'))));
    const ready = await until('ready of all twelve', () => {
      const all = names.map((n) => eventsOf(n, 'ready')[0]);
      return all.every((e) => e !== undefined) && all;
    });
    expect(new Set(ready.map((e) => e.data.target)).size).toBe(names.length);
    expect(calls.attach.filter((c) => c.startsWith(`${vm5.domain}:`))).toHaveLength(names.length);
  });

  it('handles its own attach once (no device-added nudge), and is nudged by a disk attached by someone else', async () => {
    const vm4 = await createVmi('vm4');
    await plugVolume(vm4, 'own');
    await publish(workFor(vm4, 'own', 'plug'));
    await until('ready of own', () => eventsOf('own', 'ready')[0]);
    await until('the consumer is idle', async () => {
      const info = await bus.jsm.consumers.info('PLUGLINE_WORK', `domain-updater-${NODE}`);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    expect(ownWork.filter((w) => w.volume === 'own').map((w) => w.cause)).toEqual([
      'mounted-to-pod',
    ]);

    await plugVolume(vm4, 'outside');
    await hypervisor.attachDisk(
      vm4.domain,
      `<disk type='file' device='disk'><driver name='qemu' type='raw'/>` +
        `<source file='${vm4.hotplugDir}/outside.img'/><target dev='sdb' bus='scsi'/>` +
        `<serial>serial-outside</serial><alias name='ua-outside'/></disk>`,
    );
    const nudge = await until('a device-added nudge for outside', () =>
      ownWork.find((w) => w.volume === 'outside'),
    );
    expect(nudge).toMatchObject({ cause: 'device-added', operation: 'plug', vmiUID: vm4.uid });
    const ready = await until('ready of outside', () => eventsOf('outside', 'ready')[0]);
    expect(ready.data).toMatchObject({ target: 'sdb', operationId: nudge.operationId });
    expect(calls.attach.filter((c) => c.startsWith(vm4.domain))).toEqual([`${vm4.domain}:ua-own`]);
  });

  it('detaches a volume that left the spec: detached-from-domain, then work for node-mounter', async () => {
    unplugVolume(vm1, 'data1');
    await publish(workFor(vm1, 'data1', 'unplug'));
    const detached = await until(
      'detached-from-domain of data1',
      () => eventsOf('data1', 'detached-from-domain')[0],
    );
    expect(detached.data).toMatchObject({ operation: 'unplug', target: 'sda', node: NODE });
    const work = await until('node-mounter work', () =>
      nodeMounterWork.find((w) => w.volume === 'data1'),
    );
    expect(work).toMatchObject({
      stage: 'node-mounter',
      node: NODE,
      namespace: ns,
      vmi: 'vm1',
      vmiUID: vm1.uid,
      operation: 'unplug',
      cause: 'detached-from-domain',
      operationId: 'op-unplug-data1',
    });
    expect(await liveDisk(vm1, 'data1')).toBeUndefined();
    expect(calls.detach).toEqual([`${vm1.domain}:sda`]);
  });

  it('acks an unplug waiting for the guest once its detach is reported, not at its next look', async () => {
    const consumer = () => bus.jsm.consumers.info('PLUGLINE_WORK', `domain-updater-${NODE}`);
    const idle = async () => {
      const info = await consumer();
      return info.num_pending === 0 && info.num_ack_pending === 0 && info;
    };
    // The guest may hold a disk for a minute here (a unit keeps the bound it started with): the
    // item's own next look comes after 5 s (the recheck), far beyond the 30 ms the guest takes.
    await updater?.stop();
    updater = await startUpdater({ detachTimeoutMs: 60_000 });
    try {
      const vm6 = await createVmi('vm6');
      await plugVolume(vm6, 'brief');
      await publish(workFor(vm6, 'brief', 'plug'));
      await until('ready of brief', () => eventsOf('brief', 'ready')[0]);
      const before = await until('the consumer is idle', idle);
      const sentBefore = ownWork.length;

      unplugVolume(vm6, 'brief');
      await publish(workFor(vm6, 'brief', 'unplug'));
      await until(
        'detached-from-domain of brief',
        () => eventsOf('brief', 'detached-from-domain')[0],
      );
      // The device-removed nudge finished the unit; left to its next look, the unplug's item
      // would come back for a second delivery.
      const after = await until('the consumer is idle', idle);
      const sent = ownWork.length - sentBefore;
      expect(after.delivered.consumer_seq - before.delivered.consumer_seq).toBe(sent);
    } finally {
      await updater?.stop();
      updater = await startUpdater();
    }
    // Room for the item's own look after 5 s, so that without the early ack this fails on the
    // count of deliveries, not on the time.
  }, 20_000);

  it('reports a guest that never lets go (DetachTimeout), keeps the volume, asks again once per timeout, and finishes once it lets go', async () => {
    const vm2 = await createVmi('vm2');
    await plugVolume(vm2, 'sticky');
    await publish(workFor(vm2, 'sticky', 'plug'));
    await until('ready of sticky', () => eventsOf('sticky', 'ready')[0]);
    await hypervisor.setStuck(`${vm2.domain}/ua-sticky`, true);
    unplugVolume(vm2, 'sticky');
    await publish(workFor(vm2, 'sticky', 'unplug'));
    const failed = await until('failed of sticky', () => eventsOf('sticky', 'failed')[0]);
    expect(failed.data).toMatchObject({
      reason: 'DetachTimeout',
      operation: 'unplug',
      target: 'sda',
    });
    expect(failed.data.message).toContain('sticky');
    expect(failed.data.message).toContain(vm2.domain);
    expect(nodeMounterWork.filter((w) => w.volume === 'sticky')).toEqual([]);
    expect(eventsOf('sticky', 'detached-from-domain')).toEqual([]);
    expect(await liveDisk(vm2, 'sticky')).toBeDefined();
    expect(existsSync(`${vm2.hotplugDir}/sticky.img`)).toBe(true);
    await until('the detach asked again', () => (detachTimes.get(vm2.domain) ?? []).length >= 3);
    expect(new Set(calls.detach.filter((c) => c.startsWith(vm2.domain)))).toEqual(
      new Set([`${vm2.domain}:sda`]),
    );

    await hypervisor.setStuck(`${vm2.domain}/ua-sticky`, false);
    await until('node-mounter work for sticky', () =>
      nodeMounterWork.find((w) => w.volume === 'sticky'),
    );
    expect(eventsOf('sticky', 'detached-from-domain')).toHaveLength(1);
    expect(eventsOf('sticky', 'failed')).toHaveLength(1);
    expectOnePerTimeout(detachTimes.get(vm2.domain) ?? []);
  });

  it('a volume added back (on another bus) while the guest holds its detached disk is Ready with that disk past the grace, and attached afresh under the new bus once the guest lets go, its new target stored', async () => {
    const vm7 = await createVmi('vm7');
    const attachesOf = () => calls.attach.filter((c) => c.startsWith(vm7.domain));
    await plugVolume(vm7, 'clung');
    await publish(workFor(vm7, 'clung', 'plug'));
    await until('ready of clung', () => eventsOf('clung', 'ready')[0]);
    await hypervisor.setStuck(`${vm7.domain}/ua-clung`, true);
    unplugVolume(vm7, 'clung');
    const unplugId = newOperationId(new Date());
    await publish({ ...workFor(vm7, 'clung', 'unplug'), operationId: unplugId });
    await until('the detach call', () => calls.detach.some((c) => c.startsWith(vm7.domain)));

    await addBack(vm7, 'clung', 'virtio');
    const reAddId = newOperationId(new Date(Date.now() + 1));
    await publish({ ...workFor(vm7, 'clung', 'plug'), operationId: reAddId });
    const ready = await until('ready of the re-add', () =>
      eventsOf('clung', 'ready').find((e) => e.data.operationId === reAddId),
    );
    expect(ready.data.target).toBe('sda');
    expect(attachesOf()).toHaveLength(1);
    expect(eventsOf('clung', 'detached-from-domain')).toEqual([]);
    expect(nodeMounterWork.filter((w) => w.volume === 'clung')).toEqual([]);

    // The guest lets go of the detach it was asked for: the disk comes back, the volume mounted.
    await hypervisor.setStuck(`${vm7.domain}/ua-clung`, false);
    await until(
      'the disk attached again',
      async () => attachesOf().length === 2 && liveDisk(vm7, 'clung'),
    );
    expect(nodeMounterWork.filter((w) => w.volume === 'clung')).toEqual([]);
    expect(existsSync(`${vm7.hotplugDir}/clung.img`)).toBe(true);
    // The re-add's `ready` again, naming the new disk, in the stream the status is made from: a
    // second `ready` of one operation was once dropped there as a duplicate of the first.
    const fresh = (await liveDisk(vm7, 'clung'))!;
    expect(fresh.target).toMatch(/^vd/);
    const stored = await until('the new target stored', async () => {
      const last = await lastStoredReady('vm7', 'clung');
      return last?.data.target === fresh.target && last;
    });
    expect(stored.data.operationId).toBe(reAddId);
  }, 15_000);

  it("its periodic look tells a Ready status that names another target than the volume's disk where the disk is, past the stream's duplicate window", async () => {
    const vm9 = await createVmi('vm9');
    await plugVolume(vm9, 'misnamed');
    await publish(workFor(vm9, 'misnamed', 'plug'));
    const first = await until('ready of misnamed', () => eventsOf('misnamed', 'ready')[0]);
    // The status lost the disk's report and names the disk a guest had kept before.
    const current = structuredClone(vmiOf('vm9'));
    current.status = {
      ...current.status,
      volumeStatus: [{ name: 'misnamed', phase: 'Ready', target: 'vdq' }],
    };
    sim.store.update(Types.virtualmachineinstances, 'vm9', current as unknown as KubeObject, {
      namespace: ns,
      subresource: 'status',
    });
    await until('the informer has the status', () =>
      updater!.reconcile().then((nudged) => nudged > 0),
    );
    // Stated again in a round of its own, so that the stream keeps it (the first is in it).
    const again = await until('ready of misnamed stored again', async () => {
      const last = await lastStoredReady('vm9', 'misnamed');
      return last?.data.resync !== undefined && last;
    });
    expect(again.data).toMatchObject({
      target: first.data.target,
      operationId: first.data.operationId,
    });
    expect(first.data.target).toBe((await liveDisk(vm9, 'misnamed'))!.target);
  }, 15_000);

  it("a unit's snapshot put back to a detach in flight, after the disk was removed and attached again, does not hold the next unplug: its detach goes out", async () => {
    // A NATS store rolled back after a SIGKILL can hand the unit a snapshot older than the domain.
    const vm8 = await createVmi('vm8');
    const { snapshots } = await ensureStageBuckets(bus, Stage.DomainUpdater);
    const key = kvKey(`${ns}/vm8/rolled`);
    const detachesOf = () => calls.detach.filter((c) => c.startsWith(vm8.domain));
    await plugVolume(vm8, 'rolled');
    await publish(workFor(vm8, 'rolled', 'plug'));
    await until('ready of rolled', () => eventsOf('rolled', 'ready')[0]);
    // The guest holds the first detach long enough to read the snapshot that records it.
    await hypervisor.setStuck(`${vm8.domain}/ua-rolled`, true);
    unplugVolume(vm8, 'rolled');
    await publish({ ...workFor(vm8, 'rolled', 'unplug'), operationId: newOperationId(new Date()) });
    const inFlight = await until('the snapshot with the detach in flight', async () => {
      const entry = await snapshots.get(key);
      const text = entry === null ? '' : new TextDecoder().decode(entry.value);
      return text.includes('"detachRequestedAt":1') && entry!.value;
    });
    await hypervisor.setStuck(`${vm8.domain}/ua-rolled`, false);
    await until('node-mounter work for rolled', () =>
      nodeMounterWork.find((w) => w.volume === 'rolled'),
    );

    await addBack(vm8, 'rolled');
    const reAdd = newOperationId(new Date(Date.now() + 1));
    await publish({ ...workFor(vm8, 'rolled', 'plug'), operationId: reAdd });
    await until('ready of the re-add', () =>
      eventsOf('rolled', 'ready').find((e) => e.data.operationId === reAdd),
    );
    await snapshots.put(key, inFlight);

    unplugVolume(vm8, 'rolled');
    const unplug = newOperationId(new Date(Date.now() + 2));
    await publish({ ...workFor(vm8, 'rolled', 'unplug'), operationId: unplug });
    await until('node-mounter work for the second unplug', () =>
      nodeMounterWork.find((w) => w.volume === 'rolled' && w.operationId === unplug),
    );
    expect(detachesOf()).toHaveLength(2);
    expect(await liveDisk(vm8, 'rolled')).toBeUndefined();
    expect(eventsOf('rolled', 'failed')).toEqual([]);
  });

  it('after a restart mid-detach, sends the detach again only once its timeout has passed', async () => {
    const vm3 = await createVmi('vm3');
    await plugVolume(vm3, 'held');
    await publish(workFor(vm3, 'held', 'plug'));
    await until('ready of held', () => eventsOf('held', 'ready')[0]);
    await hypervisor.setStuck(`${vm3.domain}/ua-held`, true);
    unplugVolume(vm3, 'held');
    await publish(workFor(vm3, 'held', 'unplug'));
    await until('the detach call', () => calls.detach.some((c) => c.startsWith(vm3.domain)));
    await updater!.stop(); // waits for the unit to settle and persist
    updater = await startUpdater(); // its start-up reconcile nudges the volume
    await publish(workFor(vm3, 'held', 'unplug'));
    await until('the stuck report', () => eventsOf('held', 'failed')[0]);
    await until('the detach asked again', () => (detachTimes.get(vm3.domain) ?? []).length >= 2);

    await hypervisor.setStuck(`${vm3.domain}/ua-held`, false);
    await until('node-mounter work for held', () =>
      nodeMounterWork.find((w) => w.volume === 'held'),
    );
    expect(await liveDisk(vm3, 'held')).toBeUndefined();
    expectOnePerTimeout(detachTimes.get(vm3.domain) ?? []);
  });
});
