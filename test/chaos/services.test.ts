/**
 * Chaos on one stack (the four services as processes, NATS, kube-sim, real mounts in a private
 * mount namespace): kill -9 of any service, NATS restarts, dropped watch connections, and the
 * attachment pod of a Ready volume deleted again and again. Each scenario is a bounded run that
 * ends with the invariants holding (test/support/invariants.ts).
 */
import { openSync, readSync, closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { addVolume, createPvc, ensureNamespace } from '@plugline/cli';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { isRoot, loopDevicesUnder, mountsUnder } from '../chain/helpers.js';
import { waitForInvariants } from '../support/invariants.js';
import {
  CHAOS,
  disturbUntil,
  dropConnections,
  randomOperations,
  seedVmis,
  seeded,
  ServiceTally,
  streamCounts,
  startChaosStack,
  type ChaosFixture,
} from './workload.js';

const SEED = Number(process.env.PLUGLINE_CHAOS_SEED ?? Date.now() % 100_000);
const random = seeded(SEED);
let f: ChaosFixture;
let dir = '';
const tally = new ServiceTally();

/** Prints a scenario's figures with the work stream's redeliveries and dead letters so far. */
async function report(scenario: string, figures: Record<string, unknown>): Promise<void> {
  const stream = f.monitorUrl === '' ? {} : await streamCounts(f.monitorUrl).catch(() => ({}));
  console.log(`[chaos] ${scenario} ${JSON.stringify({ seed: SEED, ...figures, ...stream })}`);
}

beforeAll(async () => {
  f = await startChaosStack();
  dir = f.stack.dir;
}, 180_000);

afterAll(async () => {
  if (f !== undefined) {
    for (const s of f.stack.services) await tally.add(s.healthUrl);
    await report('totals', { redeliveries: tally.redeliveries, deadLetters: tally.deadLetters });
    await f.stop();
  }
  if (dir !== '') {
    expect(loopDevicesUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }
}, 120_000);

describe.skipIf(!isRoot)('chaos', () => {
  it(`kill -9 of a random service during ${CHAOS.operations} operations across ${CHAOS.vmis} VMIs`, async () => {
    const started = Date.now();
    const vms = await seedVmis(f, 'chaos-kill', CHAOS.vmis);
    const ops = randomOperations(f, vms, CHAOS.operations, CHAOS.parallel, random);
    let restarts = 0;
    const pace = { minMs: 1500, maxMs: 4000, random, minimum: 2 };
    const kills = await disturbUntil(ops, pace, async () => {
      const services = f.stack.services;
      const victim = services[Math.floor(random() * services.length)]!;
      await tally.add(victim.healthUrl);
      victim.kill('SIGKILL');
      await f.stack.restartService(victim.id);
      restarts++;
    });
    const counts = await ops;
    const sent = Date.now();
    const inv = await waitForInvariants(f.stack, {
      natsMonitorUrl: f.monitorUrl,
      timeoutMs: 240_000,
    });
    await report('kill', {
      ...counts,
      kills,
      restarts,
      readyVolumes: inv.readyVolumes,
      runMs: sent - started,
      convergeMs: Date.now() - sent,
    });
    expect(kills).toBeGreaterThan(0);
    expect(counts.operations).toBe(CHAOS.operations);
  }, 600_000);

  it('restarts nats-server (same store) twice during a run', async () => {
    const started = Date.now();
    const vms = await seedVmis(f, 'chaos-nats', Math.max(2, Math.round(CHAOS.vmis / 3)));
    const ops = randomOperations(f, vms, Math.round(CHAOS.operations / 4), 2, random);
    let restarts = 0;
    await disturbUntil(ops, { minMs: 1500, maxMs: 3000, random, minimum: 2 }, async () => {
      if (restarts >= 2) return;
      await f.nats!.restart('SIGKILL');
      restarts++;
    });
    const counts = await ops;
    const sent = Date.now();
    const inv = await waitForInvariants(f.stack, {
      natsMonitorUrl: f.monitorUrl,
      timeoutMs: 180_000,
    });
    await report('nats-restart', {
      ...counts,
      natsRestarts: restarts,
      readyVolumes: inv.readyVolumes,
      runMs: sent - started,
      convergeMs: Date.now() - sent,
    });
    expect(restarts).toBe(2);
    expect(f.stack.services.every((s) => s.running())).toBe(true);
  }, 400_000);

  it('kube-sim drops every watch connection at random moments; informers resume', async () => {
    const started = Date.now();
    const port = Number(new URL(f.stack.apiUrl).port);
    const vms = await seedVmis(f, 'chaos-watch', Math.max(2, Math.round(CHAOS.vmis / 3)));
    const ops = randomOperations(f, vms, Math.round(CHAOS.operations / 4), 2, random);
    const pace = { minMs: 300, maxMs: 1500, random, minimum: 3 };
    const drops = await disturbUntil(ops, pace, () => dropConnections(port));
    const counts = await ops;
    const sent = Date.now();
    const inv = await waitForInvariants(f.stack, {
      natsMonitorUrl: f.monitorUrl,
      timeoutMs: 180_000,
    });
    await report('watch-drops', {
      ...counts,
      drops,
      readyVolumes: inv.readyVolumes,
      runMs: sent - started,
      convergeMs: Date.now() - sent,
    });
    expect(drops).toBeGreaterThan(0);
  }, 400_000);

  it('the attachment pod of a Ready volume is deleted 10 times: the volume stays attached and usable', async () => {
    const started = Date.now();
    const ns = 'chaos-attach-pod';
    await ensureNamespace(f.stack.kc, ns);
    const { launcher } = await f.stack.createVmi({ namespace: ns, name: 'vm' });
    await createPvc(f.stack.kc, { namespace: ns, name: 'keep', mode: 'Filesystem', size: '16Mi' });
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
    const inv = await waitForInvariants(f.stack, {
      natsMonitorUrl: f.monitorUrl,
      timeoutMs: 120_000,
    });
    await report('attachment-pod-deleted', {
      deletions: deleted.length,
      readyVolumes: inv.readyVolumes,
      runMs: Date.now() - started,
    });
  }, 300_000);
});
