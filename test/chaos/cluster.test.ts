/**
 * Chaos on a 3-node NATS cluster: the streams and buckets are R3, the services get all three
 * URLs, and the node leading the work stream is killed (SIGKILL) mid-run and started again on its
 * store. The run ends with Plugline's invariants holding (test/support/invariants.ts) and the
 * work stream and its consumers empty as their leaders report them; what each node's replica
 * still shows after that is printed with the figures (nats-server 2.9.10 can leave a restarted
 * node's replica holding items its leader removed).
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  connectBus,
  doneUpTo,
  provision,
  StreamName,
  subjectMatches,
  type Bus,
} from '@plugline/bus';
import { Stage } from '@plugline/contracts';
import { ensureProjectorConsumer } from '@plugline/spec-watcher';
import { startNatsCluster, waitFor, type NatsCluster } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, loopDevicesUnder, mountsUnder } from '../chain/helpers.js';
import { workBacklog } from '../support/invariants.js';
import {
  CHAOS,
  CHAOS_SERVICE_ENV,
  disturbUntil,
  randomOperations,
  seedVmis,
  seeded,
  ScenarioReport,
  ServiceTally,
  settle,
  startChaosStack,
  type ChaosFixture,
} from './workload.js';

const SEED = Number(process.env.PLUGLINE_CHAOS_SEED ?? Date.now() % 100_000);
const random = seeded(SEED);
const REPLICAS = 3;
const NODES = ['node-1'];
/** The work run: sized so that the scenario takes well under two minutes here. */
const RUN = {
  operations: Math.round(CHAOS.operations / 2),
  vmis: Math.max(3, Math.round(CHAOS.vmis / 2)),
  parallel: Math.min(3, CHAOS.parallel),
};

let cluster: NatsCluster | undefined;
let admin: Bus | undefined;
let f: ChaosFixture | undefined;
let dir = '';
const tally = new ServiceTally();

/** Streams, consumers and buckets, provisioned once before the services start (no race). */
async function provisionOnce(bus: Bus): Promise<void> {
  const ackWaitMs = Number(CHAOS_SERVICE_ENV.PLUGLINE_ACK_WAIT_MS);
  await provision(bus, {
    replicas: REPLICAS,
    consumers: [
      { stage: Stage.SpecWatcher, ackWaitMs },
      { stage: Stage.AttachmentOrchestrator, ackWaitMs },
      ...NODES.flatMap((node) => [
        { stage: Stage.NodeMounter, node, ackWaitMs },
        { stage: Stage.DomainUpdater, node, ackWaitMs },
      ]),
    ],
  });
  await ensureProjectorConsumer(bus, { ackWaitMs });
}

/** Index of the node leading `stream` (by server name). */
async function leaderOf(c: NatsCluster, bus: Bus, stream: string): Promise<number> {
  const info = await bus.jsm.streams.info(stream);
  const i = c.servers.findIndex((s) => s.name === info.cluster?.leader);
  if (i < 0) throw new Error(`no leader of ${stream} among the nodes: ${info.cluster?.leader}`);
  return i;
}

/** The work stream and its consumers, as their leaders answer: empty when all work is done. */
async function leaderBacklog(bus: Bus): Promise<string[]> {
  const out: string[] = [];
  const info = await bus.jsm.streams.info(StreamName.Work);
  if (info.state.messages > 0) out.push(`work stream holds ${info.state.messages} message(s)`);
  for await (const c of bus.jsm.consumers.list(StreamName.Work)) {
    if (c.num_pending + c.num_ack_pending > 0) {
      out.push(`${c.name}: ${c.num_pending} pending, ${c.num_ack_pending} unacknowledged`);
    }
  }
  return out;
}

/**
 * What the work stream's leader holds, item by item (sequence, subject, and whether the consumer
 * whose filter takes it is done with it), each consumer's position, and the per-subject counts:
 * told apart, work a stage still owes (its consumer is not done with it, or no filter takes it)
 * and an item the server kept after its consumer was done with it (nats-server 2.9).
 */
async function describeLeaderItems(bus: Bus): Promise<string> {
  const info = await bus.jsm.streams.info(StreamName.Work);
  const consumers: { name: string; filter: string; doneTo: number; position: string }[] = [];
  for await (const c of bus.jsm.consumers.list(StreamName.Work)) {
    consumers.push({
      name: c.name,
      filter: c.config.filter_subject ?? '',
      doneTo: doneUpTo(c),
      // Pulls waiting and the leader: the stuck-work watch acts only while a pull waits.
      position: `floor ${c.ack_floor.stream_seq} delivered ${c.delivered.stream_seq} outstanding ${c.num_pending + c.num_ack_pending} pulls waiting ${c.num_waiting} leader ${c.cluster?.leader ?? '?'}`,
    });
  }
  const items: string[] = [];
  const { first_seq: first, last_seq: last } = info.state;
  for (let seq = first; seq <= last && items.length < 10; seq++) {
    const m = await bus.jsm.streams.getMessage(StreamName.Work, { seq }).catch(() => null);
    if (m === null) continue;
    const owner = consumers.find((c) => subjectMatches(c.filter, m.subject));
    const where =
      owner === undefined
        ? 'in no consumer filter'
        : `${owner.name} ${seq <= owner.doneTo ? 'is done with it' : 'is not done with it'}`;
    items.push(`#${seq} ${m.subject} (${where})`);
  }
  const positions = consumers.map((c) => `${c.name} ${c.position}`);
  // The per-subject counts are what the consumers and the reaper go by.
  const bySubject = await bus.jsm.streams.info(StreamName.Work, { subjects_filter: '>' });
  return `items ${items.join(', ')}; consumers ${positions.join(', ')}; subject counts ${JSON.stringify(bySubject.state.subjects ?? {})}`;
}

/**
 * The services' `warn` and `error` lines about their consumers and the work queue (repairs,
 * stalls, items held here), the last `max` of them: with the leaders' view, what the stages made
 * of it.
 */
async function workQueueWarnings(logDir: string, max = 15): Promise<string[]> {
  const lines: string[] = [];
  for (const file of (await readdir(logDir)).filter((f) => f.endsWith('.log')).sort()) {
    for (const line of (await readFile(join(logDir, file), 'utf8')).split('\n')) {
      if (!/work queue|work items|ack floor|consumer/i.test(line)) continue;
      try {
        const entry = JSON.parse(line) as { level?: number; msg?: string; time?: string };
        if ((entry.level ?? 0) >= 40) lines.push(`${file} ${entry.time ?? ''} ${entry.msg ?? ''}`);
      } catch {
        // not a JSON line (a process's own output)
      }
    }
  }
  return lines.slice(-max);
}

/**
 * Each node's own replica of the work stream and its consumers, as its monitoring endpoint shows
 * it (a consumer delivers from its leader's replica of the stream): the last sequence it holds,
 * and per consumer what it delivered and counts pending, and who leads it.
 */
async function nodeViews(c: NatsCluster): Promise<string[]> {
  interface Jsz {
    account_details?: {
      stream_detail?: {
        name: string;
        cluster?: { leader?: string };
        state: { messages: number; last_seq: number };
        consumer_detail?: {
          name: string;
          cluster?: { leader?: string };
          delivered: { stream_seq: number };
          num_pending: number;
          num_ack_pending: number;
          num_waiting: number;
        }[];
      }[];
    }[];
  }
  return Promise.all(
    c.servers.map(async (server, i) => {
      try {
        const res = await fetch(`${server.monitorUrl}/jsz?streams=true&consumers=true`, {
          signal: AbortSignal.timeout(3000),
        });
        const jsz = (await res.json()) as Jsz;
        const work = jsz.account_details
          ?.flatMap((a) => a.stream_detail ?? [])
          .find((st) => st.name === StreamName.Work);
        if (work === undefined) return `node ${i} (${server.name}): no replica of the work stream`;
        const consumers = (work.consumer_detail ?? []).map(
          (k) =>
            `${k.name} delivered ${k.delivered.stream_seq} pending ${k.num_pending} unacknowledged ${k.num_ack_pending} waiting ${k.num_waiting} leader ${k.cluster?.leader ?? '?'}`,
        );
        return `node ${i} (${server.name}): stream last ${work.state.last_seq}, ${work.state.messages} message(s), leader ${work.cluster?.leader ?? '?'}; ${consumers.join(', ')}`;
      } catch (err) {
        return `node ${i} (${server.name}): ${String(err)}`;
      }
    }),
  );
}

/** Per node whose replica of the work stream still holds items after 30 s: what it shows. */
async function replicaLeftovers(c: NatsCluster): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const [i, server] of c.servers.entries()) {
    let shown: string[] = [];
    const empty = await waitFor(
      async () => {
        shown = await workBacklog(server.monitorUrl);
        return shown.length === 0;
      },
      { timeout: 30_000, interval: 250, description: `node ${i}'s replica to empty` },
    ).catch(() => false);
    if (!empty) out[`node-${i}`] = shown;
  }
  return out;
}

beforeAll(async () => {
  if (!isRoot) return;
  const started = Date.now();
  cluster = await startNatsCluster(3);
  const clusterMs = Date.now() - started;
  admin = await connectBus({ servers: cluster.urls, apiTimeoutMs: 30_000 });
  await provisionOnce(admin);
  const provisionMs = Date.now() - started - clusterMs;
  f = await startChaosStack({
    natsUrl: cluster.urls.join(','),
    monitorUrl: cluster.servers[0]!.monitorUrl,
    nodes: NODES,
    serviceEnv: { PLUGLINE_STREAM_REPLICAS: String(REPLICAS) },
  });
  dir = f.stack.dir;
  console.log(
    `[chaos] cluster setup ${JSON.stringify({ clusterMs, provisionMs, setupMs: Date.now() - started })}`,
  );
}, 240_000);

afterAll(async () => {
  await f?.stop();
  await admin?.close();
  await cluster?.stop();
  if (dir !== '') {
    expect(loopDevicesUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }
}, 120_000);

describe.skipIf(!isRoot)('chaos on a NATS cluster', () => {
  it(`a 3-node cluster with R3 streams loses the work stream's leader mid-run and gets it back`, async () => {
    const c = cluster!;
    const fx = f!;
    const bus = admin!;
    const r = await new ScenarioReport('cluster', SEED, fx, tally).begin();
    const figures: Record<string, unknown> = {};
    let passed = false;
    try {
      const work = await bus.jsm.streams.info(StreamName.Work);
      expect(work.config.num_replicas).toBe(REPLICAS);

      const vms = await seedVmis(fx, 'chaos-cluster', RUN.vmis);
      const ops = randomOperations(fx, vms, RUN.operations, RUN.parallel, random);
      let victim: number | undefined;
      let downAt = 0;
      const pace = { minMs: 2000, maxMs: 4000, random, minimum: 2 };
      await disturbUntil(ops, pace, async () => {
        if (victim === undefined) {
          victim = await leaderOf(c, bus, StreamName.Work);
          figures.stoppedNode = victim;
          downAt = Date.now();
          await c.stopNode(victim, 'SIGKILL');
        } else if (!c.servers[victim]!.running()) {
          await c.startNode(victim);
          await c.waitHealthy();
          figures.nodeDownMs = Date.now() - downAt;
        }
      });
      Object.assign(figures, await ops);
      r.sent();
      expect(victim).toBeDefined();
      expect(c.servers.every((s) => s.running())).toBe(true);

      // Plugline's state (volumes, pods, mounts, domains), then the work stream as its leaders
      // answer: what the stages consume.
      const inv = await settle(fx, { natsMonitorUrl: '', timeoutMs: 180_000 });
      figures.readyVolumes = inv.readyVolumes;
      let backlog: string[] = [];
      await waitFor(
        async () => {
          backlog = await leaderBacklog(bus);
          return backlog.length === 0;
        },
        { timeout: 180_000, interval: 250, description: 'an empty work stream (leaders)' },
      ).catch(async (err: unknown) => {
        const held = await describeLeaderItems(bus).catch((e: unknown) => String(e));
        const warnings = await workQueueWarnings(join(dir, 'logs')).catch((e: unknown) => [
          String(e),
        ]);
        const nodes = await nodeViews(c);
        throw new Error(
          `the work stream's leaders still report: ${backlog.join('; ')}; ${held}; the nodes show: ${nodes.join(' | ')}; the services said: ${warnings.join(' | ') || 'nothing at warn about it'}`,
          { cause: err },
        );
      });
      // Each node's replica, as its monitoring endpoint shows it. A node that was stopped can
      // keep, on nats-server 2.9.10, work items its leader removed (seen: the restarted node's
      // replica held 1-2 items and counted them pending for minutes while the leader and the
      // stages' stall watch saw none). That is the server's replica, not work left undone:
      // reported with the figures, not failed.
      figures.replicaLeftovers = await replicaLeftovers(c);
      expect(figures.operations).toBe(RUN.operations);
      expect(fx.stack.services.every((s) => s.running())).toBe(true);
      passed = true;
    } finally {
      await r.print(figures, passed);
    }
  }, 420_000);
});
