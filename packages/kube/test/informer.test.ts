import {
  CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import type { VirtualMachineInstance } from '@plugline/contracts';
import { startKubeSim } from '@plugline/kube-sim';
import { waitFor } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InformerStoppedError, Resources, createInformer, type Informer } from '../src/index.js';
import {
  CuttableProxy,
  createNamespace,
  createVmi,
  kubeConfigFor,
  memoryLogger,
  podManifest,
} from './helpers.js';

type Sim = Awaited<ReturnType<typeof startKubeSim>>;

let sim: Sim;
let kc: KubeConfig;
let core: CoreV1Api;

beforeAll(async () => {
  sim = await startKubeSim({ kubelet: false });
  kc = kubeConfigFor(sim.url);
  core = kc.makeApiClient(CoreV1Api);
});

afterAll(async () => {
  await sim?.stop();
});

const fastBackoff = { initialMs: 20, maxMs: 200, jitter: 0.1 };

function names(informer: Informer<V1Pod>): string[] {
  return informer
    .list()
    .map((p) => p.metadata!.name!)
    .sort();
}

describe('createInformer', () => {
  it('syncs, reports add/update/delete and hands out copies', async () => {
    const ns = await createNamespace(kc);
    await core.createNamespacedPod({ namespace: ns, body: podManifest('pre-existing-pod') });
    const { logger } = memoryLogger();
    const informer = createInformer<V1Pod>({
      kc,
      resource: Resources.pods,
      namespace: ns,
      logger,
      backoff: fastBackoff,
    });
    const seen: string[] = [];
    informer.onAdd((p) => seen.push(`add:${p.metadata!.name}`));
    informer.onUpdate((p) => seen.push(`update:${p.metadata!.name}:${p.metadata!.labels?.v}`));
    const offDelete = informer.onDelete((p) => seen.push(`delete:${p.metadata!.name}`));
    expect(informer.synced).toBe(false);
    await informer.start();
    try {
      expect(informer.synced).toBe(true);
      expect(names(informer)).toEqual(['pre-existing-pod']);

      // A copy: mutating it leaves the cache alone.
      const copy = informer.get(ns, 'pre-existing-pod')!;
      copy.metadata!.name = 'mutated';
      expect(informer.get(ns, 'pre-existing-pod')!.metadata!.name).toBe('pre-existing-pod');

      await core.createNamespacedPod({ namespace: ns, body: podManifest('added-pod') });
      await core.patchNamespacedPod(
        { namespace: ns, name: 'added-pod', body: { metadata: { labels: { v: '2' } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      await core.deleteNamespacedPod({
        namespace: ns,
        name: 'pre-existing-pod',
        gracePeriodSeconds: 0,
      });
      await waitFor(() => seen.includes('delete:pre-existing-pod'), { description: 'delete' });
      expect(seen).toEqual([
        'add:pre-existing-pod',
        'add:added-pod',
        'update:added-pod:2',
        'delete:pre-existing-pod',
      ]);
      expect(names(informer)).toEqual(['added-pod']);
      expect(informer.list((p) => p.metadata?.labels?.v === '2')).toHaveLength(1);

      offDelete();
      await core.deleteNamespacedPod({ namespace: ns, name: 'added-pod', gracePeriodSeconds: 0 });
      await waitFor(() => informer.list().length === 0, { description: 'cache empty' });
      expect(seen.filter((s) => s.startsWith('delete:'))).toEqual(['delete:pre-existing-pod']);
      expect(informer.restarts).toBe(0);
    } finally {
      await informer.stop();
    }
  });

  it('watches custom resources (VMIs) with a label selector', async () => {
    const ns = await createNamespace(kc);
    await createVmi(kc, ns, 'vmi-one');
    const { logger } = memoryLogger();
    const informer = createInformer<VirtualMachineInstance>({
      kc,
      resource: Resources.virtualMachineInstances,
      namespace: ns,
      labelSelector: 'app=kube-test',
      logger,
    });
    await informer.start();
    try {
      expect(informer.get(ns, 'vmi-one')?.spec.domain.devices).toEqual({});
      await createVmi(kc, ns, 'vmi-two');
      await waitFor(() => informer.get(ns, 'vmi-two'), { description: 'vmi-two' });
      expect(
        informer
          .list()
          .map((v) => v.metadata.name)
          .sort(),
      ).toEqual(['vmi-one', 'vmi-two']);
    } finally {
      await informer.stop();
    }
  });

  it('applies a field selector to both list and watch', async () => {
    const ns = await createNamespace(kc);
    await core.createNamespacedPod({ namespace: ns, body: podManifest('wanted-pod') });
    await core.createNamespacedPod({ namespace: ns, body: podManifest('other-pod') });
    const { logger } = memoryLogger();
    const informer = createInformer<V1Pod>({
      kc,
      resource: Resources.pods,
      fieldSelector: `metadata.namespace=${ns},metadata.name=wanted-pod`,
      logger,
    });
    await informer.start();
    try {
      expect(names(informer)).toEqual(['wanted-pod']);
      await core.deleteNamespacedPod({ namespace: ns, name: 'wanted-pod', gracePeriodSeconds: 0 });
      await core.createNamespacedPod({ namespace: ns, body: podManifest('another-pod') });
      await core.createNamespacedPod({ namespace: ns, body: podManifest('wanted-pod') });
      await waitFor(() => informer.get(ns, 'wanted-pod'), { description: 'recreated pod' });
      expect(names(informer)).toEqual(['wanted-pod']);
    } finally {
      await informer.stop();
    }
  });

  it('resumes after the server drops its watches', async () => {
    const ns = await createNamespace(kc);
    const { logger } = memoryLogger();
    const informer = createInformer<V1Pod>({ kc, resource: Resources.pods, namespace: ns, logger });
    await informer.start();
    try {
      for (let round = 0; round < 3; round++) {
        expect(sim.dropWatches()).toBeGreaterThan(0);
        const name = `after-drop-${round}`;
        await core.createNamespacedPod({ namespace: ns, body: podManifest(name) });
        await waitFor(() => informer.get(ns, name), { description: name });
      }
      expect(names(informer)).toEqual(['after-drop-0', 'after-drop-1', 'after-drop-2']);
    } finally {
      await informer.stop();
    }
  });

  it(
    'restarts with backoff after errors and re-lists after a 410, converging with deletes',
    { timeout: 30_000 },
    async () => {
      const ns = await createNamespace(kc);
      await core.createNamespacedPod({ namespace: ns, body: podManifest('doomed-pod') });
      await core.createNamespacedPod({ namespace: ns, body: podManifest('kept-pod') });
      const { proxy, url } = await CuttableProxy.start(sim.url);
      const { logger, lines } = memoryLogger();
      const informer = createInformer<V1Pod>({
        kc: kubeConfigFor(url),
        resource: Resources.pods,
        namespace: ns,
        logger,
        backoff: fastBackoff,
      });
      const deleted: string[] = [];
      informer.onDelete((p) => deleted.push(p.metadata!.name!));
      try {
        await informer.start();
        expect(names(informer)).toEqual(['doomed-pod', 'kept-pod']);

        proxy.cut();
        await waitFor(() => informer.restarts >= 2, { description: 'restarts while cut' });
        // Changes while the informer is blind; then forget the history so its resourceVersion is too old.
        await core.deleteNamespacedPod({
          namespace: ns,
          name: 'doomed-pod',
          gracePeriodSeconds: 0,
        });
        await core.createNamespacedPod({ namespace: ns, body: podManifest('new-pod') });
        sim.compact();
        proxy.heal();

        await waitFor(() => names(informer).join() === 'kept-pod,new-pod', {
          description: 'cache converged',
          timeout: 10_000,
        });
        expect(deleted).toEqual(['doomed-pod']);
        expect(informer.synced).toBe(true);
        const warnings = lines().filter(
          (l) => l.msg === 'informer stopped on an error; restarting after backoff',
        );
        expect(warnings.length).toBe(informer.restarts);
        // Backoff grows (capped): delays are not all the initial one.
        const delays = warnings.map((w) => w.delayMs as number);
        expect(Math.max(...delays)).toBeGreaterThan(fastBackoff.initialMs * 1.5);
        expect(Math.max(...delays)).toBeLessThanOrEqual(fastBackoff.maxMs * 1.1);

        // And it keeps watching afterwards.
        await core.createNamespacedPod({ namespace: ns, body: podManifest('later-pod') });
        await waitFor(() => informer.get(ns, 'later-pod'), { description: 'later-pod' });
      } finally {
        await informer.stop();
        await proxy.close();
      }
    },
  );

  it(
    'start() waits for the first successful list and rejects when stopped first',
    { timeout: 30_000 },
    async () => {
      const ns = await createNamespace(kc);
      const { proxy, url } = await CuttableProxy.start(sim.url);
      proxy.cut();
      const { logger } = memoryLogger();
      const informer = createInformer<V1Pod>({
        kc: kubeConfigFor(url),
        resource: Resources.pods,
        namespace: ns,
        logger,
        backoff: fastBackoff,
      });
      let other: Informer<V1Pod> | undefined;
      try {
        let resolved = false;
        const started = informer.start().then(() => (resolved = true));
        await waitFor(() => informer.restarts >= 1, { description: 'a failed list' });
        expect(informer.synced).toBe(false);
        expect(resolved).toBe(false);
        proxy.heal();
        await waitFor(() => resolved, { description: 'start() resolved' });
        await started;
        expect(informer.synced).toBe(true);

        other = createInformer<V1Pod>({
          kc: kubeConfigFor(url),
          resource: Resources.pods,
          namespace: ns,
          logger,
          backoff: fastBackoff,
        });
        proxy.cut();
        const pending = other.start();
        await waitFor(() => other!.restarts >= 1, { description: 'a failed list' });
        await other.stop();
        await expect(pending).rejects.toBeInstanceOf(InformerStoppedError);
      } finally {
        await informer.stop();
        await other?.stop();
        await proxy.close();
      }
    },
  );
});
