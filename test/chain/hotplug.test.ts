/**
 * The whole chain: the four services as processes, real NATS, kube-sim with its kubelet (real
 * files, bind mounts and loop devices in this private mount namespace), the simulated hypervisor.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  addVolume,
  createDataVolume,
  createPvc,
  ensureNamespace,
  removeVolume,
  type SeededVmi,
} from '@plugline/cli';
import { describe, expect, it, vi } from 'vitest';
import { readSimulatedDomains } from '@plugline/hypervisor';
import {
  hotplugDir,
  isRoot,
  kubeEvents,
  mountsUnder,
  plugctlIn,
  useChain,
  volumeStatus,
} from './helpers.js';

const WAIT = { timeout: 60_000, interval: 100 };
const f = useChain();

async function scenario(namespace: string, vmi = 'vm'): Promise<SeededVmi> {
  await ensureNamespace(f.stack.kc, namespace);
  return f.stack.createVmi({ namespace, name: vmi });
}

async function plug(namespace: string, vmi: string, ...flags: string[]) {
  const r = await plugctlIn(
    f.stack,
    'addvolume',
    vmi,
    '-n',
    namespace,
    '--wait',
    '--timeout=90s',
    ...flags,
  );
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return r;
}

async function unplug(namespace: string, vmi: string, volume: string) {
  const r = await plugctlIn(
    f.stack,
    'removevolume',
    vmi,
    '-n',
    namespace,
    `--volume-name=${volume}`,
    '--wait',
    '--timeout=90s',
  );
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return r;
}

/** The domains the simulated hypervisor of node-1 holds. */
function hypervisorDomains() {
  return readSimulatedDomains(join(f.stack.dir, 'state', 'hypervisor-node-1'));
}

describe.skipIf(!isRoot)('the chain', () => {
  it('plugs and unplugs a filesystem volume on scsi: status, bind mount, events, as KubeVirt shows them', async () => {
    const ns = 'chain-fs-scsi';
    const { launcher } = await scenario(ns);
    await createPvc(f.stack.kc, { namespace: ns, name: 'data', mode: 'Filesystem' });
    const r = await plug(ns, 'vm', '--volume-name=data');
    expect(r.out.split('\n').map((l) => l.trim().split(/\s+/)[0])).toEqual(
      expect.arrayContaining(['requested', 'bound', 'attached-to-node', 'mounted-to-pod', 'ready']),
    );
    const s = await volumeStatus(f.client, ns, 'vm', 'data');
    expect(s).toMatchObject({
      name: 'data',
      phase: 'Ready',
      reason: 'VolumeReady',
      message: 'Successfully attach hotplugged volume data to VM',
      target: 'sda',
      persistentVolumeClaimInfo: { claimName: 'data', volumeMode: 'Filesystem' },
    });
    expect(s?.hotplugVolume?.attachPodName).toMatch(/^hp-volume-/);
    expect(s?.hotplugVolume?.attachPodUID).toBeTruthy();
    const img = join(hotplugDir(f.stack, launcher.metadata!.uid!), 'data.img');
    expect(mountsUnder(f.stack.dir)).toContain(img);
    const disks = hypervisorDomains().get(`${ns}_vm`)?.disks ?? [];
    expect(disks.map((d) => d.disk.sourcePath)).toEqual([img]);

    await unplug(ns, 'vm', 'data');
    expect(await volumeStatus(f.client, ns, 'vm', 'data')).toBeUndefined();
    expect(mountsUnder(f.stack.dir)).not.toContain(img);
    expect(existsSync(img)).toBe(false);
    // Events are written apart from the status, each by the service that acted: the last ones
    // may land just after the entry is gone.
    await vi.waitFor(async () => {
      const reasons = (await kubeEvents(f.stack, ns, 'vm')).map((e) => e.reason);
      expect(reasons).toEqual(
        expect.arrayContaining([
          'SuccessfulCreate',
          'VolumeMountedToPod',
          'VolumeReady',
          'VolumeUnMountedFromPod',
          'SuccessfulDelete',
          'VolumeUnplugged',
        ]),
      );
    }, WAIT);
  }, 120_000);

  it('plugs a block volume on virtio (a device node with the loop device numbers) and unplugs it', async () => {
    const ns = 'chain-block-virtio';
    const { launcher } = await scenario(ns);
    await createPvc(f.stack.kc, { namespace: ns, name: 'raw', mode: 'Block' });
    await plug(ns, 'vm', '--volume-name=raw', '--bus=virtio');
    const s = await volumeStatus(f.client, ns, 'vm', 'raw');
    expect(s).toMatchObject({ phase: 'Ready', target: 'vdb' }); // vda is the root disk
    const node = join(hotplugDir(f.stack, launcher.metadata!.uid!), 'raw');
    expect(statSync(node).isBlockDevice()).toBe(true);
    await unplug(ns, 'vm', 'raw');
    expect(existsSync(node)).toBe(false);
    expect(await volumeStatus(f.client, ns, 'vm', 'raw')).toBeUndefined();
  }, 120_000);

  it('plugs a block volume as a LUN on scsi', async () => {
    const ns = 'chain-lun';
    await scenario(ns);
    await createPvc(f.stack.kc, { namespace: ns, name: 'lun0', mode: 'Block' });
    await plug(ns, 'vm', '--volume-name=lun0', '--disk-type=lun');
    expect(await volumeStatus(f.client, ns, 'vm', 'lun0')).toMatchObject({
      phase: 'Ready',
      target: 'sda',
    });
    expect(hypervisorDomains().get('chain-lun_vm')).toMatchObject({
      disks: [{ disk: { device: 'lun', bus: 'scsi', target: 'sda' } }],
    });
    await unplug(ns, 'vm', 'lun0');
  }, 120_000);

  it('waits for a DataVolume that is still importing, then plugs it', async () => {
    const ns = 'chain-dv';
    await scenario(ns);
    await createDataVolume(f.stack.kc, { namespace: ns, name: 'image', importMs: 3000 });
    const dv = await f.client.getDataVolume(ns, 'image');
    expect(dv.status?.phase).not.toBe('Succeeded');
    const r = await plug(ns, 'vm', '--volume-name=image');
    const steps = r.out.split('\n').map((l) => l.trim().split(/\s+/)[0]);
    // Pending (or import progress) comes before bound while the import runs.
    const firstWaiting = steps.findIndex((s) => s === 'pending' || s === 'import-progress');
    expect(firstWaiting).toBeGreaterThan(-1);
    expect(firstWaiting).toBeLessThan(steps.indexOf('bound'));
    expect((await f.client.getDataVolume(ns, 'image')).status?.phase).toBe('Succeeded');
    expect((await f.client.getVmi(ns, 'vm')).spec.volumes).toContainEqual({
      name: 'image',
      dataVolume: { name: 'image', hotpluggable: true },
    });
  }, 120_000);

  it('a dry run changes nothing: no spec change, no status entry, no event', async () => {
    const ns = 'chain-dry-run';
    await scenario(ns);
    await createPvc(f.stack.kc, { namespace: ns, name: 'dry', mode: 'Filesystem' });
    const before = await f.client.getVmi(ns, 'vm');
    const r = await plugctlIn(
      f.stack,
      'addvolume',
      'vm',
      '-n',
      ns,
      '--volume-name=dry',
      '--dry-run',
      '--wait',
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Dry run: /);
    // A real request made afterwards goes through the whole chain; by then the dry run would
    // have shown if it had changed anything.
    await createPvc(f.stack.kc, { namespace: ns, name: 'real', mode: 'Filesystem' });
    await plug(ns, 'vm', '--volume-name=real');
    const after = await f.client.getVmi(ns, 'vm');
    expect(after.spec.volumes?.map((v) => v.name)).toEqual([
      ...before.spec.volumes!.map((v) => v.name),
      'real',
    ]);
    expect(after.status?.volumeStatus?.map((s) => s.name)).not.toContain('dry');
    const events = await plugctlIn(f.stack, 'events', 'vm', '-n', ns, '--volume', 'dry');
    expect(events).toEqual({ code: 0, out: '', err: '' });
  }, 120_000);

  it('plugs 20 volumes into one VMI at once, then unplugs them all', async () => {
    const ns = 'chain-twenty';
    await scenario(ns);
    const names = Array.from({ length: 20 }, (_, i) => `vol-${String(i).padStart(2, '0')}`);
    await Promise.all(
      names.map((name, i) =>
        createPvc(f.stack.kc, { namespace: ns, name, mode: i % 4 === 3 ? 'Block' : 'Filesystem' }),
      ),
    );
    // All at once: the test-guarded patches conflict and are retried, as virtctl does.
    await Promise.all(
      names.map((volumeName) =>
        addVolume(f.client, { namespace: ns, vmi: 'vm', flags: { volumeName } }),
      ),
    );
    await vi.waitFor(
      async () => {
        const vmi = await f.client.getVmi(ns, 'vm');
        const ready = (vmi.status?.volumeStatus ?? []).filter((s) => s.phase === 'Ready');
        expect(ready.map((s) => s.name).sort()).toEqual(names);
      },
      { timeout: 120_000, interval: 250 },
    );
    const targets = (await f.client.getVmi(ns, 'vm')).status!.volumeStatus!.map((s) => s.target);
    expect(new Set(targets).size).toBe(targets.length); // every disk its own target
    await Promise.all(
      names.map((volumeName) => removeVolume(f.client, { namespace: ns, vmi: 'vm', volumeName })),
    );
    await vi.waitFor(
      async () => {
        const vmi = await f.client.getVmi(ns, 'vm');
        expect((vmi.status?.volumeStatus ?? []).map((s) => s.name)).toEqual(['rootdisk']);
      },
      { timeout: 120_000, interval: 250 },
    );
  }, 300_000);

  it('removes then re-adds the same volume', async () => {
    const ns = 'chain-readd';
    await scenario(ns);
    await createPvc(f.stack.kc, { namespace: ns, name: 'again', mode: 'Filesystem' });
    await plug(ns, 'vm', '--volume-name=again');
    await unplug(ns, 'vm', 'again');
    await plug(ns, 'vm', '--volume-name=again');
    expect(await volumeStatus(f.client, ns, 'vm', 'again')).toMatchObject({
      phase: 'Ready',
      target: 'sda',
    });
  }, 180_000);

  it('a volume in use names the pod that replaced its first one', async () => {
    const ns = 'chain-repointed';
    await scenario(ns);
    for (const name of ['first', 'second']) {
      await createPvc(f.stack.kc, { namespace: ns, name, mode: 'Filesystem' });
      await plug(ns, 'vm', `--volume-name=${name}`);
    }
    // `second` needed a pod for both; once it runs, `first`'s pod goes, as in virt-controller.
    const attachmentPods = async () =>
      (await f.client.listPods(ns)).filter(
        (p) => p.metadata?.labels?.['kubevirt.io'] === 'hotplug-disk',
      );
    await vi.waitFor(async () => expect(await attachmentPods()).toHaveLength(1), WAIT);
    const [carrier] = await attachmentPods();
    const named = { attachPodName: carrier!.metadata!.name, attachPodUID: carrier!.metadata!.uid };
    await vi.waitFor(
      async () => {
        for (const name of ['first', 'second']) {
          expect(await volumeStatus(f.client, ns, 'vm', name)).toMatchObject({
            phase: 'Ready',
            hotplugVolume: named,
          });
        }
      },
      { timeout: 15_000, interval: 100 },
    );
  }, 180_000);

  it('deleting the attachment pod of a Ready volume does not detach it', async () => {
    const ns = 'chain-pod-deleted';
    const { launcher } = await scenario(ns);
    await createPvc(f.stack.kc, { namespace: ns, name: 'kept', mode: 'Filesystem' });
    await plug(ns, 'vm', '--volume-name=kept');
    const before = (await volumeStatus(f.client, ns, 'vm', 'kept'))!;
    const pod = before.hotplugVolume!.attachPodName!;
    const podUid = (await f.client.listPods(ns)).find((p) => p.metadata?.name === pod)?.metadata
      ?.uid;
    expect(podUid).toBeDefined();
    expect(await f.client.deletePod(ns, pod)).toBe(true);
    // The orchestrator may recreate the pod under the same deterministic name at once, so the
    // deleted pod is told apart by its UID.
    await vi.waitFor(async () => {
      expect((await f.client.listPods(ns)).map((p) => p.metadata?.uid)).not.toContain(podUid);
    }, WAIT);
    // A later request through the whole chain is the barrier: by its end the services have
    // seen the deletion.
    await createPvc(f.stack.kc, { namespace: ns, name: 'later', mode: 'Filesystem' });
    await plug(ns, 'vm', '--volume-name=later');
    expect(await volumeStatus(f.client, ns, 'vm', 'kept')).toMatchObject({
      phase: 'Ready',
      target: before.target,
    });
    expect(mountsUnder(f.stack.dir)).toContain(
      join(hotplugDir(f.stack, launcher.metadata!.uid!), 'kept.img'),
    );
    const types = (
      await plugctlIn(f.stack, 'events', 'vm', '-n', ns, '--volume', 'kept', '-o', 'json')
    ).out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { type: string }).type.split('.').pop());
    expect(types).not.toContain('unplug-requested');
    expect(types).not.toContain('detached-from-domain');
    expect(types).not.toContain('unmounted-from-pod');
  }, 180_000);
});
