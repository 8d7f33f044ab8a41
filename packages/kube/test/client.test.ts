import { createServer } from 'node:net';
import { ConflictError, NotFoundError, TransientError } from '@plugline/contracts';
import { describe, expect, it, vi } from 'vitest';
import {
  KubeApiError,
  KubeClient,
  closeKubeConnections,
  createInformer,
  loadKubeConfig,
  mapKubeError,
  Resources,
  retryOnConflict,
} from '../src/index.js';
import { CuttableProxy, createVmi, kubeConfigFor, memoryLogger, podManifest } from './helpers.js';
import { useKubeSim } from './sim.js';

const env = useKubeSim({ logger: memoryLogger().logger });

describe('loadKubeConfig', () => {
  it('loads the given kubeconfig file', () => {
    const loaded = loadKubeConfig({ kubeconfig: env.sim.kubeconfigPath });
    expect(loaded.getCurrentCluster()?.server).toBe(env.sim.url);
  });

  it('fails with a ConfigError naming the field', () => {
    expect(() => loadKubeConfig({ kubeconfig: '/nonexistent/kubeconfig' })).toThrow(
      expect.objectContaining({ name: 'ConfigError', field: 'kubeconfig' }) as Error,
    );
  });
});

describe('KubeClient', () => {
  it('maps 404 to NotFoundError', async () => {
    await expect(env.client.getVmi(env.ns, 'no-such-vmi')).rejects.toBeInstanceOf(NotFoundError);
    await expect(env.client.getPod(env.ns, 'no-such-pod')).rejects.toBeInstanceOf(NotFoundError);
    await expect(env.client.getPvc(env.ns, 'no-such-pvc')).rejects.toBeInstanceOf(NotFoundError);
    await expect(env.client.getDataVolume(env.ns, 'no-such-dv')).rejects.toBeInstanceOf(
      NotFoundError,
    );
    await expect(env.client.getVm(env.ns, 'no-such-vm')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('maps network failures to TransientError with the cause', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const dead = new KubeClient({
      kc: kubeConfigFor(`http://127.0.0.1:${port}`),
      fieldManager: 't',
    });
    const err: unknown = await dead.getVmi(env.ns, 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransientError);
    expect((err as Error).cause).toBeDefined();
    // The plain-JSON calls (pod deletes, Events) map failures the same way.
    const deleteErr: unknown = await dead.deletePod(env.ns, 'x').catch((e: unknown) => e);
    expect(deleteErr).toBeInstanceOf(TransientError);
  });

  it('maps a connection the kernel tore down (read ECONNABORTED) to TransientError', () => {
    // What a request in flight gets when `ss -K` kills its socket (the watch-drop chaos run):
    // Node's http client passes the system error on unwrapped.
    const torn = Object.assign(new Error('read ECONNABORTED'), {
      errno: -103,
      code: 'ECONNABORTED',
      syscall: 'read',
    });
    const mapped = mapKubeError(torn, 'patch virtualmachineinstances ns/vm');
    expect(mapped).toBeInstanceOf(TransientError);
    expect(mapped.cause).toBe(torn);
    // Any failed socket call, whatever its errno.
    const other = Object.assign(new Error('write EPROTO'), { code: 'EPROTO', syscall: 'write' });
    expect(mapKubeError(other, 'get pods ns/p')).toBeInstanceOf(TransientError);
    // Not a socket's: left as it is.
    const local = Object.assign(new Error('open ENOENT'), { code: 'ENOENT', syscall: 'open' });
    expect(mapKubeError(local, 'read kubeconfig')).toBe(local);
  });

  it('creates pods idempotently and lists them by label', async () => {
    const first = await env.client.createPod(
      env.ns,
      podManifest('hp-volume-abcde', { kubevirt: 'x' }),
    );
    expect(first.created).toBe(true);
    const second = await env.client.createPod(
      env.ns,
      podManifest('hp-volume-abcde', { kubevirt: 'x' }),
    );
    expect(second.created).toBe(false);
    expect(second.object.metadata?.uid).toBe(first.object.metadata?.uid);
    const pods = await env.client.listPods(env.ns, 'kubevirt=x');
    expect(pods.map((p) => p.metadata?.name)).toEqual(['hp-volume-abcde']);
    expect(await env.client.listPods(env.ns, 'kubevirt=y')).toEqual([]);
  });

  it('deletes pods: NotFound is fine, a UID precondition protects a namesake', async () => {
    expect(await env.client.deletePod(env.ns, 'never-existed')).toBe(false);
    const { object } = await env.client.createPod(env.ns, podManifest('pod-to-delete'));
    expect(await env.client.deletePod(env.ns, 'pod-to-delete', { uid: 'some-other-uid' })).toBe(
      false,
    );
    expect((await env.client.getPod(env.ns, 'pod-to-delete')).metadata?.uid).toBe(
      object.metadata?.uid,
    );
    expect(
      await env.client.deletePod(env.ns, 'pod-to-delete', { uid: object.metadata!.uid! }),
    ).toBe(true);
    await expect(env.client.getPod(env.ns, 'pod-to-delete')).rejects.toBeInstanceOf(NotFoundError);
    expect(await env.client.deletePod(env.ns, 'pod-to-delete')).toBe(false);
  });

  it('JSON-patches a VMI; a failing test op is a ConflictError; dryRun does not persist', async () => {
    const vmi = await createVmi(env.kc, env.ns, 'patched-vmi');
    const rv = vmi.metadata.resourceVersion;
    const patched = await env.client.patchVmi(env.ns, 'patched-vmi', [
      { op: 'test', path: '/metadata/resourceVersion', value: rv },
      { op: 'add', path: '/metadata/annotations', value: { step: 'one' } },
    ]);
    expect(patched.metadata.annotations).toEqual({ step: 'one' });
    expect(patched.metadata.resourceVersion).not.toBe(rv);

    const stale = env.client.patchVmi(env.ns, 'patched-vmi', [
      { op: 'test', path: '/metadata/resourceVersion', value: rv },
      { op: 'replace', path: '/metadata/annotations/step', value: 'two' },
    ]);
    await expect(stale).rejects.toBeInstanceOf(ConflictError);

    const dry = await env.client.patchVmi(
      env.ns,
      'patched-vmi',
      [{ op: 'replace', path: '/metadata/annotations/step', value: 'dry' }],
      { dryRun: true },
    );
    expect(dry.metadata.annotations?.step).toBe('dry');
    expect((await env.client.getVmi(env.ns, 'patched-vmi')).metadata.annotations?.step).toBe('one');
  });

  it('a patch the schema refuses is a KubeApiError, not a conflict', async () => {
    await createVmi(env.kc, env.ns, 'invalid-patch-vmi');
    const bad = env.client.patchVmi(env.ns, 'invalid-patch-vmi', [
      { op: 'replace', path: '/spec/domain/devices', value: 'not-an-object' },
    ]);
    await expect(bad).rejects.toBeInstanceOf(KubeApiError);
    await expect(bad).rejects.toMatchObject({ code: 422 });
  });

  it('patches the status subresource', async () => {
    await createVmi(env.kc, env.ns, 'status-vmi');
    const out = await env.client.patchVmiStatus(env.ns, 'status-vmi', [
      { op: 'add', path: '/status', value: { volumeStatus: [{ name: 'v1', target: '' }] } },
    ]);
    expect(out.status?.volumeStatus).toEqual([{ name: 'v1', target: '' }]);
    expect((await env.client.getVmi(env.ns, 'status-vmi')).status?.volumeStatus).toHaveLength(1);
  });
});

describe('connection reuse', () => {
  it('sends sequential requests of every client of a KubeConfig over one connection', async () => {
    const { proxy, url } = await CuttableProxy.start(env.sim.url);
    const viaProxy = kubeConfigFor(url);
    try {
      await createVmi(env.kc, env.ns, 'keepalive-vmi');
      const a = new KubeClient({ kc: viaProxy, fieldManager: 'a' });
      const b = new KubeClient({ kc: viaProxy, fieldManager: 'b' });
      for (let i = 0; i < 5; i++) {
        expect((await a.getVmi(env.ns, 'keepalive-vmi')).metadata.name).toBe('keepalive-vmi');
        await expect(b.getPod(env.ns, 'no-such-pod')).rejects.toBeInstanceOf(NotFoundError);
      }
      expect(proxy.accepted).toBe(1);
      // Another KubeConfig has its own pool.
      await new KubeClient({ kc: kubeConfigFor(url), fieldManager: 'c' }).getVmi(
        env.ns,
        'keepalive-vmi',
      );
      expect(proxy.accepted).toBe(2);
    } finally {
      closeKubeConnections(viaProxy);
      await proxy.close();
    }
  });

  it('opens a new connection when the server dropped the idle one', async () => {
    const { proxy, url } = await CuttableProxy.start(env.sim.url);
    const viaProxy = kubeConfigFor(url);
    const c = new KubeClient({ kc: viaProxy, fieldManager: 'c' });
    try {
      await createVmi(env.kc, env.ns, 'dropped-vmi');
      await c.getVmi(env.ns, 'dropped-vmi');
      proxy.cut();
      proxy.heal();
      // The agent sees the reset of its idle socket and does not reuse it.
      await vi.waitFor(async () => {
        expect((await c.getVmi(env.ns, 'dropped-vmi')).metadata.name).toBe('dropped-vmi');
      });
      expect(proxy.accepted).toBeGreaterThanOrEqual(2);
    } finally {
      closeKubeConnections(viaProxy);
      await proxy.close();
    }
  });

  it('closeKubeConnections closes the pooled connections; later requests open new ones', async () => {
    const { proxy, url } = await CuttableProxy.start(env.sim.url);
    const viaProxy = kubeConfigFor(url);
    const informer = createInformer({
      kc: viaProxy,
      resource: Resources.virtualMachineInstances,
      namespace: env.ns,
      logger: memoryLogger().logger,
    });
    try {
      const c = new KubeClient({ kc: viaProxy, fieldManager: 'c' });
      await createVmi(env.kc, env.ns, 'closed-vmi');
      await informer.start();
      await c.getVmi(env.ns, 'closed-vmi');
      const before = proxy.accepted;
      closeKubeConnections(viaProxy);
      await c.getVmi(env.ns, 'closed-vmi');
      expect(proxy.accepted).toBe(before + 1);
    } finally {
      await informer.stop();
      closeKubeConnections(viaProxy);
      await proxy.close();
    }
  });
});

describe('retryOnConflict', () => {
  it('succeeds after a concurrent change by re-reading', async () => {
    await createVmi(env.kc, env.ns, 'contended-vmi');
    const other = new KubeClient({ kc: env.kc, fieldManager: 'someone-else' });
    let attempts = 0;
    await retryOnConflict(async () => {
      attempts++;
      const vmi = await env.client.getVmi(env.ns, 'contended-vmi');
      if (attempts === 1) {
        await other.patchVmi(env.ns, 'contended-vmi', [
          { op: 'add', path: '/metadata/labels/concurrent', value: 'yes' },
        ]);
      }
      await env.client.patchVmi(env.ns, 'contended-vmi', [
        { op: 'test', path: '/metadata/resourceVersion', value: vmi.metadata.resourceVersion },
        { op: 'add', path: '/metadata/labels/mine', value: 'yes' },
      ]);
    });
    expect(attempts).toBe(2);
    const labels = (await env.client.getVmi(env.ns, 'contended-vmi')).metadata.labels;
    expect(labels).toMatchObject({ concurrent: 'yes', mine: 'yes' });
  });

  it('gives up after `steps` conflicts and does not retry other errors', async () => {
    let calls = 0;
    const always = retryOnConflict(
      () => {
        calls++;
        return Promise.reject(new ConflictError('busy'));
      },
      { steps: 3, baseMs: 1 },
    );
    await expect(always).rejects.toBeInstanceOf(ConflictError);
    expect(calls).toBe(3);

    calls = 0;
    const other = retryOnConflict(() => {
      calls++;
      return Promise.reject(new NotFoundError('gone'));
    });
    await expect(other).rejects.toBeInstanceOf(NotFoundError);
    expect(calls).toBe(1);
  });
});
