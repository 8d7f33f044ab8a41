import { CoreV1Api, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import type { VirtualMachineInstance } from '@plugline/contracts';
import { waitFor } from '@plugline/testkit';
import type { Logger } from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { InformerStoppedError, Resources, createInformer, type Informer } from '../src/index.js';
import {
  CuttableProxy,
  createNamespace,
  createVmi,
  kubeConfigFor,
  memoryLogger,
  podManifest,
} from './helpers.js';
import { useKubeSim } from './sim.js';

const env = useKubeSim();
let core: CoreV1Api;

beforeAll(() => {
  core = env.kc.makeApiClient(CoreV1Api);
});

const fastBackoff = { initialMs: 20, maxMs: 200, jitter: 0.1 };

/** A pod informer of `ns` that reaches the simulator through `url` (a proxy), backing off fast. */
function podInformerVia(url: string, ns: string, logger: Logger): Informer<V1Pod> {
  return createInformer<V1Pod>({
    kc: kubeConfigFor(url),
    resource: Resources.pods,
    namespace: ns,
    logger,
    backoff: fastBackoff,
  });
}

function names(informer: Informer<V1Pod>): string[] {
  return informer
    .list()
    .map((p) => p.metadata!.name!)
    .sort();
}

describe('createInformer', () => {
  it('syncs, reports add/update/delete and hands out copies', async () => {
    const ns = await createNamespace(env.kc);
    await core.createNamespacedPod({ namespace: ns, body: podManifest('pre-existing-pod') });
    const { logger } = memoryLogger();
    const informer = createInformer<V1Pod>({
      kc: env.kc,
      resource: Resources.pods,
      namespace: ns,
      logger,
      backoff: fastBackoff,
    });
    const seen: string[] = [];
    informer.onAdd((p) => seen.push(`add:${p.metadata!.name}`));
    informer.onUpdate((p) => seen.push(`update:${p.metadata!.name}:${p.metadata!.labels?.v}`));
    const offDelete = informer.onDelete((p) => seen.push(`delete:${p.metadata!.name}`));
    const versions: string[] = [];
    informer.onVersion((namespace, name, rv) => versions.push(`${namespace}/${name}@${rv}`));
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
      // Every add and update's version, in order (a delete has none to tell).
      const added = informer.get(ns, 'added-pod')!.metadata!.resourceVersion!;
      expect(versions).toHaveLength(3);
      expect(versions[0]).toMatch(new RegExp(`^${ns}/pre-existing-pod@`));
      expect(versions[1]).toMatch(new RegExp(`^${ns}/added-pod@`));
      expect(versions[2]).toBe(`${ns}/added-pod@${added}`);
      const [kept] = informer.list((p) => p.metadata?.labels?.v === '2');
      expect(kept).toBeDefined();
      // What a filtered list hands out is a copy: changing it leaves the cache as it was.
      kept!.metadata!.labels!.v = 'changed by the caller';
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

  it(
    'finds objects by an index that follows adds, key changes, deletes and a re-list after a 410',
    { timeout: 30_000 },
    async () => {
      const ns = await createNamespace(env.kc);
      await core.createNamespacedPod({
        namespace: ns,
        body: podManifest('red-1', { color: 'red' }),
      });
      const { proxy, url } = await CuttableProxy.start(env.sim.url);
      const { logger } = memoryLogger();
      const informer = podInformerVia(url, ns, logger);
      const colored = (color: string): string[] =>
        byColor(color)
          .map((p) => p.metadata!.name!)
          .sort();
      // Made before the informer starts: it indexes what the first list brings.
      const byColor = informer.index((p) =>
        p.metadata?.labels?.color ? [p.metadata.labels.color] : [],
      );
      try {
        await informer.start();
        expect(colored('red')).toEqual(['red-1']);
        await core.createNamespacedPod({
          namespace: ns,
          body: podManifest('red-2', { color: 'red' }),
        });
        await core.createNamespacedPod({
          namespace: ns,
          body: podManifest('blue-1', { color: 'blue' }),
        });
        await core.createNamespacedPod({ namespace: ns, body: podManifest('plain') });
        await waitFor(() => informer.get(ns, 'plain') !== undefined, { description: 'all seen' });
        expect(colored('blue')).toEqual(['blue-1']);
        expect(colored('red')).toEqual(['red-1', 'red-2']);
        // An index made on a synced cache starts with what it holds.
        const byName = informer.index((p) => [p.metadata!.name!]);
        expect(byName('plain').map((p) => p.metadata!.name)).toEqual(['plain']);

        // A changed key moves the object; a copy handed out leaves the cache alone.
        await core.patchNamespacedPod(
          { namespace: ns, name: 'red-2', body: { metadata: { labels: { color: 'blue' } } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
        await waitFor(() => colored('blue').length === 2, { description: 'red-2 turned blue' });
        expect(colored('red')).toEqual(['red-1']);
        byColor('red')[0]!.metadata!.labels!.color = 'changed by the caller';
        expect(colored('red')).toEqual(['red-1']);

        await core.deleteNamespacedPod({ namespace: ns, name: 'red-1', gracePeriodSeconds: 0 });
        await waitFor(() => colored('red').length === 0, { description: 'red-1 gone' });

        // Blind while blue-1 goes and a green one comes; the history is forgotten (410 → re-list).
        proxy.cut();
        await waitFor(() => informer.restarts >= 1, { description: 'a restart while cut' });
        await core.deleteNamespacedPod({ namespace: ns, name: 'blue-1', gracePeriodSeconds: 0 });
        await core.createNamespacedPod({
          namespace: ns,
          body: podManifest('green-1', { color: 'green' }),
        });
        env.sim.compact();
        proxy.heal();
        await waitFor(() => colored('green').length === 1, {
          description: 'green-1 after the re-list',
          timeout: 10_000,
        });
        expect(colored('blue')).toEqual(['red-2']);
        expect(byName('blue-1')).toEqual([]);
      } finally {
        await informer.stop();
        await proxy.close();
      }
    },
  );

  it('watches custom resources (VMIs) with a label selector', async () => {
    const ns = await createNamespace(env.kc);
    await createVmi(env.kc, ns, 'vmi-one');
    const { logger } = memoryLogger();
    const informer = createInformer<VirtualMachineInstance>({
      kc: env.kc,
      resource: Resources.virtualMachineInstances,
      namespace: ns,
      labelSelector: 'app=kube-test',
      logger,
    });
    await informer.start();
    try {
      expect(informer.get(ns, 'vmi-one')?.spec.domain.devices).toEqual({});
      await createVmi(env.kc, ns, 'vmi-two');
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
    const ns = await createNamespace(env.kc);
    await core.createNamespacedPod({ namespace: ns, body: podManifest('wanted-pod') });
    await core.createNamespacedPod({ namespace: ns, body: podManifest('other-pod') });
    const { logger } = memoryLogger();
    const informer = createInformer<V1Pod>({
      kc: env.kc,
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

  it('after a connection reset of a watch that delivered changes, restarts after the first delay again', async () => {
    const ns = await createNamespace(env.kc);
    const { proxy, url } = await CuttableProxy.start(env.sim.url);
    const { logger, lines } = memoryLogger();
    // The default backoff: 250 ms first, doubling per failure in a row.
    const informer = createInformer<V1Pod>({
      kc: kubeConfigFor(url),
      resource: Resources.pods,
      namespace: ns,
      logger,
    });
    try {
      await informer.start();
      for (let drop = 0; drop < 4; drop++) {
        // Each reset cuts a watch that ran and delivered a change: four drops in a few seconds,
        // as a rolling restart of API servers or a load balancer's resets make them.
        proxy.reset();
        await waitFor(() => informer.restarts > drop, { description: `restart ${drop}` });
        const name = `after-reset-${drop}`;
        await core.createNamespacedPod({ namespace: ns, body: podManifest(name) });
        await waitFor(() => informer.get(ns, name), { description: name });
      }
      const delays = lines()
        .filter((l) => l.msg === 'informer stopped on an error; restarting after backoff')
        .map((l) => l.delayMs as number);
      expect(delays).toHaveLength(4);
      // Not 250, 500, 1000, 2000: each drop is one failure, not the next of a series.
      expect(Math.max(...delays)).toBeLessThanOrEqual(250 * 1.2);
    } finally {
      await informer.stop();
      await proxy.close();
    }
  });

  it('resumes after the server drops its watches', async () => {
    const ns = await createNamespace(env.kc);
    const { logger } = memoryLogger();
    const informer = createInformer<V1Pod>({
      kc: env.kc,
      resource: Resources.pods,
      namespace: ns,
      logger,
    });
    await informer.start();
    try {
      for (let round = 0; round < 3; round++) {
        expect(env.sim.dropWatches()).toBeGreaterThan(0);
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
      const ns = await createNamespace(env.kc);
      await core.createNamespacedPod({ namespace: ns, body: podManifest('doomed-pod') });
      await core.createNamespacedPod({ namespace: ns, body: podManifest('kept-pod') });
      const { proxy, url } = await CuttableProxy.start(env.sim.url);
      const { logger, lines } = memoryLogger();
      const informer = podInformerVia(url, ns, logger);
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
        env.sim.compact();
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
      const ns = await createNamespace(env.kc);
      const { proxy, url } = await CuttableProxy.start(env.sim.url);
      proxy.cut();
      const { logger } = memoryLogger();
      const informer = podInformerVia(url, ns, logger);
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

        other = podInformerVia(url, ns, logger);
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
