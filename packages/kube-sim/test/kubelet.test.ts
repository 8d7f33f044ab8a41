/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument -- assertions read API JSON loosely */
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SimAnnotation, Types, loopDevicesUnder, startKubeSim } from '../src/index.js';
import type { KubeObject, KubeSim } from '../src/index.js';
import { rand } from './helpers.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

function canLoop(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('losetup', ['--version']);
    return true;
  } catch {
    return false;
  }
}

const hasLoop = canLoop();
if (!hasLoop) console.warn('kubelet volume test skipped: needs root and losetup');

type Obj = Record<string, any>;

function claim(
  name: string,
  size: string,
  block: boolean,
  annotations: Record<string, string> = {},
): KubeObject {
  return {
    metadata: { name, annotations },
    spec: {
      accessModes: ['ReadWriteOnce'],
      volumeMode: block ? 'Block' : 'Filesystem',
      resources: { requests: { storage: size } },
    },
  };
}

function launcher(name: string): KubeObject {
  return {
    metadata: { name, labels: { 'kubevirt.io': 'virt-launcher' } },
    spec: {
      nodeName: 'node-a',
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

function attachmentPod(fsClaim: string, blockClaim: string, blockUid: string): KubeObject {
  return {
    metadata: { generateName: 'hp-volume-', labels: { 'kubevirt.io': 'hotplug-disk' } },
    spec: {
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              {
                matchExpressions: [
                  { key: 'kubernetes.io/hostname', operator: 'In', values: ['node-b'] },
                ],
              },
            ],
          },
        },
      },
      terminationGracePeriodSeconds: 0,
      containers: [
        {
          name: 'hotplug-disk',
          image: 'virt-launcher',
          volumeMounts: [
            { name: 'hotplug-disks', mountPath: '/path' },
            { name: 'fsvol', mountPath: '/fsvol' },
          ],
          volumeDevices: [{ name: 'blockvol', devicePath: `/path/blockvol/${blockUid}` }],
        },
      ],
      volumes: [
        { name: 'hotplug-disks', emptyDir: {} },
        { name: 'fsvol', persistentVolumeClaim: { claimName: fsClaim } },
        { name: 'blockvol', persistentVolumeClaim: { claimName: blockClaim } },
      ],
    },
  };
}

async function running(sim: KubeSim, ns: string, name: string): Promise<Obj> {
  let pod: Obj | undefined;
  await vi.waitFor(
    () => {
      pod = sim.store.peek(Types.pods, ns, name);
      expect(pod?.status?.phase).toBe('Running');
    },
    { timeout: 10_000, interval: 20 },
  );
  return pod!;
}

async function blockSize(device: string): Promise<number> {
  const { stdout } = await run('blockdev', ['--getsize64', device]);
  return Number(stdout.trim());
}

describe.skipIf(!hasLoop)('kubelet volumes (real files and loop devices)', () => {
  let sim: KubeSim;
  let stateDir: string;
  const ns = rand('kubelet');

  beforeAll(async () => {
    sim = await startKubeSim({
      nodes: ['node-a', 'node-b'],
      podStartLatencyMs: 20,
      namespaces: [ns],
    });
    stateDir = sim.layout.stateDir();
  });

  afterAll(async () => {
    await sim?.stop();
    // Whatever happened, no loop device of ours may remain.
    for (const { device } of await loopDevicesUnder(stateDir)) {
      await run('losetup', ['-d', device]);
    }
  });

  it('makes a disk image and a loop device in the kubelet layout, keeps the data, and tears down', async () => {
    const fs = sim.store.create(Types.persistentvolumeclaims, claim('fs-claim', '64Mi', false), {
      namespace: ns,
    });
    const block = sim.store.create(
      Types.persistentvolumeclaims,
      claim('block-claim', '32Mi', true),
      { namespace: ns },
    );
    const launcherPod = sim.store.create(Types.pods, launcher('virt-launcher-vm1-abcde'), {
      namespace: ns,
    });
    const pod1 = sim.store.create(
      Types.pods,
      attachmentPod('fs-claim', 'block-claim', block.metadata!.uid!),
      { namespace: ns },
    );

    const started = await running(sim, ns, pod1.metadata!.name!);
    expect(started.spec.nodeName).toBe('node-b');
    expect(started.status.containerStatuses[0].ready).toBe(true);
    expect(started.status.podIP).toMatch(/^10\.244\./);
    await running(sim, ns, launcherPod.metadata!.name!);

    const fsPvc = sim.store.get(Types.persistentvolumeclaims, ns, 'fs-claim') as Obj;
    const blockPvc = sim.store.get(Types.persistentvolumeclaims, ns, 'block-claim') as Obj;
    expect(fsPvc.status.phase).toBe('Bound');
    expect(fsPvc.spec.volumeName).toBe(`pvc-${fs.metadata!.uid}`);
    expect(sim.store.peek(Types.persistentvolumes, undefined, fsPvc.spec.volumeName)).toBeDefined();

    const root = sim.kubeletRoot;
    const uid = pod1.metadata!.uid!;
    const image = `${root}/pods/${uid}/volumes/kubernetes.io~csi/${fsPvc.spec.volumeName}/mount/disk.img`;
    expect(statSync(image).size).toBe(64 * MiB);
    expect(statSync(image).blocks * 512).toBeLessThan(MiB); // sparse
    const node = `${root}/pods/${uid}/volumeDevices/kubernetes.io~csi/${blockPvc.spec.volumeName}`;
    const st = statSync(node);
    expect(st.isBlockDevice()).toBe(true);
    const loops = await loopDevicesUnder(stateDir);
    expect(loops).toHaveLength(1);
    expect(statSync(loops[0]!.device).rdev).toBe(st.rdev);
    expect(await blockSize(node)).toBe(32 * MiB);
    expect(
      existsSync(
        `${root}/pods/${launcherPod.metadata!.uid}/volumes/kubernetes.io~empty-dir/hotplug-disks`,
      ),
    ).toBe(true);
    expect(existsSync(`${root}/pods/${uid}/volumes/kubernetes.io~empty-dir/hotplug-disks`)).toBe(
      true,
    );

    // Write through the device and the image; delete the pod: everything of it goes.
    const fd = openSync(node, 'r+');
    writeSync(fd, Buffer.from('plugline-block'), 0, 14, 4096);
    closeSync(fd);
    const fdImg = openSync(image, 'r+');
    writeSync(fdImg, Buffer.from('plugline-fs'), 0, 11, 8192);
    closeSync(fdImg);
    sim.store.delete(Types.pods, ns, pod1.metadata!.name!, { gracePeriodSeconds: 0 });
    await vi.waitFor(
      async () => {
        expect(existsSync(`${root}/pods/${uid}`)).toBe(false);
        expect(await loopDevicesUnder(stateDir)).toEqual([]);
      },
      { timeout: 10_000, interval: 20 },
    );

    // A new pod gets the same data back.
    const pod2 = sim.store.create(
      Types.pods,
      attachmentPod('fs-claim', 'block-claim', block.metadata!.uid!),
      { namespace: ns },
    );
    await running(sim, ns, pod2.metadata!.name!);
    const node2 = `${root}/pods/${pod2.metadata!.uid}/volumeDevices/kubernetes.io~csi/${blockPvc.spec.volumeName}`;
    const buf = Buffer.alloc(14);
    const fd2 = openSync(node2, 'r');
    readSync(fd2, buf, 0, 14, 4096);
    closeSync(fd2);
    expect(buf.toString()).toBe('plugline-block');
    const image2 = `${root}/pods/${pod2.metadata!.uid}/volumes/kubernetes.io~csi/${fsPvc.spec.volumeName}/mount/disk.img`;
    const buf2 = Buffer.alloc(11);
    const fd3 = openSync(image2, 'r');
    readSync(fd3, buf2, 0, 11, 8192);
    closeSync(fd3);
    expect(buf2.toString()).toBe('plugline-fs');
    expect(await loopDevicesUnder(stateDir)).toHaveLength(1);

    // Stopping the simulator detaches every loop device it made.
    await sim.stop();
    expect(await loopDevicesUnder(stateDir)).toEqual([]);
    const { stdout } = await run('losetup', ['-a']);
    expect(stdout).not.toContain(stateDir);
  }, 30_000);
});

describe.skipIf(!hasLoop)('kubelet loop devices under racing pods', () => {
  let sim: KubeSim | undefined;
  let stateDir = '';
  const ns = rand('kubelet-race');

  beforeAll(async () => {
    sim = await startKubeSim({
      nodes: ['node-a', 'node-b'],
      podStartLatencyMs: 50,
      namespaces: [ns],
    });
    stateDir = sim.layout.stateDir();
    sim.store.create(Types.pods, launcher('virt-launcher-race-abcde'), { namespace: ns });
  });

  afterAll(async () => {
    await sim?.stop();
    for (const { device } of await loopDevicesUnder(stateDir)) {
      await run('losetup', ['-d', device]);
    }
  });

  const noLoopDevices = () =>
    vi.waitFor(async () => expect(await loopDevicesUnder(stateDir)).toEqual([]), {
      timeout: 10_000,
      interval: 20,
    });

  it('leaves no loop device when pods are deleted while their block volume is being attached', async () => {
    // The attachment-orchestrator deletes a pod at once (grace 0) when its volume leaves the spec;
    // that can land while the kubelet is still setting the pod's volumes up.
    const s = sim!;
    for (let round = 0; round < 8; round++) {
      const name = `race-${round}`;
      s.store.create(Types.persistentvolumeclaims, claim(name, '8Mi', true), { namespace: ns });
      s.store.create(Types.persistentvolumeclaims, claim(`${name}-fs`, '8Mi', false), {
        namespace: ns,
      });
      const pod = s.store.create(Types.pods, attachmentPod(`${name}-fs`, name, `uid-${round}`), {
        namespace: ns,
      });
      let backing = '';
      await vi.waitFor(
        () => {
          const pvc: Obj | undefined = s.store.peek(Types.persistentvolumeclaims, ns, name);
          const pv = pvc?.spec?.volumeName as string | undefined;
          backing = pv === undefined ? '' : s.layout.backingFile(pv, true);
          expect(backing !== '' && existsSync(backing)).toBe(true);
        },
        { timeout: 5_000, interval: 1 },
      );
      s.store.delete(Types.pods, ns, pod.metadata!.name!, { gracePeriodSeconds: 0 });
    }
    await noLoopDevices();
  }, 60_000);

  it('sets up every claim of a pod with many, each its own disk image or device', async () => {
    const s = sim!;
    const fsClaims = [0, 1, 2, 3, 4, 5].map((i) => `many-fs-${i}`);
    const blockClaims = [0, 1, 2].map((i) => `many-block-${i}`);
    for (const name of fsClaims) {
      s.store.create(Types.persistentvolumeclaims, claim(name, '4Mi', false), { namespace: ns });
    }
    for (const name of blockClaims) {
      s.store.create(Types.persistentvolumeclaims, claim(name, '4Mi', true), { namespace: ns });
    }
    const pod = s.store.create(
      Types.pods,
      {
        metadata: { name: rand('hp-volume-many') },
        spec: {
          nodeName: 'node-a',
          containers: [
            {
              name: 'hotplug-disk',
              image: 'virt-launcher',
              volumeMounts: fsClaims.map((name) => ({ name, mountPath: `/${name}` })),
              volumeDevices: blockClaims.map((name) => ({ name, devicePath: `/path/${name}` })),
            },
          ],
          volumes: [...fsClaims, ...blockClaims].map((name) => ({
            name,
            persistentVolumeClaim: { claimName: name },
          })),
        },
      },
      { namespace: ns },
    );
    await running(s, ns, pod.metadata!.name!);
    const root = s.kubeletRoot;
    const uid = pod.metadata!.uid!;
    const pvOf = (name: string): string =>
      String((s.store.get(Types.persistentvolumeclaims, ns, name) as Obj).spec.volumeName);
    for (const name of fsClaims) {
      const image = `${root}/pods/${uid}/volumes/kubernetes.io~csi/${pvOf(name)}/mount/disk.img`;
      expect(statSync(image).size).toBe(4 * MiB);
    }
    const devices = blockClaims.map((name) =>
      statSync(`${root}/pods/${uid}/volumeDevices/kubernetes.io~csi/${pvOf(name)}`),
    );
    expect(devices.every((d) => d.isBlockDevice())).toBe(true);
    expect(new Set(devices.map((d) => d.rdev)).size).toBe(3);
    expect(await loopDevicesUnder(stateDir)).toHaveLength(3);
    s.store.delete(Types.pods, ns, pod.metadata!.name!, { gracePeriodSeconds: 0 });
    await noLoopDevices();
    expect(existsSync(`${root}/pods/${uid}`)).toBe(false);
  }, 30_000);

  it('attaches one loop device for pods that start together on the same block claim', async () => {
    const s = sim!;
    s.store.create(Types.persistentvolumeclaims, claim('shared', '8Mi', true), { namespace: ns });
    s.store.create(Types.persistentvolumeclaims, claim('shared-fs', '8Mi', false), {
      namespace: ns,
    });
    const pods = [0, 1, 2, 3].map((i) =>
      s.store.create(Types.pods, attachmentPod('shared-fs', 'shared', `uid-shared-${i}`), {
        namespace: ns,
      }),
    );
    for (const pod of pods) await running(s, ns, pod.metadata!.name!);
    expect(await loopDevicesUnder(stateDir)).toHaveLength(1);
    for (const pod of pods) {
      s.store.delete(Types.pods, ns, pod.metadata!.name!, { gracePeriodSeconds: 0 });
    }
    await noLoopDevices();
  }, 30_000);
});

describe('storage controllers', () => {
  let sim: KubeSim;
  const ns = rand('storage');

  beforeAll(async () => {
    sim = await startKubeSim({ podStartLatencyMs: 5, dataVolumeImportMs: 80, namespaces: [ns] });
  });

  afterAll(async () => {
    await sim?.stop();
  });

  const phase = (type: typeof Types.persistentvolumeclaims, name: string) =>
    (sim.store.peek(type, ns, name)?.status as Obj | undefined)?.phase as string | undefined;

  it('binds WaitForFirstConsumer claims only once a pod uses them; never-bind claims stay Pending', async () => {
    sim.store.create(
      Types.persistentvolumeclaims,
      claim('wffc', '1Mi', false, { [SimAnnotation.bindingMode]: 'WaitForFirstConsumer' }),
      { namespace: ns },
    );
    sim.store.create(
      Types.persistentvolumeclaims,
      claim('stuck', '1Mi', false, { [SimAnnotation.neverBind]: 'true' }),
      { namespace: ns },
    );
    sim.store.create(Types.persistentvolumeclaims, claim('now', '1Mi', false), { namespace: ns });
    await vi.waitFor(() => expect(phase(Types.persistentvolumeclaims, 'now')).toBe('Bound'), {
      timeout: 5000,
      interval: 10,
    });
    expect(phase(Types.persistentvolumeclaims, 'wffc')).toBe('Pending');
    sim.store.create(
      Types.pods,
      {
        metadata: { name: 'consumer' },
        spec: {
          containers: [{ name: 'c', image: 'x' }],
          volumes: [{ name: 'v', persistentVolumeClaim: { claimName: 'wffc' } }],
        },
      },
      { namespace: ns },
    );
    await vi.waitFor(
      () =>
        expect((sim.store.peek(Types.pods, ns, 'consumer')?.status as Obj).phase).toBe('Running'),
      { timeout: 5000, interval: 10 },
    );
    expect(phase(Types.persistentvolumeclaims, 'wffc')).toBe('Bound');
    expect(
      sim.store.peek(Types.persistentvolumeclaims, ns, 'wffc')?.metadata?.annotations?.[
        'volume.kubernetes.io/selected-node'
      ],
    ).toBe('node-1');
    expect(phase(Types.persistentvolumeclaims, 'stuck')).toBe('Pending');
  });

  it('imports a DataVolume through ImportScheduled and ImportInProgress to Succeeded; an injected failure ends Failed', async () => {
    const seen: string[] = [];
    const watch = sim.store.watch(
      Types.datavolumes,
      { namespace: ns, resourceVersion: sim.store.resourceVersion },
      {
        event: (e) => {
          const p = (e.object.status as Obj | undefined)?.phase as string | undefined;
          if (e.object.metadata?.name === 'good' && p && seen.at(-1) !== p) seen.push(p);
        },
        closed: () => undefined,
      },
    );
    const dv = (name: string) => ({
      metadata: { name },
      spec: { source: { blank: {} }, storage: { resources: { requests: { storage: '1Mi' } } } },
    });
    sim.injectFailure({ kind: 'import-fails', namespace: ns, name: 'bad' });
    sim.store.create(Types.datavolumes, dv('good'), { namespace: ns });
    sim.store.create(Types.datavolumes, dv('bad'), { namespace: ns });
    await vi.waitFor(
      () => {
        expect(
          (sim.store.peek(Types.datavolumes, ns, 'good')?.status as Obj | undefined)?.phase,
        ).toBe('Succeeded');
        expect(
          (sim.store.peek(Types.datavolumes, ns, 'bad')?.status as Obj | undefined)?.phase,
        ).toBe('Failed');
      },
      { timeout: 5000, interval: 10 },
    );
    watch.close();
    expect(seen).toEqual(['Pending', 'ImportScheduled', 'ImportInProgress', 'Succeeded']);
    const good = sim.store.get(Types.datavolumes, ns, 'good') as Obj;
    expect(good.status.progress).toBe('100.0%');
    const pvc = sim.store.get(Types.persistentvolumeclaims, ns, 'good') as Obj;
    expect(pvc.metadata.ownerReferences[0].uid).toBe(good.metadata.uid);
    // Deleting the DataVolume takes its PVC with it (ownerReference cascade).
    sim.store.delete(Types.datavolumes, ns, 'good');
    await vi.waitFor(
      () => expect(sim.store.peek(Types.persistentvolumeclaims, ns, 'good')).toBeUndefined(),
      { timeout: 5000, interval: 10 },
    );
  });
});
