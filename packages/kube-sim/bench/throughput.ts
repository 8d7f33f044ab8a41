// List and watch throughput of kube-sim for 10,000 VMIs, through @kubernetes/client-node.
// Run: pnpm --filter @plugline/kube-sim exec tsx bench/throughput.ts [count]
import {
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  Watch,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { PatchType, Types, startKubeSim } from '../src/index.js';

const COUNT = Number(process.argv[2] ?? 10_000);
const CONCURRENCY = 32;
const KV = {
  group: 'kubevirt.io',
  version: 'v1',
  plural: 'virtualmachineinstances',
  namespace: 'bench',
};

function vmi(i: number): Record<string, unknown> {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: {
      name: `vmi-${String(i).padStart(5, '0')}`,
      labels: { bench: 'yes', shard: String(i % 10) },
    },
    spec: {
      domain: {
        devices: { disks: [{ name: 'root', disk: { bus: 'virtio' } }] },
        resources: { requests: { memory: '128Mi' } },
      },
      volumes: [{ name: 'root', persistentVolumeClaim: { claimName: `root-${i}` } }],
    },
  };
}

async function pool(n: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

function rate(n: number, ms: number): string {
  return `${Math.round((n / ms) * 1000).toLocaleString('en-US')} objects/s (${n} in ${ms.toFixed(0)} ms)`;
}

async function watchCount(
  kc: KubeConfig,
  params: Record<string, string | number | boolean | undefined>,
  expect: number,
  drive?: () => Promise<void>,
) {
  let seen = 0;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const start = performance.now();
  const controller = await new Watch(kc).watch(
    `/apis/kubevirt.io/v1/namespaces/bench/virtualmachineinstances`,
    params,
    (type) => {
      if (type !== 'BOOKMARK' && ++seen === expect) resolveDone();
    },
    () => resolveDone(),
  );
  if (drive) await drive();
  await done;
  const ms = performance.now() - start;
  controller.abort();
  return { seen, ms };
}

async function main(): Promise<void> {
  const sim = await startKubeSim({
    kubelet: false,
    namespaces: ['bench'],
    watchCacheSize: COUNT * 2,
  });
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(sim.kubeconfigPath);
    const api = kc.makeApiClient(CustomObjectsApi);

    let t = performance.now();
    await pool(COUNT, (i) => api.createNamespacedCustomObject({ ...KV, body: vmi(i) }));
    console.log(
      `create (HTTP, schema-validated, ${CONCURRENCY} in flight): ${rate(COUNT, performance.now() - t)}`,
    );

    t = performance.now();
    const url = `${sim.url}/apis/kubevirt.io/v1/namespaces/bench/virtualmachineinstances`;
    await pool(COUNT, async (i) => {
      const body = vmi(i + COUNT);
      const res = await fetch(url, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
      });
      await res.arrayBuffer();
    });
    console.log(
      `create (plain fetch, same server, for comparison): ${rate(COUNT, performance.now() - t)}`,
    );
    await pool(COUNT, async (i) => {
      const res = await fetch(`${url}/vmi-${String(i + COUNT).padStart(5, '0')}`, {
        method: 'DELETE',
      });
      await res.arrayBuffer();
    });

    for (let round = 1; round <= 3; round++) {
      t = performance.now();
      const list = (await api.listNamespacedCustomObject(KV)) as { items: unknown[] };
      console.log(
        `list #${round} (one request): ${rate(list.items.length, performance.now() - t)}`,
      );
    }
    t = performance.now();
    const sel = (await api.listNamespacedCustomObject({ ...KV, labelSelector: 'shard=3' })) as {
      items: unknown[];
    };
    console.log(
      `list with labelSelector (${sel.items.length} of ${COUNT} match): ${rate(COUNT, performance.now() - t)} scanned`,
    );

    const initial = await watchCount(kc, { resourceVersion: '0' }, COUNT);
    console.log(
      `watch, initial ADDED events from resourceVersion=0: ${rate(initial.seen, initial.ms)}`,
    );

    const rv = sim.store.resourceVersion;
    const replay = await watchCount(kc, { resourceVersion: '1' }, COUNT);
    console.log(`watch, replay from history (resume): ${rate(replay.seen, replay.ms)}`);

    const live = await watchCount(kc, { resourceVersion: rv }, COUNT, () =>
      pool(COUNT, (i) =>
        api.patchNamespacedCustomObject(
          {
            ...KV,
            name: `vmi-${String(i).padStart(5, '0')}`,
            body: { metadata: { labels: { round: '2' } } },
          },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        ),
      ),
    );
    console.log(
      `watch, live MODIFIED events driven by ${COUNT} HTTP merge patches: ${rate(live.seen, live.ms)}`,
    );

    const direct = await watchCount(
      kc,
      { resourceVersion: sim.store.resourceVersion },
      COUNT,
      () => {
        for (let i = 0; i < COUNT; i++) {
          sim.store.patch(
            Types.virtualmachineinstances,
            `vmi-${String(i).padStart(5, '0')}`,
            PatchType.Merge,
            {
              metadata: { labels: { round: '3' } },
            },
            { namespace: 'bench' },
          );
        }
        return Promise.resolve();
      },
    );
    console.log(
      `watch, live MODIFIED events from in-process writes (watch path only): ${rate(direct.seen, direct.ms)}`,
    );
  } finally {
    await sim.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
