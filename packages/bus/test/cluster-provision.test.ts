// Provisioning on a fresh 3-node nats-server cluster: R3 everywhere, four services at once.
import { Stage } from '@plugline/contracts';
import { startNatsCluster } from '@plugline/testkit';
import { describe, expect, it } from 'vitest';
import {
  connectBus,
  ensureStageBuckets,
  provision,
  snapshotBucket,
  leaseBucket,
  StreamName,
  type Bus,
  type ConsumerOptions,
} from '../src/index.js';

const SERVICES: readonly ConsumerOptions[] = [
  { stage: Stage.SpecWatcher },
  { stage: Stage.AttachmentOrchestrator },
  { stage: Stage.NodeMounter, node: 'node-1' },
  { stage: Stage.DomainUpdater, node: 'node-1' },
];

describe('provisioning on a cluster', () => {
  it('four services provisioning R3 at once on a fresh cluster all succeed, idempotently', async () => {
    await using cluster = await startNatsCluster(3);
    // Each service has the default 5 s API timeout on its own connection, as in production.
    const buses: Bus[] = await Promise.all(
      SERVICES.map((_, i) => connectBus({ servers: cluster.urls, name: `svc-${i}` })),
    );
    try {
      await Promise.all(
        SERVICES.map((consumer, i) => provision(buses[i]!, { replicas: 3, consumers: [consumer] })),
      );
      const bus = buses[0]!;
      for (const name of Object.values(StreamName)) {
        expect((await bus.jsm.streams.info(name)).config.num_replicas).toBe(3);
      }
      for (const { stage } of SERVICES) {
        for (const bucket of [snapshotBucket(stage), leaseBucket(stage)]) {
          const info = await bus.jsm.streams.info(`KV_${bucket}`);
          expect(info.config.num_replicas).toBe(3);
          expect(info.config.allow_direct).toBe(false);
        }
      }
      const before = await bus.jsm.streams.info(StreamName.Work);
      // Again, as a restarted service does: nothing is changed.
      await Promise.all(
        SERVICES.map((consumer, i) => provision(buses[i]!, { replicas: 3, consumers: [consumer] })),
      );
      const after = await bus.jsm.streams.info(StreamName.Work);
      expect(after.created).toBe(before.created);
      expect(after.config).toEqual(before.config);
      // A stage opening its buckets without a replica count follows the work stream's.
      const buckets = await ensureStageBuckets(bus, Stage.SpecWatcher);
      await buckets.leases.put('k', new TextEncoder().encode('v'));
      expect((await buckets.leases.get('k'))?.string()).toBe('v');
    } finally {
      await Promise.all(buses.map((b) => b.close()));
    }
  }, 120_000);
});
