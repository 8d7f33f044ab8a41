import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  chooseEngine,
  dockerReachable,
  NatsServerNotFoundError,
  spawnService,
  startNats,
  startNatsCluster,
  tempDir,
  waitFor,
  WaitTimeoutError,
} from '../src/index.js';

async function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('data', (chunk: Buffer) => {
      socket.destroy();
      resolve(chunk.toString().startsWith('INFO '));
    });
    socket.once('error', () => resolve(false));
  });
}

async function jsz(monitorUrl: string): Promise<{ config?: { store_dir?: string } }> {
  const res = await fetch(`${monitorUrl}/jsz`);
  return (await res.json()) as { config?: { store_dir?: string } };
}

describe('startNats', () => {
  it('starts JetStream on a random port, restarts on the same store, and cleans up', async () => {
    let storeDir: string;
    let port: number;
    {
      await using nats = await startNats();
      ({ storeDir, port } = nats);
      expect(port).toBeGreaterThan(0);
      expect(port).not.toBe(4222);
      expect(nats.url).toBe(`nats://127.0.0.1:${port}`);
      expect(await accepts(port)).toBe(true);
      expect((await jsz(nats.monitorUrl)).config?.store_dir).toContain(storeDir);

      await nats.restart();
      expect(nats.port).toBe(port);
      expect(await accepts(port)).toBe(true);
      expect(existsSync(storeDir)).toBe(true);
    }
    expect(existsSync(storeDir)).toBe(false);
    expect(await accepts(port)).toBe(false);
  });

  it('names the missing binary clearly', async () => {
    await expect(startNats({ engine: 'process', bin: '/nonexistent/nats-server' })).rejects.toThrow(
      NatsServerNotFoundError,
    );
    await expect(startNats({ engine: 'process', bin: '/nonexistent/nats-server' })).rejects.toThrow(
      /nats-server.*missing/,
    );
  });

  it('decides there is no Docker engine in well under a second and falls back', async () => {
    const started = performance.now();
    const reachable = await dockerReachable(100, '/nonexistent/docker.sock');
    const engine = await chooseEngine('auto');
    const elapsed = performance.now() - started;
    expect(reachable).toBe(false);
    expect(engine).toBe('process');
    expect(elapsed).toBeLessThan(1000);
    // with no binary and no engine, `auto` fails fast with a clear error
    const t0 = performance.now();
    if (!(await dockerReachable())) {
      await expect(chooseEngine('auto', { bin: '/nonexistent/nats-server' })).rejects.toThrow(
        /no nats-server binary found and no Docker engine/,
      );
      expect(performance.now() - t0).toBeLessThan(1000);
    }
  });
});

describe('startNatsCluster', () => {
  it('forms a 3-node JetStream cluster and survives losing a node', async () => {
    await using cluster = await startNatsCluster(3);
    expect(cluster.urls).toHaveLength(3);
    expect(await cluster.metaLeader()).toMatch(/-n\d$/);
    await cluster.stopNode(0);
    expect(await accepts(cluster.servers[0]!.port)).toBe(false);
    await waitFor(cluster.metaLeader, { timeout: 10_000 });
    await cluster.startNode(0);
    await cluster.waitHealthy();
    expect(await accepts(cluster.servers[0]!.port)).toBe(true);
  }, 30_000);
});

describe('helpers', () => {
  it('waitFor polls until a value and times out with the last failure', async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? n : undefined), { interval: 1 })).resolves.toBe(3);
    await expect(
      waitFor(
        () => {
          throw new Error('nope');
        },
        { timeout: 50, interval: 5 },
      ),
    ).rejects.toThrow(WaitTimeoutError);
  });

  it('spawnService captures output and stops the process; tempDir removes itself', async () => {
    let path: string;
    {
      await using dir = await tempDir();
      path = dir.path;
      expect(existsSync(path)).toBe(true);
      await using svc = await spawnService(process.execPath, {
        args: ['-e', 'console.log("ready"); setInterval(() => {}, 1000)'],
        readyPattern: /ready/,
      });
      expect(svc.output()).toContain('ready');
      await svc.stop();
      expect((await svc.exited).signal).toBe('SIGTERM');
    }
    expect(existsSync(path)).toBe(false);
  });
});
