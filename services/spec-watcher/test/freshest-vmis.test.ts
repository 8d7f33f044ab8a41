import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VirtualMachineInstance } from '@plugline/contracts';
import {
  createInformer,
  KubeClient,
  loadKubeConfig,
  Resources,
  type Informer,
} from '@plugline/kube';
import { startKubeSim, Types, type KubeSim } from '@plugline/kube-sim';
import { createLogger, memoryDestination } from '@plugline/telemetry';
import { waitFor } from '@plugline/testkit';
import { FreshestVmis } from '../src/freshest-vmis.js';
import { vmi } from './fixtures.js';

/**
 * The projector's first read of a VMI before a status write, against kube-sim through a real
 * informer: the copies it may use without a GET are never older than its own last write.
 */

const ns = `fresh-${randomBytes(4).toString('hex')}`;
let sim: KubeSim;
let client: KubeClient;
let informer: Informer<VirtualMachineInstance>;

beforeAll(async () => {
  sim = await startKubeSim({ kubelet: false, namespaces: [ns] });
  const kc = loadKubeConfig({ kubeconfig: sim.kubeconfigPath });
  const logger = createLogger({ level: 'silent' }, memoryDestination());
  client = new KubeClient({ kc, fieldManager: 'plugline-test', logger });
  informer = createInformer<VirtualMachineInstance>({
    kc,
    resource: Resources.virtualMachineInstances,
    namespace: ns,
    logger,
  });
  await informer.start();
});

afterAll(async () => {
  await informer?.stop();
  await sim?.stop();
});

/** The fixture's VMI under `name`, with no status yet. */
function createVmi(name: string): void {
  const { apiVersion, kind, spec } = vmi();
  sim.store.create(
    Types.virtualmachineinstances,
    { apiVersion, kind, metadata: { name }, spec },
    {
      namespace: ns,
    },
  );
}

/** A status write of the projector's: returns what the API server answered. */
function writeStatus(name: string, phase: string): Promise<VirtualMachineInstance> {
  return client.patchVmiStatus(ns, name, [
    { op: 'add', path: '/status', value: { phase, volumeStatus: [] } },
  ]);
}

/** Another writer's change (the user's spec patch, say), straight into the store. */
function labelVmi(name: string, value: string): string {
  const current = sim.store.get(Types.virtualmachineinstances, ns, name);
  const metadata = { ...current.metadata, labels: { touched: value } };
  const updated = sim.store.update(
    Types.virtualmachineinstances,
    name,
    { ...current, metadata },
    { namespace: ns },
  );
  return updated.metadata?.resourceVersion ?? '';
}

describe('FreshestVmis', () => {
  it('after a write of its own, never a copy older than that write', async () => {
    const name = 'vmi-own';
    createVmi(name);
    const freshest = new FreshestVmis(informer, 100);
    await waitFor(() => informer.get(ns, name), { description: 'the VMI cached' });
    expect(freshest.get(ns, name)?.status).toBeUndefined();

    // Right after the write, whether or not the watch has delivered it yet.
    const written = await writeStatus(name, 'Scheduled');
    freshest.wrote(written);
    const first = freshest.get(ns, name);
    expect(first?.metadata.resourceVersion).toBe(written.metadata.resourceVersion);
    expect(first?.status?.phase).toBe('Scheduled');

    // The copy handed out is the caller's own.
    first!.status!.phase = 'Failed';
    expect(freshest.get(ns, name)?.status?.phase).toBe('Scheduled');
  });

  it("reads the cache once it has shown the projector's write: another writer's later change is seen, without a GET", async () => {
    const name = 'vmi-other';
    createVmi(name);
    const freshest = new FreshestVmis(informer, 100);
    freshest.wrote(await writeStatus(name, 'Running'));
    const theirs = labelVmi(name, 'after-our-write');
    await waitFor(() => informer.get(ns, name)?.metadata.resourceVersion === theirs, {
      description: "the other writer's change cached",
    });
    const read = freshest.get(ns, name);
    expect(read?.metadata.resourceVersion).toBe(theirs);
    expect(read?.metadata.labels).toEqual({ touched: 'after-our-write' });
    expect(read?.status?.phase).toBe('Running');
  });
});
