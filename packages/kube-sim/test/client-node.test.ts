/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return -- assertions read API JSON loosely */
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  Watch,
  makeInformer,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Types, startKubeSim } from '../src/index.js';
import type { KubeSim } from '../src/index.js';
import { failure, pod, rand, vmi } from './helpers.js';

const KV = { group: 'kubevirt.io', version: 'v1', plural: 'virtualmachineinstances' };
type Obj = Record<string, any>;

let sim: KubeSim;
let kc: KubeConfig;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let ns: string;

beforeAll(async () => {
  sim = await startKubeSim({ podStartLatencyMs: 10, bookmarkIntervalMs: 100 });
  kc = new KubeConfig();
  kc.loadFromFile(sim.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  custom = kc.makeApiClient(CustomObjectsApi);
  ns = rand('conf');
  await core.createNamespace({ body: { metadata: { name: ns } } });
});

afterAll(async () => {
  await sim?.stop();
});

async function createVmi(name: string, labels: Record<string, string> = {}): Promise<Obj> {
  return (await custom.createNamespacedCustomObject({
    ...KV,
    namespace: ns,
    body: vmi(name, labels),
  })) as Obj;
}

describe('objects', () => {
  it('creates with uid, resourceVersion, creationTimestamp, generation, and refuses a duplicate (409 AlreadyExists)', async () => {
    const created = await core.createNamespacedPod({ namespace: ns, body: pod('dup') });
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number(created.metadata?.resourceVersion)).toBeGreaterThan(0);
    expect(created.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(created.metadata?.generation).toBe(1);
    expect(created.status?.phase).toBe('Pending');
    const err = await failure(core.createNamespacedPod({ namespace: ns, body: pod('dup') }));
    expect(err.code).toBe(409);
    expect(err.status).toMatchObject({ kind: 'Status', reason: 'AlreadyExists', code: 409 });
  });

  it('answers 404 with a NotFound Status, also for a missing namespace', async () => {
    const err = await failure(core.readNamespacedPod({ namespace: ns, name: 'absent' }));
    expect(err.code).toBe(404);
    expect(err.status).toMatchObject({ reason: 'NotFound', message: 'pods "absent" not found' });
    const nsErr = await failure(
      core.createNamespacedPod({ namespace: rand('nope'), body: pod('x') }),
    );
    expect(nsErr.code).toBe(404);
  });

  it('names objects from generateName', async () => {
    const body = pod('') as V1Pod;
    body.metadata = { generateName: 'hp-volume-' };
    const created = await core.createNamespacedPod({ namespace: ns, body });
    expect(created.metadata?.name).toMatch(/^hp-volume-[a-z0-9]{5}$/);
  });

  it('refuses a stale resourceVersion with 409 Conflict; a retry on the fresh object succeeds', async () => {
    const name = rand('vmi');
    const first = await createVmi(name);
    const updated = structuredClone(first);
    updated.metadata.labels = { round: 'one' };
    await custom.replaceNamespacedCustomObject({ ...KV, namespace: ns, name, body: updated });
    const stale = structuredClone(first);
    stale.metadata.labels = { round: 'two' };
    const err = await failure(
      custom.replaceNamespacedCustomObject({ ...KV, namespace: ns, name, body: stale }),
    );
    expect(err.code).toBe(409);
    expect(err.status.reason).toBe('Conflict');
    // Conflict retry: read again, apply the change, write.
    const fresh = (await custom.getNamespacedCustomObject({ ...KV, namespace: ns, name })) as Obj;
    fresh.metadata.labels = { round: 'two' };
    const ok = (await custom.replaceNamespacedCustomObject({
      ...KV,
      namespace: ns,
      name,
      body: fresh,
    })) as Obj;
    expect(ok.metadata.labels).toEqual({ round: 'two' });
    expect(Number(ok.metadata.resourceVersion)).toBeGreaterThan(
      Number(fresh.metadata.resourceVersion),
    );
  });

  it('bumps generation on spec changes only; status goes through the status subresource', async () => {
    const name = rand('vmi');
    await createVmi(name);
    const labelled = (await custom.patchNamespacedCustomObject(
      { ...KV, namespace: ns, name, body: { metadata: { labels: { a: 'b' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as Obj;
    expect(labelled.metadata.generation).toBe(1);
    const specChanged = (await custom.patchNamespacedCustomObject(
      { ...KV, namespace: ns, name, body: [{ op: 'add', path: '/spec/hostname', value: 'h1' }] },
      setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
    )) as Obj;
    expect(specChanged.metadata.generation).toBe(2);
    const ignored = (await custom.patchNamespacedCustomObject(
      { ...KV, namespace: ns, name, body: { status: { phase: 'Running' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as Obj;
    expect(ignored.status?.phase).toBeUndefined();
    const status = (await custom.patchNamespacedCustomObjectStatus(
      { ...KV, namespace: ns, name, body: { status: { phase: 'Running' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as Obj;
    expect(status.status.phase).toBe('Running');
    expect(status.metadata.generation).toBe(2);
  });

  it('rejects a JSON patch whose test fails with 422 and leaves the object alone', async () => {
    const name = rand('vmi');
    const created = await createVmi(name, { owner: 'me' });
    const err = await failure(
      custom.patchNamespacedCustomObject(
        {
          ...KV,
          namespace: ns,
          name,
          body: [
            { op: 'test', path: '/metadata/labels/owner', value: 'someone-else' },
            { op: 'replace', path: '/metadata/labels/owner', value: 'thief' },
          ],
        },
        setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
      ),
    );
    expect(err.code).toBe(422);
    const after = (await custom.getNamespacedCustomObject({ ...KV, namespace: ns, name })) as Obj;
    expect(after.metadata.labels.owner).toBe('me');
    expect(after.metadata.resourceVersion).toBe(created.metadata.resourceVersion);
    const passing = (await custom.patchNamespacedCustomObject(
      {
        ...KV,
        namespace: ns,
        name,
        body: [
          { op: 'test', path: '/metadata/labels/owner', value: 'me' },
          { op: 'replace', path: '/metadata/labels/owner', value: 'you' },
        ],
      },
      setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
    )) as Obj;
    expect(passing.metadata.labels.owner).toBe('you');
  });

  it('merges lists by key with a strategic merge patch, and refuses one on a custom resource (415)', async () => {
    const name = rand('smp');
    // On a node no kubelet runs, so nothing else writes the status meanwhile.
    await core.createNamespacedPod({
      namespace: ns,
      body: pod(name, { nodeName: 'unmanaged' }),
    });
    await core.patchNamespacedPodStatus(
      { namespace: ns, name, body: { status: { conditions: [{ type: 'A', status: 'True' }] } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    const both = await core.patchNamespacedPodStatus(
      { namespace: ns, name, body: { status: { conditions: [{ type: 'B', status: 'False' }] } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    expect(both.status?.conditions?.map((c) => c.type).sort()).toEqual(['A', 'B']);
    const vmiName = rand('vmi');
    await createVmi(vmiName);
    const err = await failure(
      custom.patchNamespacedCustomObject(
        { ...KV, namespace: ns, name: vmiName, body: { metadata: { labels: { x: 'y' } } } },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      ),
    );
    expect(err.code).toBe(415);
  });

  it('keeps an object with finalizers until they are removed; then it is gone', async () => {
    const name = rand('fin');
    const body = vmi(name) as Obj;
    body.metadata.finalizers = ['plugline.io/test'];
    await custom.createNamespacedCustomObject({ ...KV, namespace: ns, body });
    const deleting = (await custom.deleteNamespacedCustomObject({
      ...KV,
      namespace: ns,
      name,
    })) as Obj;
    expect(deleting.metadata.deletionTimestamp).toBeDefined();
    const still = (await custom.getNamespacedCustomObject({ ...KV, namespace: ns, name })) as Obj;
    expect(still.metadata.finalizers).toEqual(['plugline.io/test']);
    await custom.patchNamespacedCustomObject(
      { ...KV, namespace: ns, name, body: [{ op: 'remove', path: '/metadata/finalizers' }] },
      setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
    );
    expect(
      (await failure(custom.getNamespacedCustomObject({ ...KV, namespace: ns, name }))).code,
    ).toBe(404);
  });

  it('deletes dependents through ownerReferences (background cascade)', async () => {
    const owner = await createVmi(rand('owner'));
    const name = rand('dependent');
    const body = pod(name) as V1Pod;
    body.metadata!.ownerReferences = [
      {
        apiVersion: 'kubevirt.io/v1',
        kind: 'VirtualMachineInstance',
        name: owner.metadata.name,
        uid: owner.metadata.uid,
        controller: true,
      },
    ];
    await core.createNamespacedPod({ namespace: ns, body });
    await custom.deleteNamespacedCustomObject({ ...KV, namespace: ns, name: owner.metadata.name });
    await vi.waitFor(
      async () => {
        expect((await failure(core.readNamespacedPod({ namespace: ns, name }))).code).toBe(404);
      },
      { timeout: 5000, interval: 20 },
    );
  });
});

describe('list', () => {
  it('filters by labelSelector and by fieldSelector (metadata.name, metadata.namespace, spec.nodeName, status.phase)', async () => {
    const a = rand('sel');
    const b = rand('sel');
    await core.createNamespacedPod({
      namespace: ns,
      body: { ...pod(a), metadata: { name: a, labels: { tier: 'x', sel: 'yes' } } },
    });
    await core.createNamespacedPod({
      namespace: ns,
      body: {
        ...pod(b, { nodeName: 'nowhere' }),
        metadata: { name: b, labels: { tier: 'y', sel: 'yes' } },
      },
    });
    const names = (l: { items: V1Pod[] }) => l.items.map((p) => p.metadata?.name).sort();
    expect(
      names(await core.listNamespacedPod({ namespace: ns, labelSelector: 'sel=yes,tier in (x)' })),
    ).toEqual([a]);
    expect(
      names(await core.listNamespacedPod({ namespace: ns, labelSelector: 'sel,tier!=x' })),
    ).toEqual([b]);
    expect(
      names(await core.listNamespacedPod({ namespace: ns, fieldSelector: `metadata.name=${b}` })),
    ).toEqual([b]);
    expect(
      names(
        await core.listPodForAllNamespaces({
          fieldSelector: `metadata.namespace=${ns},spec.nodeName=nowhere`,
        }),
      ),
    ).toEqual([b]);
    await vi.waitFor(
      async () => {
        const running = await core.listNamespacedPod({
          namespace: ns,
          fieldSelector: 'status.phase=Running',
          labelSelector: 'sel=yes',
        });
        expect(names(running)).toEqual([a]);
      },
      { timeout: 5000, interval: 20 },
    );
    const pending = await core.listNamespacedPod({
      namespace: ns,
      fieldSelector: 'status.phase=Pending',
      labelSelector: 'sel=yes',
    });
    expect(names(pending)).toEqual([b]);
    const err = await failure(core.listNamespacedPod({ namespace: ns, labelSelector: 'a in (' }));
    expect(err.code).toBe(400);
  });

  it('pages with limit and continue', async () => {
    const pns = rand('page');
    await core.createNamespace({ body: { metadata: { name: pns } } });
    for (let i = 0; i < 5; i++) {
      await custom.createNamespacedCustomObject({ ...KV, namespace: pns, body: vmi(`v${i}`) });
    }
    const first = (await custom.listNamespacedCustomObject({
      ...KV,
      namespace: pns,
      limit: 3,
    })) as Obj;
    expect(first.items).toHaveLength(3);
    expect(first.metadata.continue).toBeTruthy();
    const rest = (await custom.listNamespacedCustomObject({
      ...KV,
      namespace: pns,
      limit: 3,
      _continue: first.metadata.continue,
    })) as Obj;
    expect(rest.items.map((o: Obj) => o.metadata.name)).toEqual(['v3', 'v4']);
    expect(rest.metadata.continue).toBeFalsy();
  });

  it('lists events by involvedObject field selectors', async () => {
    const name = rand('evt');
    const created = await core.createNamespacedPod({ namespace: ns, body: pod(name) });
    await vi.waitFor(
      async () => {
        const events = await core.listNamespacedEvent({
          namespace: ns,
          fieldSelector: `involvedObject.name=${name},involvedObject.namespace=${ns},involvedObject.uid=${created.metadata?.uid}`,
        });
        expect(events.items.map((e) => e.reason)).toContain('Scheduled');
        expect(events.items.every((e) => e.involvedObject.name === name)).toBe(true);
      },
      { timeout: 5000, interval: 20 },
    );
  });
});

describe('watch', () => {
  function collect(path: string, params: Record<string, string | number | boolean | undefined>) {
    const events: { type: string; obj: Obj }[] = [];
    let done: unknown = 'open';
    const controller = new Watch(kc).watch(
      path,
      params,
      (type, obj: Obj) => events.push({ type, obj }),
      (err) => (done = err ?? 'closed'),
    );
    return { events, done: () => done, controller };
  }

  it('streams ADDED, MODIFIED, DELETED from a resourceVersion, with bookmarks', async () => {
    const wns = rand('watch');
    await core.createNamespace({ body: { metadata: { name: wns } } });
    const list = (await custom.listNamespacedCustomObject({ ...KV, namespace: wns })) as Obj;
    const w = collect(`/apis/kubevirt.io/v1/namespaces/${wns}/virtualmachineinstances`, {
      resourceVersion: list.metadata.resourceVersion,
      allowWatchBookmarks: true,
    });
    const c = await w.controller;
    await custom.createNamespacedCustomObject({ ...KV, namespace: wns, body: vmi('w1') });
    await custom.patchNamespacedCustomObject(
      { ...KV, namespace: wns, name: 'w1', body: { metadata: { labels: { x: '1' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await custom.deleteNamespacedCustomObject({ ...KV, namespace: wns, name: 'w1' });
    await vi.waitFor(
      () => {
        const kinds = w.events.filter((e) => e.type !== 'BOOKMARK').map((e) => e.type);
        expect(kinds).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
        expect(w.events.some((e) => e.type === 'BOOKMARK')).toBe(true);
      },
      { timeout: 5000, interval: 20 },
    );
    const rvs = w.events
      .filter((e) => e.type !== 'BOOKMARK')
      .map((e) => Number(e.obj.metadata.resourceVersion));
    expect([...rvs].sort((x, y) => x - y)).toEqual(rvs);
    c.abort();
  });

  it('counts at /metrics, as kube-apiserver does, the requests by verb and resource and the events each watch was sent', async () => {
    const scrape = async (): Promise<string> => (await fetch(`${sim.url}/metrics`)).text();
    const sample = (text: string, name: string, labels: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    const vmiRequests = (verb: string, subresource: string, code: number) =>
      `verb="${verb}",group="kubevirt.io",version="v1",resource="virtualmachineinstances",subresource="${subresource}",code="${code}"`;
    const vmiEvents = 'group="kubevirt.io",version="v1",kind="VirtualMachineInstance"';
    const mns = rand('metrics');
    await core.createNamespace({ body: { metadata: { name: mns } } });
    const before = await scrape();
    // two watchers: every change is sent twice
    const watchers = [0, 1].map(() =>
      collect(`/apis/kubevirt.io/v1/namespaces/${mns}/virtualmachineinstances`, {}),
    );
    const controllers = await Promise.all(watchers.map((w) => w.controller));
    await custom.createNamespacedCustomObject({ ...KV, namespace: mns, body: vmi('m1') });
    await custom.patchNamespacedCustomObjectStatus(
      { ...KV, namespace: mns, name: 'm1', body: { status: { phase: 'Running' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await custom.getNamespacedCustomObject({ ...KV, namespace: mns, name: 'm1' });
    expect(
      (await failure(custom.getNamespacedCustomObject({ ...KV, namespace: mns, name: 'm2' }))).code,
    ).toBe(404);
    await vi.waitFor(() => expect(watchers.map((w) => w.events.length)).toEqual([2, 2]), {
      timeout: 5000,
      interval: 20,
    });
    for (const c of controllers) c.abort();
    // a watch is counted once it ends
    let after = '';
    const delta = (name: string, labels: string) =>
      sample(after, name, labels) - sample(before, name, labels);
    await vi.waitFor(
      async () => {
        after = await scrape();
        expect(delta('apiserver_request_total', vmiRequests('WATCH', '', 200))).toBe(2);
      },
      { timeout: 5000, interval: 20 },
    );
    expect(delta('apiserver_request_total', vmiRequests('POST', '', 201))).toBe(1);
    expect(delta('apiserver_request_total', vmiRequests('PATCH', 'status', 200))).toBe(1);
    expect(delta('apiserver_request_total', vmiRequests('GET', '', 200))).toBe(1);
    expect(delta('apiserver_request_total', vmiRequests('GET', '', 404))).toBe(1);
    expect(delta('apiserver_watch_events_total', vmiEvents)).toBe(4);
    expect(delta('apiserver_watch_events_sizes_sum', vmiEvents)).toBeGreaterThan(4 * 200);
  });

  it('answers a compacted resourceVersion with an ERROR event carrying 410 Expired', async () => {
    const list = (await custom.listNamespacedCustomObject({ ...KV, namespace: ns })) as Obj;
    await createVmi(rand('compact'));
    sim.compact();
    const w = collect(`/apis/kubevirt.io/v1/namespaces/${ns}/virtualmachineinstances`, {
      resourceVersion: list.metadata.resourceVersion,
    });
    await vi.waitFor(
      () => {
        expect(w.events[0]?.type).toBe('ERROR');
        expect(w.events[0]?.obj).toMatchObject({ kind: 'Status', code: 410, reason: 'Expired' });
        expect(w.done()).not.toBe('open');
      },
      { timeout: 5000, interval: 20 },
    );
  });
});

/** The names of the objects an informer holds in one namespace, sorted. */
function cachedNames(
  informer: { list(namespace: string): readonly unknown[] },
  namespace: string,
): string[] {
  return informer
    .list(namespace)
    .map((o) => (o as Obj).metadata.name as string)
    .sort();
}

describe('informer', () => {
  it('resumes after dropped connections without re-listing, and re-lists after 410', async () => {
    const ins = rand('inf');
    await core.createNamespace({ body: { metadata: { name: ins } } });
    let lists = 0;
    const informer = makeInformer(
      kc,
      `/apis/kubevirt.io/v1/namespaces/${ins}/virtualmachineinstances`,
      async () => {
        lists++;
        return (await custom.listNamespacedCustomObject({ ...KV, namespace: ins })) as never;
      },
    );
    const errors: unknown[] = [];
    informer.on('error', (err) => errors.push(err));
    await custom.createNamespacedCustomObject({ ...KV, namespace: ins, body: vmi('before') });
    await informer.start();
    const names = () => cachedNames(informer, ins);
    await vi.waitFor(() => expect(names()).toEqual(['before']), { timeout: 5000, interval: 20 });
    expect(lists).toBe(1);

    // Chaos: the server drops every watch, and a VMI is created before the informer is back
    // (same tick): it resumes from its resourceVersion and gets the change from the history.
    expect(sim.dropWatches()).toBeGreaterThan(0);
    sim.store.create(Types.virtualmachineinstances, vmi('during'), { namespace: ins });
    await vi.waitFor(() => expect(names()).toEqual(['before', 'during']), {
      timeout: 5000,
      interval: 20,
    });
    expect(lists).toBe(1);

    // Dropped again; while it is away, changes happen and the history is compacted: the
    // resume gets 410 Gone and the informer re-lists (the deletion shows up too).
    await vi.waitFor(() => expect(sim.dropWatches()).toBeGreaterThan(0), {
      timeout: 5000,
      interval: 20,
    });
    sim.store.delete(Types.virtualmachineinstances, ins, 'before');
    sim.store.create(Types.virtualmachineinstances, vmi('after'), { namespace: ins });
    sim.compact();
    await vi.waitFor(
      () => {
        expect(names()).toEqual(['after', 'during']);
        expect(lists).toBe(2);
      },
      { timeout: 5000, interval: 20 },
    );
    expect(errors).toEqual([]);
    await informer.stop();
  });

  it('labels a VMI with the node its status names (kubevirt.io/nodeName), as virt-controller does, and relabels it when it moves', async () => {
    const name = rand('placed');
    await createVmi(name);
    const place = (node: string) =>
      custom.patchNamespacedCustomObjectStatus(
        { ...KV, namespace: ns, name, body: { status: { phase: 'Running', nodeName: node } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    const label = async () =>
      ((await custom.getNamespacedCustomObject({ ...KV, namespace: ns, name })) as Obj).metadata
        .labels?.['kubevirt.io/nodeName'];
    expect(await label()).toBeUndefined();
    await place('node-a');
    await vi.waitFor(async () => expect(await label()).toBe('node-a'), {
      timeout: 5000,
      interval: 20,
    });
    await place('node-b');
    await vi.waitFor(async () => expect(await label()).toBe('node-b'), {
      timeout: 5000,
      interval: 20,
    });
  });

  it('with a label selector, drops an object relabelled out of it (DELETED) and takes one relabelled in (ADDED), also when it resumes from the history', async () => {
    const ins = rand('sel');
    await core.createNamespace({ body: { metadata: { name: ins } } });
    const path = `/apis/kubevirt.io/v1/namespaces/${ins}/virtualmachineinstances`;
    const selector = 'kubevirt.io/nodeName=node-a';
    const informer = makeInformer(
      kc,
      path,
      async () =>
        (await custom.listNamespacedCustomObject({
          ...KV,
          namespace: ins,
          labelSelector: selector,
        })) as never,
      selector,
    );
    const deleted: string[] = [];
    informer.on('delete', (o) =>
      deleted.push(
        `${(o as Obj).metadata.name}@${(o as Obj).metadata.labels['kubevirt.io/nodeName']}`,
      ),
    );
    const relabel = (name: string, node: string) =>
      custom.patchNamespacedCustomObject(
        {
          ...KV,
          namespace: ins,
          name,
          body: { metadata: { labels: { 'kubevirt.io/nodeName': node } } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    await custom.createNamespacedCustomObject({
      ...KV,
      namespace: ins,
      body: vmi('moves', { 'kubevirt.io/nodeName': 'node-a' }),
    });
    await custom.createNamespacedCustomObject({
      ...KV,
      namespace: ins,
      body: vmi('elsewhere', { 'kubevirt.io/nodeName': 'node-b' }),
    });
    await informer.start();
    const names = () => cachedNames(informer, ins);
    await vi.waitFor(() => expect(names()).toEqual(['moves']), { timeout: 5000, interval: 20 });

    await relabel('moves', 'node-b');
    await vi.waitFor(() => expect(names()).toEqual([]), { timeout: 5000, interval: 20 });
    // The object as the watch last matched it, as kube-apiserver sends it.
    expect(deleted).toEqual(['moves@node-a']);
    await relabel('elsewhere', 'node-a');
    await vi.waitFor(() => expect(names()).toEqual(['elsewhere']), { timeout: 5000, interval: 20 });

    // The same transitions replayed from the history when a dropped watch resumes.
    expect(sim.dropWatches()).toBeGreaterThan(0);
    await relabel('elsewhere', 'node-b');
    await relabel('moves', 'node-a');
    await vi.waitFor(() => expect(names()).toEqual(['moves']), { timeout: 5000, interval: 20 });
    expect(deleted).toEqual(['moves@node-a', 'elsewhere@node-a']);
    await informer.stop();
  });
});

describe('KubeVirt schema validation', () => {
  it('refuses a VMI that breaks the schema with 422 Invalid and field causes', async () => {
    const bad = vmi(rand('bad')) as Obj;
    delete bad.spec.domain;
    const missing = await failure(
      custom.createNamespacedCustomObject({ ...KV, namespace: ns, body: bad }),
    );
    expect(missing.code).toBe(422);
    expect(missing.status).toMatchObject({
      reason: 'Invalid',
      details: { causes: [{ field: 'spec.domain', reason: 'FieldValueRequired' }] },
    });
    const wrongType = vmi(rand('bad')) as Obj;
    wrongType.spec.domain.devices.disks[0].disk.bus = 7;
    const typed = await failure(
      custom.createNamespacedCustomObject({ ...KV, namespace: ns, body: wrongType }),
    );
    expect(typed.code).toBe(422);
    expect(JSON.stringify(typed.status)).toContain('spec.domain.devices.disks[0].disk.bus');
  });

  it('validates updates too, and DataVolumes by CDI rules', async () => {
    const name = rand('vmi');
    await createVmi(name);
    const err = await failure(
      custom.patchNamespacedCustomObject(
        {
          ...KV,
          namespace: ns,
          name,
          body: [{ op: 'replace', path: '/spec/volumes', value: 'nope' }],
        },
        setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
      ),
    );
    expect(err.code).toBe(422);
    const dv = await failure(
      custom.createNamespacedCustomObject({
        group: 'cdi.kubevirt.io',
        version: 'v1beta1',
        plural: 'datavolumes',
        namespace: ns,
        body: {
          apiVersion: 'cdi.kubevirt.io/v1beta1',
          kind: 'DataVolume',
          metadata: { name: rand('dv') },
          spec: { source: { blank: {} } },
        },
      }),
    );
    expect(dv.code).toBe(422);
  });
});
