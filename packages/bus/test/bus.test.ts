import { Stage, buildEvent, type VolumeEvent } from '@plugline/contracts';
import { startNats, type NatsServer } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BusClosedError,
  checkConsumerConfig,
  checkStreamConfig,
  connectBus,
  durableName,
  Publisher,
  provision,
  requireFeatures,
  ServerFeature,
  StreamName,
  supportsFeature,
  UnsupportedFeatureError,
  type Bus,
  type RawPublish,
} from '../src/index.js';
import { eventMessage } from '../src/publish.js';
import { readEvents } from './helpers.js';

let nats: NatsServer;
let bus: Bus;

beforeAll(async () => {
  nats = await startNats();
  bus = await connectBus({ servers: nats.url, apiTimeoutMs: 1000 });
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

function readyEvent(volume: string): VolumeEvent {
  return buildEvent({
    namespace: 'ns1',
    vmi: 'vm1',
    volume,
    type: 'ready',
    stage: Stage.DomainUpdater,
    id: `id-${volume}`,
    data: { operationId: 'op1', operation: 'plug', vmiUID: 'uid1', target: 'sda', phase: 'Ready' },
  });
}

describe('server version detection', () => {
  it('reads 2.9 from the server and refuses newer features loudly', () => {
    expect(bus.serverVersion).toMatchObject({ major: 2, minor: 9 });
    expect(() => bus.requireFeatures(ServerFeature.PerMessageTtl)).toThrow(UnsupportedFeatureError);
    expect(() => bus.requireFeatures(ServerFeature.MultipleFilterSubjects)).toThrow(
      /multiple-filter-subjects needs nats-server 2.10.0 or newer; the server is 2.9/,
    );
    expect(() =>
      requireFeatures('2.11.1', ServerFeature.KvPerKeyTtl, ServerFeature.Compression),
    ).not.toThrow();
    expect(supportsFeature('2.10.3', ServerFeature.PerMessageTtl)).toBe(false);
    expect(supportsFeature('v2.10.0', ServerFeature.TermReason)).toBe(true);
    // options 2.9 would silently ignore are refused before they reach the server
    expect(() => checkStreamConfig(bus.serverVersion, { name: 'X', allow_msg_ttl: true })).toThrow(
      /per-message-ttl needs nats-server 2.11.0/,
    );
    expect(() => checkConsumerConfig(bus.serverVersion, { filter_subjects: ['a', 'b'] })).toThrow(
      UnsupportedFeatureError,
    );
    expect(() =>
      checkStreamConfig(bus.serverVersion, { name: 'X', compression: 'none' }),
    ).not.toThrow();
  });
});

describe('provision', () => {
  it('creates streams, consumers and buckets idempotently with the given settings', async () => {
    const options = {
      eventsMaxAgeMs: 3_600_000,
      duplicateWindowMs: 30_000,
      consumers: [
        {
          stage: Stage.SpecWatcher,
          ackWaitMs: 2000,
          maxAckPending: 64,
          backoffMs: [100, 1000],
          maxDeliver: 10,
        },
        { stage: Stage.NodeMounter, node: 'worker-1.example' },
        { stage: Stage.NodeMounter, node: 'worker-2' },
      ],
    };
    await provision(bus, options);
    await provision(bus, { ...options, eventsMaxAgeMs: 7_200_000 });
    const work = await bus.jsm.streams.info(StreamName.Work);
    expect(work.config).toMatchObject({
      retention: 'workqueue',
      subjects: ['plugline.v1.work.>'],
      duplicate_window: 30_000 * 1e6,
      num_replicas: 1,
    });
    const events = await bus.jsm.streams.info(StreamName.Events);
    expect(events.config).toMatchObject({ retention: 'limits', max_age: 7_200_000 * 1e6 });
    expect((await bus.jsm.streams.info(StreamName.DeadLetters)).config.subjects).toEqual([
      'plugline.v1.dlq.>',
    ]);
    const sw = await bus.jsm.consumers.info(StreamName.Work, 'spec-watcher');
    expect(sw.config).toMatchObject({
      filter_subject: 'plugline.v1.work.spec-watcher.*.>',
      ack_wait: 100 * 1e6, // JetStream replaces ack_wait by the first backoff step
      max_ack_pending: 64,
      backoff: [100 * 1e6, 1000 * 1e6],
    });
    const name = durableName(Stage.NodeMounter, 'worker-1.example');
    expect(name).toBe('node-mounter-worker-1_2eexample');
    const nm = await bus.jsm.consumers.info(StreamName.Work, name);
    expect(nm.config.filter_subject).toBe('plugline.v1.work.node-mounter.worker-1_2eexample.>');
    const buckets = [];
    for await (const s of bus.kvm.list()) buckets.push(s.bucket);
    expect(buckets.sort()).toEqual([
      'plugline-node-mounter',
      'plugline-node-mounter-leases',
      'plugline-spec-watcher',
      'plugline-spec-watcher-leases',
    ]);
    expect(() => durableName(Stage.DomainUpdater)).toThrow(/runs per node/);
    await expect(
      provision(bus, { consumers: [{ stage: Stage.SpecWatcher, backoffMs: [100, 200] }] }),
    ).rejects.toThrow(/maxDeliver: must be greater than the 2 backoff steps/);
  });
});

describe('provision by several services at once', () => {
  it('every service starting together on a fresh server gets the same streams and buckets', async () => {
    const fresh = await startNats();
    const services = await Promise.all(
      Array.from({ length: 6 }, () => connectBus({ servers: fresh.url, apiTimeoutMs: 2000 })),
    );
    try {
      // Rounds on an empty server: the streams' creators race each time.
      for (let round = 0; round < 60; round++) {
        for (const name of Object.values(StreamName)) {
          await services[0]!.jsm.streams.delete(name).catch(() => false);
        }
        await Promise.all(
          services.map((service) =>
            provision(service, { consumers: [{ stage: Stage.SpecWatcher }] }),
          ),
        );
        const streams = [];
        for await (const info of services[0]!.jsm.streams.list()) streams.push(info.config.name);
        expect(streams.filter((n) => !n.startsWith('KV_')).sort()).toEqual(
          Object.values(StreamName).sort(),
        );
      }
    } finally {
      await Promise.all(services.map((service) => service.close()));
      await fresh.stop();
    }
    // 60 rounds take 2-3 s alone, more beside other tests: a correctness test, not a timing one.
  }, 30_000);
});

describe('Publisher', () => {
  it('sets Nats-Msg-Id so a retried publish is stored once', async () => {
    await provision(bus);
    const publisher = new Publisher(bus);
    const first = await publisher.publishEvent(readyEvent('vol-dedup'));
    const second = await publisher.publishEvent(readyEvent('vol-dedup'));
    expect(first.duplicate).toBe(false);
    expect(second.duplicate).toBe(true);
    const stored = await bus.jsm.streams.getMessage(StreamName.Events, { seq: first.seq });
    expect(stored!.subject).toBe('plugline.v1.events.ns1.vm1.vol-dedup.ready');
    expect(stored!.header.get('Nats-Msg-Id')).toBe('uid1:vol-dedup:op1:ready:sda');
  });

  it('stores a volume announced again on the pod that replaced its first one (same operation)', async () => {
    await provision(bus);
    const publisher = new Publisher(bus);
    const announced = (uid: string, id: string): VolumeEvent =>
      buildEvent({
        namespace: 'ns1',
        vmi: 'vm1',
        volume: 'vol-repointed',
        type: 'attached-to-node',
        stage: Stage.AttachmentOrchestrator,
        id,
        data: {
          operationId: 'op1',
          operation: 'plug',
          vmiUID: 'uid1',
          node: 'node-1',
          attachPod: { name: `hp-${uid}`, uid },
          phase: 'AttachedToNode',
        },
      });
    expect((await publisher.publishEvent(announced('pod-first', 'a'))).duplicate).toBe(false);
    // Its retry is dropped; the announcement on the replacement pod is not.
    expect((await publisher.publishEvent(announced('pod-first', 'b'))).duplicate).toBe(true);
    expect((await publisher.publishEvent(announced('pod-second', 'c'))).duplicate).toBe(false);
  });

  it('retries until the restarted server acknowledges, and gives up only on shutdown', async () => {
    await provision(bus);
    const publisher = new Publisher(bus, { retry: { initialDelayMs: 20, maxDelayMs: 200 } });
    await nats.halt('SIGTERM');
    const pending = publisher.publishEvent(readyEvent('vol-outage'));
    await nats.start();
    const ack = await pending;
    expect(ack.stream).toBe(StreamName.Events);
    const stopped = AbortSignal.abort();
    await expect(publisher.publishEvent(readyEvent('vol-never'), stopped)).rejects.toThrow(
      BusClosedError,
    );
  }, 20_000);

  it('publishes a batch in its order, each once, also across a server restart', async () => {
    await provision(bus);
    const publisher = new Publisher(bus, { retry: { initialDelayMs: 20, maxDelayMs: 200 } });
    const batch = (name: string): { message: RawPublish; kind: 'event' }[] =>
      [0, 1, 2, 3, 4].map((i) => ({
        message: eventMessage(readyEvent(`${name}-${i}`)),
        kind: 'event',
      }));
    await publisher.publishInOrder(batch('vol-batch'));
    await nats.halt('SIGTERM');
    const pending = publisher.publishInOrder(batch('vol-restart'));
    await nats.start();
    await pending;
    await publisher.publishInOrder(batch('vol-restart')); // a replay of the outbox: duplicates
    const volumes = (await readEvents(bus))
      .map((e) => e.subject.split('/')[2]!)
      .filter((v) => v.startsWith('vol-batch-') || v.startsWith('vol-restart-'));
    expect(volumes).toEqual([
      ...[0, 1, 2, 3, 4].map((i) => `vol-batch-${i}`),
      ...[0, 1, 2, 3, 4].map((i) => `vol-restart-${i}`),
    ]);
  }, 30_000);
});
