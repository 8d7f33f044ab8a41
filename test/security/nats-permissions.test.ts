/**
 * deploy/nats/plugline.conf on a real nats-server: each service's user can provision and do its
 * own work (its consumer, its buckets, the subjects it nudges, facts), and is refused the
 * subjects of another stage.
 */
import {
  connectBus,
  durableName,
  provision,
  snapshotBucket,
  StreamName,
  type Bus,
} from '@plugline/bus';
import { Stage, workSubject } from '@plugline/contracts';
import { startNats, tempDir, type NatsServer, type TempDir } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectAs, renderNatsConf, type NatsUser } from './nats-conf.js';
const NODE = 'node-1';

interface User {
  stage: Stage;
  user: NatsUser;
  env: string;
  node?: string;
  /** A stage this user must not nudge. */
  forbidden: { stage: Stage; node: string };
}

const USERS: User[] = [
  {
    stage: Stage.SpecWatcher,
    user: 'spec-watcher',
    env: 'SPEC_WATCHER',
    forbidden: { stage: Stage.SpecWatcher, node: '_' }, // replaced below: spec-watcher may nudge all
  },
  {
    stage: Stage.AttachmentOrchestrator,
    user: 'attachment-orchestrator',
    env: 'ATTACHMENT_ORCHESTRATOR',
    forbidden: { stage: Stage.DomainUpdater, node: NODE },
  },
  {
    stage: Stage.NodeMounter,
    user: `node-mounter-${NODE}`,
    env: 'NODE_MOUNTER',
    node: NODE,
    forbidden: { stage: Stage.SpecWatcher, node: '_' },
  },
  {
    stage: Stage.DomainUpdater,
    user: `domain-updater-${NODE}`,
    env: 'DOMAIN_UPDATER',
    node: NODE,
    forbidden: { stage: Stage.AttachmentOrchestrator, node: '_' },
  },
];

let dir: TempDir;
let nats: NatsServer;
let passwords: ReadonlyMap<NatsUser, string>;
const buses: Bus[] = [];

function item(stage: Stage, node: string, volume: string) {
  return {
    subject: workSubject({ stage, node, namespace: 'ns', vmi: 'vm', volume }),
  };
}

async function as(user: NatsUser): Promise<Bus> {
  const bus = await connectAs(nats.url, user, passwords.get(user)!);
  buses.push(bus);
  return bus;
}

/** Resolves with the permission violation the server reports for `subject`. */
function violation(bus: Bus, fragment: string): Promise<string> {
  return (async () => {
    for await (const s of bus.nc.status()) {
      const text = String((s as { error?: unknown }).error ?? (s as { data?: unknown }).data);
      if (/permission/i.test(text) && text.includes(fragment)) return text;
    }
    return '';
  })();
}

beforeAll(async () => {
  dir = await tempDir('plugline-nats-perm-');
  const conf = await renderNatsConf(dir.path);
  passwords = conf.passwords;
  nats = await startNats({ args: ['-c', conf.path] });
}, 30_000);

afterAll(async () => {
  await Promise.allSettled(buses.map((b) => b.close()));
  await nats?.stop();
  await dir?.remove();
});

describe('NATS permissions per service (deploy/nats/plugline.conf)', () => {
  it('refuses a connection without a valid password', async () => {
    await expect(
      connectBus({
        servers: nats.url,
        user: 'spec-watcher',
        pass: 'wrong',
        maxReconnectAttempts: 0,
      }),
    ).rejects.toThrow(/authorization/i);
  });

  for (const u of USERS) {
    it(`${u.user}: provisions, pulls and acks its own work, uses its buckets, publishes facts`, async () => {
      const bus = await as(u.user);
      await provision(bus, { consumers: [{ stage: u.stage, node: u.node }] });
      const durable = durableName(u.stage, u.node);
      const subject = item(
        u.stage,
        u.node ?? '_',
        `v-${u.env.toLowerCase().replace(/_/g, '-')}`,
      ).subject;
      // An upstream stage (spec-watcher may nudge every stage) puts work on its subject.
      const upstream = u.stage === Stage.SpecWatcher ? bus : await as('spec-watcher');
      await upstream.js.publish(subject, JSON.stringify({ probe: true }));
      const consumer = await bus.js.consumers.get(StreamName.Work, durable);
      const msg = await consumer.next({ expires: 5000 });
      expect(msg?.subject).toBe(subject);
      await msg!.ackAck();
      const kv = await bus.kvm.open(snapshotBucket(u.stage));
      await kv.put('probe', 'x');
      expect((await kv.get('probe'))?.string()).toBe('x');
      await bus.js.publish('plugline.v1.events.ns.vm.v.requested', '{}');
    }, 30_000);

    it(`${u.user}: is refused another stage's work and consumers`, async () => {
      const bus = await as(u.user);
      const others = USERS.filter((o) => o.stage !== u.stage);
      for (const other of others) {
        const theirs = durableName(other.stage, other.node);
        const refused = violation(bus, theirs);
        await expect(
          bus.js.consumers.get(StreamName.Work, theirs).then((c) => c.info()),
        ).rejects.toThrow();
        expect(await refused).toMatch(/permission/i);
        const bucket = snapshotBucket(other.stage);
        const kvRefused = violation(bus, bucket);
        bus.nc.publish(`$KV.${bucket}.probe`, 'x');
        expect(await kvRefused).toMatch(/permission/i);
      }
      if (u.stage !== Stage.SpecWatcher) {
        const f = u.forbidden;
        const subject = item(f.stage, f.node, 'intruder').subject;
        const refused = violation(bus, subject);
        bus.nc.publish(subject, '{}');
        expect(await refused).toMatch(/permission/i);
      }
      const del = violation(bus, 'STREAM.DELETE');
      bus.nc.publish(`$JS.API.STREAM.DELETE.${StreamName.Work}`, '');
      expect(await del).toMatch(/permission/i);
      // By sequence, a get or delete cannot be scoped to a stage's subjects (deploy/nats/README.md).
      for (const op of ['MSG.GET', 'MSG.DELETE']) {
        const bySeq = violation(bus, `STREAM.${op}.${StreamName.Work}`);
        bus.nc.publish(`$JS.API.STREAM.${op}.${StreamName.Work}`, JSON.stringify({ seq: 1 }));
        expect(await bySeq).toMatch(/permission/i);
      }
    }, 30_000);
  }
});
