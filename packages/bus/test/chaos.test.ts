import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { WorkItem } from '@plugline/contracts';
import {
  dropConnections,
  spawnService,
  startNats,
  startNatsCluster,
  tempDir,
  waitFor,
  type NatsServer,
} from '@plugline/testkit';
import { fromPromise } from 'xstate';
import { describe, expect, it } from 'vitest';
import { Publisher, ReplyLostError, runStage, StreamName } from '../src/index.js';
import { backlog, persistedState, provisionedBus, readEvents, sendWork } from './helpers.js';
import { eventType, unitKey, unitMachine, workItem } from './support.js';

const TSX = resolve(import.meta.dirname, '../../../node_modules/.bin/tsx');
const WORKER = resolve(import.meta.dirname, 'fixtures/worker.ts');

function worker(nats: NatsServer, dir: string, id: string, block: boolean) {
  const config = { servers: [nats.url], dir, id, block, leaseTtlMs: 2000 };
  return spawnService(TSX, {
    args: [WORKER, JSON.stringify(config)],
    readyPattern: /READY/,
    readyTimeout: 20_000,
  });
}

/** Far above any test's own timeout: a wait this long fails the test. */
const FOREVER_MS = 600_000;

/** What `request` came to: the error it failed with, or `'replied'`. */
const outcomeOf = (request: Promise<unknown>): Promise<unknown> =>
  request.then(
    () => 'replied',
    (err: unknown) => err,
  );

const countingMachine = (effects: Map<string, number>) =>
  unitMachine.provide({
    actors: {
      apply: fromPromise(({ input }: { input: { item: WorkItem } }) => {
        effects.set(input.item.volume, (effects.get(input.item.volume) ?? 0) + 1);
        return Promise.resolve('ok');
      }),
    },
  });

describe('crash and outage', () => {
  it('a worker killed with SIGKILL mid-effect: another finishes the unit, the result exists once', async () => {
    await using nats = await startNats();
    await using dir = await tempDir();
    const bus = await provisionedBus(nats.url, {
      consumers: [{ stage: 'spec-watcher', ackWaitMs: 1000 }],
    });
    try {
      await using first = await worker(nats, dir.path, 'A', true);
      const item = workItem('vol-killed');
      await sendWork(bus, item);
      await first.waitForOutput(/EFFECT_BLOCKING/);
      first.kill('SIGKILL');
      expect((await first.exited).signal).toBe('SIGKILL');
      expect(await persistedState(bus, unitKey(item))).toBeUndefined();

      await using _second = await worker(nats, dir.path, 'B', false);
      await waitFor(async () => (await persistedState(bus, unitKey(item)))?.value === 'applied', {
        timeout: 20_000,
        interval: 50,
      });
      expect(readFileSync(dir.join('effects.log'), 'utf8')).toBe('start A\nstart B\n');
      expect(readFileSync(dir.join('result-vol-killed'), 'utf8')).toBe('A\n');
      // The fact is published after the snapshot write that shows `applied`: wait for it, then
      // check that it is there once.
      const factsOfUnit = async () =>
        (await readEvents(bus)).filter((e) => e.subject.endsWith('/vol-killed')).map(eventType);
      await waitFor(async () => (await factsOfUnit()).length > 0, { timeout: 10_000 });
      expect(await factsOfUnit()).toEqual(['ready']);
      await waitFor(async () => (await backlog(bus)) === 0);
    } finally {
      await bus.close();
    }
  }, 60_000);

  it('the NATS server restarted mid-run (same store): no work item is lost', async () => {
    await using nats = await startNats();
    const bus = await provisionedBus(nats.url, {}, { apiTimeoutMs: 1000 });
    const effects = new Map<string, number>();
    try {
      await using _stage = await runStage({
        bus,
        stage: 'spec-watcher',
        machine: countingMachine(effects),
        keyOf: unitKey,
        concurrency: 8,
      });
      const items = Array.from({ length: 60 }, (_, i) => workItem(`vol-restart-${i}`));
      const publisher = new Publisher(bus, { retry: { initialDelayMs: 20, maxDelayMs: 250 } });
      for (const item of items.slice(0, 30)) await publisher.publishWork(item);
      await waitFor(() => effects.size >= 10);
      await nats.restart('SIGKILL');
      for (const item of items.slice(30)) await publisher.publishWork(item);
      await waitFor(async () => effects.size === items.length && (await backlog(bus)) === 0, {
        timeout: 30_000,
        interval: 100,
      });
      for (const item of items) {
        expect((await persistedState(bus, unitKey(item)))?.value).toBe('applied');
      }
    } finally {
      await bus.close();
    }
  }, 60_000);

  it('a request whose reply died with the server fails when the connection is back, not at its timeout', async () => {
    await using nats = await startNats();
    const bus = await provisionedBus(nats.url, {}, { apiTimeoutMs: FOREVER_MS });
    try {
      // A stopped server takes the request and never answers it.
      process.kill(nats.pid!, 'SIGSTOP');
      const inFlight = outcomeOf(bus.jsm.streams.info(StreamName.Work));
      await nats.halt('SIGKILL');
      await waitFor(() => !bus.connected());
      // nats.js drops what is written while the connection is down when it comes back.
      const whileDown = outcomeOf(bus.jsm.streams.info(StreamName.Work));
      await nats.start();
      expect(await inFlight).toBeInstanceOf(ReplyLostError);
      expect(await whileDown).toBeInstanceOf(ReplyLostError);
      expect((await bus.jsm.streams.info(StreamName.Work)).config.name).toBe(StreamName.Work);
    } finally {
      await bus.close();
    }
  }, 60_000);

  it('a handling whose reply was lost with the connection runs again at once, not after its backoff', async () => {
    await using nats = await startNats();
    const bus = await provisionedBus(
      nats.url,
      { consumers: [{ stage: 'spec-watcher', ackWaitMs: FOREVER_MS }] },
      { apiTimeoutMs: FOREVER_MS },
    );
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    let runs = 0;
    const machine = unitMachine.provide({
      actors: {
        apply: fromPromise(async () => {
          runs++;
          await gate;
          return 'ok';
        }),
      },
    });
    try {
      await using _stage = await runStage({
        bus,
        stage: 'spec-watcher',
        machine,
        keyOf: unitKey,
        retryBackoff: { initialMs: FOREVER_MS },
      });
      const item = workItem('vol-reply-lost');
      await sendWork(bus, item);
      await waitFor(() => runs === 1);
      // The handling goes on to write its snapshot to a server that takes it and does not answer;
      // then the connection drops (the server keeps running, and its consumer's state). Whether
      // the write lands is the server's; the item is handled again either way.
      process.kill(nats.pid!, 'SIGSTOP');
      openGate();
      await dropConnections(nats.port);
      process.kill(nats.pid!, 'SIGCONT');
      await waitFor(
        async () =>
          (await persistedState(bus, unitKey(item)))?.value === 'applied' &&
          (await backlog(bus)) === 0,
        { timeout: 20_000, interval: 50 },
      );
    } finally {
      await bus.close();
    }
  }, 60_000);

  it('a 3-node cluster losing the stream leader (R3): work continues', async () => {
    await using cluster = await startNatsCluster(3);
    const bus = await provisionedBus(cluster.urls, { replicas: 3 }, { apiTimeoutMs: 2000 });
    const effects = new Map<string, number>();
    try {
      await using _stage = await runStage({
        bus,
        stage: 'spec-watcher',
        machine: countingMachine(effects),
        keyOf: unitKey,
        concurrency: 8,
      });
      const items = Array.from({ length: 40 }, (_, i) => workItem(`vol-cluster-${i}`));
      const publisher = new Publisher(bus, { retry: { initialDelayMs: 20, maxDelayMs: 250 } });
      for (const item of items.slice(0, 20)) await publisher.publishWork(item);
      await waitFor(() => effects.size >= 5);
      const leader = (await bus.jsm.streams.info(StreamName.Work)).cluster?.leader;
      const index = cluster.servers.findIndex((s) => s.name === leader);
      expect(index).toBeGreaterThanOrEqual(0);
      await cluster.stopNode(index);
      for (const item of items.slice(20)) await publisher.publishWork(item);
      await waitFor(async () => effects.size === items.length && (await backlog(bus)) === 0, {
        timeout: 45_000,
        interval: 200,
      });
      expect(existsSync(cluster.servers[index]!.storeDir)).toBe(true);
      for (const item of items) {
        expect((await persistedState(bus, unitKey(item)))?.value).toBe('applied');
      }
    } finally {
      await bus.close();
    }
  }, 90_000);
});
