/**
 * Chaos on one stack (the four services as processes, NATS, kube-sim, real mounts in a private
 * mount namespace): kill -9 of any service, NATS restarts, dropped watch connections, and the
 * attachment pod of a Ready volume deleted again and again. Each scenario is a bounded run that
 * ends with the invariants holding (test/support/invariants.ts).
 */
import { openSync, readSync, closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { addVolume, createPvc, ensureNamespace, removeVolume } from '@plugline/cli';
import { CoreV1Api } from '@kubernetes/client-node';
import type { VolumeStatus } from '@plugline/contracts';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { dropConnections } from '@plugline/testkit';
import { isRoot, loopDevicesUnder, mountsUnder } from '../chain/helpers.js';
import {
  CHAOS,
  disturbUntil,
  randomOperations,
  seedVmis,
  seeded,
  ScenarioReport,
  ServiceTally,
  settle,
  startChaosStack,
  type ChaosFixture,
} from './workload.js';

const SEED = Number(process.env.PLUGLINE_CHAOS_SEED ?? Date.now() % 100_000);
const random = seeded(SEED);
let f: ChaosFixture;
let dir = '';
const tally = new ServiceTally();

/** Runs `body` as scenario `name` and prints its figures (`[chaos] <name> {...}`), pass or fail. */
async function scenario(
  name: string,
  body: (r: ScenarioReport, figures: Record<string, unknown>) => Promise<void>,
): Promise<void> {
  const r = await new ScenarioReport(name, SEED, f, tally).begin();
  const figures: Record<string, unknown> = {};
  let passed = false;
  try {
    await body(r, figures);
    passed = true;
  } finally {
    await r.print(figures, passed);
  }
}

/** A volume of a new VMI `vm` in `ns`, plugged and `Ready`; its status entry, read when asked. */
async function readyVolume(
  ns: string,
  volume: string,
): Promise<{ ready: VolumeStatus; entry: () => Promise<VolumeStatus | undefined> }> {
  await ensureNamespace(f.stack.kc, ns);
  await f.stack.createVmi({ namespace: ns, name: 'vm' });
  await createPvc(f.stack.kc, { namespace: ns, name: volume, mode: 'Filesystem', size: '16Mi' });
  await addVolume(f.client, { namespace: ns, vmi: 'vm', flags: { volumeName: volume } });
  const entry = async () =>
    (await f.client.getVmi(ns, 'vm')).status?.volumeStatus?.find((v) => v.name === volume);
  return { ready: await readyEntry(entry), entry };
}

/** The entry once it is `Ready`. */
function readyEntry(entry: () => Promise<VolumeStatus | undefined>): Promise<VolumeStatus> {
  return vi.waitFor(
    async () => {
      const e = await entry();
      expect(e?.phase).toBe('Ready');
      return e!;
    },
    { timeout: 60_000, interval: 100 },
  );
}

/** Until the entry is gone. */
async function noEntry(entry: () => Promise<VolumeStatus | undefined>): Promise<void> {
  await vi.waitFor(async () => expect(await entry()).toBeUndefined(), {
    timeout: 60_000,
    interval: 100,
  });
}

beforeAll(async () => {
  f = await startChaosStack();
  dir = f.stack.dir;
}, 180_000);

afterAll(async () => {
  if (f !== undefined) {
    const total = await tally.total(f.stack.services);
    console.log(`[chaos] totals ${JSON.stringify({ seed: SEED, ...total })}`);
    await f.stop();
  }
  if (dir !== '') {
    expect(loopDevicesUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }
}, 120_000);

describe.skipIf(!isRoot)('chaos', () => {
  it(`kill -9 of a random service during ${CHAOS.operations} operations across ${CHAOS.vmis} VMIs`, async () => {
    await scenario('kill', async (r, figures) => {
      const seeding = Date.now();
      const vms = await seedVmis(f, 'chaos-kill', CHAOS.vmis);
      figures.seedMs = Date.now() - seeding;
      const ops = randomOperations(f, vms, CHAOS.operations, CHAOS.parallel, random);
      void ops.then(() => (figures.sendMs = Date.now() - seeding - Number(figures.seedMs)));
      figures.kills = 0;
      figures.restarts = 0;
      const victims: string[] = [];
      figures.victims = victims;
      // Sending is quicker than handling: the kills go on (one per 20 requests) while the
      // stack still works through what was sent.
      const minimum = Math.max(2, Math.ceil(CHAOS.operations / 20));
      const pace = { minMs: 1500, maxMs: 4000, random, minimum };
      await disturbUntil(ops, pace, async () => {
        const services = f.stack.services;
        const victim = services[Math.floor(random() * services.length)]!;
        await tally.bank(victim.healthUrl);
        victim.kill('SIGKILL');
        figures.kills = Number(figures.kills) + 1;
        victims.push(victim.id);
        await f.stack.restartService(victim.id);
        figures.restarts = Number(figures.restarts) + 1;
      });
      Object.assign(figures, await ops);
      r.sent();
      const inv = await settle(f, { timeoutMs: 240_000 });
      figures.readyVolumes = inv.readyVolumes;
      expect(figures.kills).toBeGreaterThan(0);
      expect(figures.restarts).toBe(figures.kills);
      expect(figures.operations).toBe(CHAOS.operations);
    });
  }, 600_000);

  it('restarts nats-server (same store) twice during a run', async () => {
    await scenario('nats-restart', async (r, figures) => {
      const vms = await seedVmis(f, 'chaos-nats', Math.max(2, Math.round(CHAOS.vmis / 3)));
      const ops = randomOperations(f, vms, Math.round(CHAOS.operations / 4), 2, random);
      figures.natsRestarts = 0;
      await disturbUntil(ops, { minMs: 1500, maxMs: 3000, random, minimum: 2 }, async () => {
        if (figures.natsRestarts === 2) return;
        await f.nats!.restart('SIGKILL');
        figures.natsRestarts = Number(figures.natsRestarts) + 1;
      });
      Object.assign(figures, await ops);
      r.sent();
      const inv = await settle(f, { timeoutMs: 180_000 });
      figures.readyVolumes = inv.readyVolumes;
      expect(figures.natsRestarts).toBe(2);
      expect(f.stack.services.every((s) => s.running())).toBe(true);
    });
  }, 400_000);

  it('kube-sim drops every watch connection at random moments; informers resume', async () => {
    await scenario('watch-drops', async (r, figures) => {
      const port = Number(new URL(f.stack.apiUrl).port);
      const vms = await seedVmis(f, 'chaos-watch', Math.max(2, Math.round(CHAOS.vmis / 3)));
      const ops = randomOperations(f, vms, Math.round(CHAOS.operations / 4), 2, random);
      const pace = { minMs: 300, maxMs: 1500, random, minimum: 3 };
      figures.drops = await disturbUntil(ops, pace, () => dropConnections(port));
      Object.assign(figures, await ops);
      r.sent();
      const inv = await settle(f, { timeoutMs: 180_000 });
      figures.readyVolumes = inv.readyVolumes;
      expect(figures.drops).toBeGreaterThan(0);
    });
  }, 400_000);

  it("a Ready volume's status entry removed by another writer is rebuilt, as it was", async () => {
    await scenario('status-entry-removed', async (r, figures) => {
      const ns = 'chaos-status-wiped';
      const { ready, entry } = await readyVolume(ns, 'kept');
      // Another writer of the status (a restore, a controller that knows nothing of hotplug)
      // drops the entry. The stages stated every fact of the operation moments ago, so the
      // event stream's duplicate window (2 minutes) would drop the same facts stated again.
      const vmi = await f.client.getVmi(ns, 'vm');
      const index = vmi.status!.volumeStatus!.findIndex((v) => v.name === 'kept');
      const removedAt = Date.now();
      const written = await f.client.patchVmiStatus(ns, 'vm', [
        { op: 'test', path: `/status/volumeStatus/${index}/name`, value: 'kept' },
        { op: 'remove', path: `/status/volumeStatus/${index}` },
      ]);
      expect(written.status?.volumeStatus?.map((v) => v.name)).not.toContain('kept');
      r.sent();
      // The watcher sees the entry dropped and asks the first stage again, as a resync would;
      // each stage states its facts again in that round and nudges the next: the entry is back,
      // as it was, well inside the duplicate window.
      const back = await readyEntry(entry);
      figures.rebuiltMs = Date.now() - removedAt;
      expect(back).toMatchObject({
        target: ready.target,
        reason: ready.reason,
        hotplugVolume: ready.hotplugVolume,
      });
      const inv = await settle(f, { timeoutMs: 120_000 });
      figures.readyVolumes = inv.readyVolumes;
    });
  }, 300_000);

  it('an entry written back after its volume was unplugged is removed again', async () => {
    await scenario('status-entry-restored', async (r, figures) => {
      const ns = 'chaos-status-restored';
      const { ready, entry } = await readyVolume(ns, 'gone');
      await removeVolume(f.client, { namespace: ns, vmi: 'vm', volumeName: 'gone' });
      await noEntry(entry);
      // A restore writes the status back as it was while the volume was Ready. Every stage is
      // done with the unplug and said so moments ago (inside the duplicate window).
      const restoredAt = Date.now();
      await f.client.patchVmiStatus(ns, 'vm', [
        { op: 'add', path: '/status/volumeStatus/-', value: ready },
      ]);
      r.sent();
      // The watcher sees the entry back and asks the stage its `Ready` routes the unplug to, as
      // a resync would: the round goes down the unplug's stages, and the orchestrator, with no
      // pod carrying the volume, reports it released again: the entry goes (it stayed for good).
      await noEntry(entry);
      figures.removedMs = Date.now() - restoredAt;
      const inv = await settle(f, { timeoutMs: 120_000 });
      figures.readyVolumes = inv.readyVolumes;
    });
  }, 300_000);

  it('the attachment pod of a Ready volume is deleted 10 times: the volume stays attached and usable', async () => {
    await scenario('attachment-pod-deleted', async (r, figures) => {
      const ns = 'chaos-attach-pod';
      await ensureNamespace(f.stack.kc, ns);
      const { launcher } = await f.stack.createVmi({ namespace: ns, name: 'vm' });
      await createPvc(f.stack.kc, {
        namespace: ns,
        name: 'keep',
        mode: 'Filesystem',
        size: '16Mi',
      });
      await addVolume(f.client, { namespace: ns, vmi: 'vm', flags: { volumeName: 'keep' } });
      const core = f.stack.kc.makeApiClient(CoreV1Api);
      const img = join(
        f.stack.kubeletRoot,
        'pods',
        launcher.metadata!.uid!,
        'volumes/kubernetes.io~empty-dir/hotplug-disks/keep.img',
      );
      const readyPod = async (): Promise<string> => {
        const vmi = await f.client.getVmi(ns, 'vm');
        const s = vmi.status?.volumeStatus?.find((v) => v.name === 'keep');
        expect(s?.phase).toBe('Ready');
        const pod = s?.hotplugVolume?.attachPodName;
        expect(pod).toBeTruthy();
        return pod!;
      };
      let pod = await vi.waitFor(readyPod, { timeout: 60_000, interval: 100 });
      // The replacement has the same (deterministic) name: pods are told apart by UID.
      const deleted: string[] = [];
      for (let i = 0; i < 10; i++) {
        const gone = await core.readNamespacedPod({ namespace: ns, name: pod });
        await core.deleteNamespacedPod({ namespace: ns, name: pod });
        deleted.push(gone.metadata!.uid!);
        figures.deletions = deleted.length;
        // Usable: what the guest writes through the exposed image reads back.
        const fd = openSync(img, 'r+');
        const data = Buffer.from(`round ${i}`);
        writeSync(fd, data, 0, data.length, 4096 * i);
        const back = Buffer.alloc(data.length);
        readSync(fd, back, 0, back.length, 4096 * i);
        closeSync(fd);
        expect(back.toString()).toBe(data.toString());
        // The volume stays Ready and a new attachment pod takes the deleted one's place.
        pod = await vi.waitFor(
          async () => {
            const next = await readyPod();
            const p = await core.readNamespacedPod({ namespace: ns, name: next });
            expect(deleted).not.toContain(p.metadata?.uid);
            expect(p.status?.phase).toBe('Running');
            return next;
          },
          { timeout: 60_000, interval: 100 },
        );
      }
      r.sent();
      const inv = await settle(f, { timeoutMs: 120_000 });
      figures.readyVolumes = inv.readyVolumes;
    });
  }, 300_000);
});
