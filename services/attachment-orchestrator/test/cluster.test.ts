import type { VirtualMachineInstance } from '@plugline/contracts';
import { loadKubeConfig } from '@plugline/kube';
import { startKubeSim, Types, type KubeSim } from '@plugline/kube-sim';
import { silentLogger } from '@plugline/telemetry';
import { waitFor } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAttachmentPod, createClusterView, type ClusterView } from '../src/index.js';
import { fsVolume, launcher, NS, vmi, withHotplugPVC } from './fixtures.js';

let sim: KubeSim;
let view: ClusterView;

beforeAll(async () => {
  // The caches alone: no kubelet, so a pod stays as it was written until it is deleted.
  sim = await startKubeSim({ kubelet: false });
  view = createClusterView({
    kc: loadKubeConfig({ kubeconfig: sim.kubeconfigPath }),
    logger: silentLogger(),
    onNudge: () => undefined,
  });
  await view.start();
});

afterAll(async () => {
  await view.stop();
  await sim.stop();
});

describe('the cluster view', () => {
  it("tells which of a VMI's attachment pods left its cache, and when", async () => {
    sim.store.create(Types.namespaces, { metadata: { name: NS } });
    const { metadata, ...rest } = vmi(withHotplugPVC('a'));
    const created = sim.store.create(
      Types.virtualmachineinstances,
      { ...rest, metadata: { name: metadata.name } },
      { namespace: NS },
    ) as unknown as VirtualMachineInstance;
    const ref = { namespace: NS, name: metadata.name ?? '', uid: created.metadata.uid ?? '' };
    const pod = buildAttachmentPod({
      vmi: created,
      launcherPod: launcher(),
      volumes: [fsVolume('a')],
    });
    const name = pod.metadata.name ?? '';
    sim.store.create(Types.pods, pod as never, { namespace: NS });
    await waitFor(() => view.observe(ref).pods.length === 1);
    expect(view.observe(ref).podsGone).toEqual({});

    const before = Date.now();
    sim.store.delete(Types.pods, NS, name, { gracePeriodSeconds: 0 });
    await waitFor(() => view.observe(ref).pods.length === 0);
    const gone = view.observe(ref).podsGone ?? {};
    expect(Object.keys(gone)).toEqual([name]);
    expect(gone[name]).toBeGreaterThanOrEqual(before);
    // Another VMI's view holds none of it.
    expect(view.observe({ ...ref, uid: 'another-uid' }).podsGone).toEqual({});
  });
});
