/**
 * The chaos scenarios' workload: VMIs with a pool of PVCs each, and a bounded run of random
 * plug/unplug requests (as `plugctl addvolume` / `removevolume` send them, without waiting),
 * while a disturbance (a kill, a NATS restart, dropped watches) fires at random moments.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  addVolume,
  createPvc,
  ensureNamespace,
  RequestRejectedError,
  startStack,
  type Stack,
  type StackOptions,
} from '@plugline/cli';
import { KubeClient } from '@plugline/kube';
import { startNats, tempDir, type NatsServer, type TempDir } from '@plugline/testkit';
import { removeVolume } from '@plugline/cli';
import { inPrivateMountNamespace } from '../chain/helpers.js';

const run = promisify(execFile);

/**
 * Sizes of the runs. The defaults keep the whole `test/chaos` under 5 minutes on a 2-core machine
 * (it runs in CI); the full size is `PLUGLINE_CHAOS_OPERATIONS=200 PLUGLINE_CHAOS_VMIS=20`.
 */
export const CHAOS = {
  operations: Number(process.env.PLUGLINE_CHAOS_OPERATIONS ?? 60),
  vmis: Number(process.env.PLUGLINE_CHAOS_VMIS ?? 8),
  /** Requests in flight at once. */
  parallel: Number(process.env.PLUGLINE_CHAOS_PARALLEL ?? 4),
} as const;

/** Short timers so a crashed worker's messages and leases come back within seconds. */
export const CHAOS_SERVICE_ENV: Readonly<Record<string, string>> = {
  PLUGLINE_ACK_WAIT_MS: '4000',
  PLUGLINE_LEASE_TTL_MS: '3000',
  PLUGLINE_RESYNC_PERIOD_MS: '8000',
  PLUGLINE_SIM_DETACH_DELAY_MS: '20',
};

export interface ChaosFixture {
  stack: Stack;
  nats: NatsServer | undefined;
  monitorUrl: string;
  client: KubeClient;
  dir: TempDir;
  stop(): Promise<void>;
}

/** A stack on a NATS server the test controls (to restart it), or on `natsUrl`. */
export async function startChaosStack(
  options: Partial<StackOptions> & { monitorUrl?: string } = {},
): Promise<ChaosFixture> {
  if (!inPrivateMountNamespace()) {
    throw new Error('chaos tests mount volumes: run them through scripts/with-private-mounts');
  }
  const dir = await tempDir('plugline-chaos-');
  let nats: NatsServer | undefined;
  try {
    if (options.natsUrl === undefined) nats = await startNats();
    const stack = await startStack({
      dir: dir.path,
      demo: false,
      readyTimeoutMs: 90_000,
      natsUrl: nats?.url,
      ...options,
      serviceEnv: { ...CHAOS_SERVICE_ENV, ...options.serviceEnv },
    });
    const client = new KubeClient({ kc: stack.kc, fieldManager: 'chaos-test' });
    return {
      stack,
      nats,
      monitorUrl: options.monitorUrl ?? nats?.monitorUrl ?? '',
      client,
      dir,
      stop: async () => {
        await stack.stop();
        await nats?.stop();
        await dir.remove();
      },
    };
  } catch (err) {
    await nats?.stop();
    await dir.remove();
    throw err;
  }
}

export interface Vm {
  namespace: string;
  name: string;
  claims: string[];
}

/** `count` running VMIs in `namespace`, each with `perVmi` PVCs (every third one a block PVC). */
export async function seedVmis(
  f: ChaosFixture,
  namespace: string,
  count: number,
  perVmi = 3,
): Promise<Vm[]> {
  await ensureNamespace(f.stack.kc, namespace);
  const vms: Vm[] = [];
  for (let i = 0; i < count; i++) {
    const name = `vm-${i}`;
    await f.stack.createVmi({ namespace, name, node: f.stack.nodes[i % f.stack.nodes.length] });
    const claims: string[] = [];
    for (let j = 0; j < perVmi; j++) {
      const claim = `${name}-d${j}`;
      const mode = (i * perVmi + j) % 6 === 5 ? 'Block' : 'Filesystem';
      await createPvc(f.stack.kc, { namespace, name: claim, mode, size: '16Mi' });
      claims.push(claim);
    }
    vms.push({ namespace, name, claims });
  }
  return vms;
}

export interface RunCounts {
  operations: number;
  plugs: number;
  unplugs: number;
  /** Requests the API refused (e.g. an unplug of a volume still being plugged). */
  rejected: number;
}

/**
 * `operations` random requests across `vms`, `parallel` at a time; each picks a VMI and plugs a
 * claim it does not have, or unplugs one it has. Returns when all were sent.
 */
export async function randomOperations(
  f: ChaosFixture,
  vms: readonly Vm[],
  operations: number,
  parallel: number,
  random: () => number,
): Promise<RunCounts> {
  const counts: RunCounts = { operations: 0, plugs: 0, unplugs: 0, rejected: 0 };
  let next = 0;
  const busy = new Set<string>();
  const worker = async (): Promise<void> => {
    while (next < operations) {
      next++;
      const vm = vms[Math.floor(random() * vms.length)]!;
      if (busy.has(vm.name)) {
        next--;
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      busy.add(vm.name);
      try {
        const vmi = await f.client.getVmi(vm.namespace, vm.name);
        const inSpec = new Set((vmi.spec.volumes ?? []).map((v) => v.name));
        const claim = vm.claims[Math.floor(random() * vm.claims.length)]!;
        counts.operations++;
        if (inSpec.has(claim)) {
          counts.unplugs++;
          await removeVolume(f.client, {
            namespace: vm.namespace,
            vmi: vm.name,
            volumeName: claim,
          });
        } else {
          counts.plugs++;
          await addVolume(f.client, {
            namespace: vm.namespace,
            vmi: vm.name,
            flags: { volumeName: claim, bus: random() < 0.3 ? 'virtio' : 'scsi' },
          });
        }
      } catch (err) {
        if (!(err instanceof RequestRejectedError)) throw err;
        counts.rejected++;
      } finally {
        busy.delete(vm.name);
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, () => worker()));
  return counts;
}

/**
 * Calls `disturb` at random moments (every `minMs`..`maxMs`) until `until` settles, and then (the
 * requests are sent faster than the stack handles them) right away until it was called at least
 * `minimum` times, so that every run is disturbed while work is in flight.
 */
export async function disturbUntil(
  until: Promise<unknown>,
  pace: { minMs: number; maxMs: number; random: () => number; minimum?: number },
  disturb: () => Promise<void>,
): Promise<number> {
  const { minMs, maxMs, random, minimum = 1 } = pace;
  let done = false;
  void until.finally(() => (done = true)).catch(() => undefined);
  let count = 0;
  while (!done) {
    const wait = minMs + random() * (maxMs - minMs);
    await Promise.race([new Promise((r) => setTimeout(r, wait)), until.catch(() => undefined)]);
    if (done) break;
    await disturb();
    count++;
  }
  await until;
  while (count < minimum) {
    await disturb();
    count++;
  }
  return count;
}

/** Closes every TCP connection to `port` on loopback (watch streams included), from outside. */
export async function dropConnections(port: number): Promise<void> {
  await run('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', String(port)]);
}

/** A small seeded PRNG (mulberry32) so a failing run can be replayed with its seed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface StreamCounts {
  redelivered: number;
  deadLetters: number;
}

/** Redeliveries of the work consumers and messages in the dead-letter stream (`/jsz`). */
export async function streamCounts(monitorUrl: string): Promise<StreamCounts> {
  const res = await fetch(`${monitorUrl}/jsz?streams=true&consumers=true`);
  const jsz = (await res.json()) as {
    account_details?: {
      stream_detail?: {
        name: string;
        state: { messages: number };
        consumer_detail?: { num_redelivered: number }[];
      }[];
    }[];
  };
  let redelivered = 0;
  let deadLetters = 0;
  for (const a of jsz.account_details ?? []) {
    for (const s of a.stream_detail ?? []) {
      if (s.name === 'PLUGLINE_WORK') {
        for (const c of s.consumer_detail ?? []) redelivered += c.num_redelivered;
      }
      if (s.name === 'PLUGLINE_DLQ') deadLetters += s.state.messages;
    }
  }
  return { redelivered, deadLetters };
}

/** Sum of a counter's samples in a Prometheus text exposition. */
export function counterSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return sum;
}

/** Redeliveries and dead letters counted by the services (a killed one's counts are gone). */
export class ServiceTally {
  redeliveries = 0;
  deadLetters = 0;
  /** Adds one service's counters (call before killing it, and for every service at the end). */
  async add(healthUrl: string): Promise<void> {
    try {
      const res = await fetch(`${healthUrl}/metrics`, { signal: AbortSignal.timeout(2000) });
      const text = await res.text();
      this.redeliveries += counterSum(text, 'plugline_redeliveries_total');
      this.deadLetters += counterSum(text, 'plugline_dead_letters_total');
    } catch {
      // a service that does not answer has nothing to add
    }
  }
}
