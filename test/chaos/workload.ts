/**
 * The chaos scenarios' workload: VMIs with a pool of PVCs each, and a bounded run of random
 * plug/unplug requests (as `plugctl addvolume` / `removevolume` send them, without waiting),
 * while a disturbance (a kill, a NATS restart, dropped watches) fires at random moments.
 */
import { cp } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import {
  addVolume,
  openEventStream,
  createPvc,
  ensureNamespace,
  RequestRejectedError,
  startStack,
  type Stack,
  type StackOptions,
} from '@plugline/cli';
import { connectBus, kvKey, StreamName, subjectMatches } from '@plugline/bus';
import { decodeWorkItem, eventTypeOf, Stage, TransientError } from '@plugline/contracts';
import { KubeClient } from '@plugline/kube';
import { startNats, tempDir, waitFor, type NatsServer, type TempDir } from '@plugline/testkit';
import { removeVolume } from '@plugline/cli';
import { inPrivateMountNamespace } from '../chain/helpers.js';
import { checkInvariants, waitForInvariants, type InvariantReport } from '../support/invariants.js';

/**
 * Sizes of the runs: the issue's (200 operations across 20 VMIs for the kill scenario; the other
 * scenarios derive theirs). The kill scenario takes 70-80 s on a 2-core machine with its 10 kills.
 * `PLUGLINE_CHAOS_OPERATIONS` / `PLUGLINE_CHAOS_VMIS` make every run smaller or larger.
 */
export const CHAOS = {
  operations: Number(process.env.PLUGLINE_CHAOS_OPERATIONS ?? 200),
  vmis: Number(process.env.PLUGLINE_CHAOS_VMIS ?? 20),
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
      // e.g. `debug` to see every unit's decisions in the kept logs (PLUGLINE_CHAOS_KEEP_LOGS)
      logLevel: process.env.PLUGLINE_CHAOS_LOG_LEVEL ?? 'info',
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
        await keepLogs(dir.path);
        await dir.remove();
      },
    };
  } catch (err) {
    await nats?.stop();
    await dir.remove();
    throw err;
  }
}

/**
 * Copies the stack's logs and hypervisor state to `PLUGLINE_CHAOS_KEEP_LOGS` (when set), so a
 * failed run can be read after its folder is gone.
 */
async function keepLogs(dir: string): Promise<void> {
  const to = process.env.PLUGLINE_CHAOS_KEEP_LOGS;
  if (to === undefined || to === '') return;
  const where = `${to}/${Date.now()}`;
  for (const part of ['logs', 'state']) {
    await cp(`${dir}/${part}`, `${where}/${part}`, { recursive: true }).catch(() => undefined);
  }
  console.log(`[chaos] logs kept in ${where}`);
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
  /** Requests whose connection to the API server broke (a dropped watch test) and were sent again. */
  interrupted: number;
}

/**
 * Tries of one request whose connection broke. Every pooled keep-alive connection dropped at once
 * fails its next request, one after the other, before a new one is opened: a client of a few
 * requests in flight can meet several in a row (the soak's watch rounds met five).
 */
const MAX_SEND_ATTEMPTS = 20;

/** The API server could not be reached, or the connection broke: a user would try again. */
function interrupted(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof TransientError) return true;
  }
  return false;
}

/**
 * One request on `vm`: plug a claim it does not have, or unplug one it has. When the connection
 * breaks, the VMI is read again and the same request sent again unless it already took effect.
 */
async function oneOperation(
  f: ChaosFixture,
  vm: Vm,
  random: () => number,
  counts: RunCounts,
): Promise<void> {
  let intent: { claim: string; plug: boolean; bus: 'virtio' | 'scsi' } | undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      const vmi = await f.client.getVmi(vm.namespace, vm.name);
      const inSpec = new Set((vmi.spec.volumes ?? []).map((v) => v.name));
      if (intent === undefined) {
        const claim = vm.claims[Math.floor(random() * vm.claims.length)]!;
        intent = { claim, plug: !inSpec.has(claim), bus: random() < 0.3 ? 'virtio' : 'scsi' };
        if (intent.plug) counts.plugs++;
        else counts.unplugs++;
      } else if (inSpec.has(intent.claim) === intent.plug) {
        return; // the interrupted request went through
      }
      const target = { namespace: vm.namespace, vmi: vm.name };
      if (intent.plug) {
        await addVolume(f.client, {
          ...target,
          flags: { volumeName: intent.claim, bus: intent.bus },
        });
      } else {
        await removeVolume(f.client, { ...target, volumeName: intent.claim });
      }
      return;
    } catch (err) {
      if (err instanceof RequestRejectedError) {
        counts.rejected++;
        return;
      }
      if (!interrupted(err) || attempt >= MAX_SEND_ATTEMPTS) throw err;
      counts.interrupted++;
    }
  }
}

/**
 * `operations` random requests across `vms`, `parallel` at a time, never two on one VMI at once;
 * each picks a VMI and plugs a claim it does not have, or unplugs one it has. Returns when all
 * were sent.
 */
export async function randomOperations(
  f: ChaosFixture,
  vms: readonly Vm[],
  operations: number,
  parallel: number,
  random: () => number,
): Promise<RunCounts> {
  const counts: RunCounts = { operations: 0, plugs: 0, unplugs: 0, rejected: 0, interrupted: 0 };
  let next = 0;
  /** The operation in flight per VMI: one at a time on a VMI, as a user's requests would be. */
  const busy = new Map<string, Promise<void>>();
  const worker = async (): Promise<void> => {
    while (next < operations) {
      const vm = vms[Math.floor(random() * vms.length)]!;
      const inFlight = busy.get(vm.name);
      if (inFlight !== undefined) {
        await inFlight;
        continue;
      }
      next++;
      counts.operations++;
      const op = oneOperation(f, vm, random, counts).finally(() => busy.delete(vm.name));
      busy.set(
        vm.name,
        op.then(
          () => undefined,
          () => undefined,
        ),
      );
      await op;
    }
  };
  await Promise.all(Array.from({ length: parallel }, () => worker()));
  return counts;
}

/**
 * Calls `disturb` at random moments (every `minMs`..`maxMs`) until `until` settles and it was
 * called at least `minimum` times: the requests are sent faster than the stack handles them, so
 * the later calls still land while work is in flight.
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
  while (!done || count < minimum) {
    // The schedule of the disturbances (a random moment), not a wait for a condition.
    const pause = delay(minMs + random() * (maxMs - minMs));
    // While requests are still being sent, a failed send ends the wait (and the run) at once.
    await (done ? pause : Promise.race([pause, until.catch(() => undefined)]));
    if (done && count >= minimum) break;
    await disturb();
    count++;
  }
  await until;
  return count;
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

/** Messages in the dead-letter stream (`/jsz`), the work items and events a stage gave up on. */
export async function deadLetterMessages(monitorUrl: string): Promise<number> {
  const res = await fetch(`${monitorUrl}/jsz?streams=true`, { signal: AbortSignal.timeout(3000) });
  const jsz = (await res.json()) as {
    account_details?: { stream_detail?: { name: string; state: { messages: number } }[] }[];
  };
  let messages = 0;
  for (const a of jsz.account_details ?? []) {
    for (const s of a.stream_detail ?? []) {
      if (s.name === 'PLUGLINE_DLQ') messages += s.state.messages;
    }
  }
  return messages;
}

/**
 * One scenario's figures, printed as one `[chaos] <name> {json}` line whether it passed or not:
 * what it did (the caller's counts), the redeliveries and dead letters the services counted during
 * it, the dead-letter stream's size, and how long sending and converging took.
 */
export class ScenarioReport {
  readonly #started = Date.now();
  #sent = 0;
  #before: Tallied = { redeliveries: 0, deadLetters: 0 };
  constructor(
    readonly name: string,
    readonly seed: number,
    private readonly f: ChaosFixture,
    private readonly tally: ServiceTally,
  ) {}
  async begin(): Promise<this> {
    this.#before = await this.tally.total(this.f.stack.services);
    return this;
  }
  /** The requests are all sent; convergence starts. */
  sent(): void {
    this.#sent = Date.now();
  }
  async print(figures: Record<string, unknown>, passed: boolean): Promise<void> {
    const now = Date.now();
    const after = await this.tally.total(this.f.stack.services);
    const dlq =
      this.f.monitorUrl === ''
        ? undefined
        : await deadLetterMessages(this.f.monitorUrl).catch(() => undefined);
    const sent = this.#sent || now;
    const line = {
      seed: this.seed,
      ...figures,
      redeliveries: after.redeliveries - this.#before.redeliveries,
      deadLetters: after.deadLetters - this.#before.deadLetters,
      dlqMessages: dlq,
      runMs: sent - this.#started,
      convergeMs: now - sent,
      totalMs: now - this.#started,
      passed,
    };
    console.log(`[chaos] ${this.name} ${JSON.stringify(line)}`);
  }
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

/** Redeliveries and dead letters counted by the services' own metrics. */
export interface Tallied {
  redeliveries: number;
  deadLetters: number;
}

/** A service's Prometheus exposition; empty when it does not answer (it has nothing to add). */
export async function metricsOf(healthUrl: string): Promise<string> {
  try {
    const res = await fetch(`${healthUrl}/metrics`, { signal: AbortSignal.timeout(2000) });
    return await res.text();
  } catch {
    return '';
  }
}

async function scrape(healthUrl: string): Promise<Tallied> {
  const text = await metricsOf(healthUrl);
  return {
    redeliveries: counterSum(text, 'plugline_redeliveries_total'),
    deadLetters: counterSum(text, 'plugline_dead_letters_total'),
  };
}

/**
 * Redeliveries and dead letters counted by the services across restarts: a killed process's
 * counters die with it, so they are banked right before the kill ({@link bank}); {@link total}
 * adds the live processes' counters. What a victim counts between its last scrape and the kill
 * (milliseconds) is missed.
 */
export class ServiceTally {
  #banked: Tallied = { redeliveries: 0, deadLetters: 0 };
  /** Keeps one service's counters (call right before killing it). */
  async bank(healthUrl: string): Promise<void> {
    const t = await scrape(healthUrl);
    this.#banked.redeliveries += t.redeliveries;
    this.#banked.deadLetters += t.deadLetters;
  }
  /** Banked counters plus those of `live` services. */
  async total(live: readonly { healthUrl: string }[]): Promise<Tallied> {
    const sum = { ...this.#banked };
    for (const s of live) {
      const t = await scrape(s.healthUrl);
      sum.redeliveries += t.redeliveries;
      sum.deadLetters += t.deadLetters;
    }
    return sum;
  }
}

/**
 * Waits for the invariants (test/support/invariants.ts). With `PLUGLINE_CHAOS_TRACE=1` it also
 * prints each change of the violations while the stack converges, to see what a slow or stuck
 * convergence waits on.
 */
export async function settle(
  f: ChaosFixture,
  options: { timeoutMs: number; natsMonitorUrl?: string },
): Promise<InvariantReport> {
  const natsMonitorUrl = options.natsMonitorUrl ?? f.monitorUrl;
  const check = { natsMonitorUrl: natsMonitorUrl === '' ? undefined : natsMonitorUrl };
  const trace = process.env.PLUGLINE_CHAOS_TRACE === '1';
  let tracing = trace;
  const traced = trace ? traceViolations(f, check, () => tracing) : Promise.resolve();
  try {
    return await waitForInvariants(f.stack, { ...check, timeoutMs: options.timeoutMs });
  } catch (err) {
    const violations = err instanceof Error ? err.message : String(err);
    await explainVolumes(f, violations).catch((why: unknown) =>
      console.log(`[chaos] could not read the volumes' histories: ${String(why)}`),
    );
    if (violations.includes('unacknowledged') || violations.includes('work stream holds')) {
      await explainBacklog(f).catch((why: unknown) =>
        console.log(`[chaos] could not read the work backlog: ${String(why)}`),
      );
    }
    throw err;
  } finally {
    tracing = false;
    await traced;
  }
}

async function traceViolations(
  f: ChaosFixture,
  check: { natsMonitorUrl?: string },
  on: () => boolean,
): Promise<void> {
  const started = Date.now();
  let last = '';
  // Samples the violations once a second until tracing stops (the settle is over).
  await waitFor(
    async () => {
      if (!on()) return true;
      const report = await checkInvariants(f.stack, check).catch((err: unknown) => ({
        violations: [`check failed: ${String(err)}`],
      }));
      const now = report.violations.slice().sort().join('\n    ');
      if (now !== last) {
        console.log(`[chaos] +${Date.now() - started} ms violations:\n    ${now || '(none)'}`);
        last = now;
      }
      return false;
    },
    { timeout: Number.MAX_SAFE_INTEGER, interval: 1000, description: 'the end of the trace' },
  );
}

/**
 * Volumes (`ns/vmi/volume`) a violation names, at most `limit`: directly, or as the claim an
 * attachment pod references (the workload's claims are `<vmi>-d<n>`, named after their volume).
 */
function volumesNamed(text: string, limit: number): string[] {
  const found = new Set<string>();
  for (const m of text.matchAll(/^\s*([a-z0-9-]+)\/([a-z0-9-]+)\/([a-z0-9-]+):/gm)) {
    found.add(`${m[1]}/${m[2]}/${m[3]}`);
  }
  for (const m of text.matchAll(
    /^\s*([a-z0-9-]+)\/[a-z0-9-]+: references (([a-z0-9-]+)-d\d+) /gm,
  )) {
    found.add(`${m[1]}/${m[3]}/${m[2]}`);
  }
  // `ns/vmi: domain disk sda (vol) not in spec`, `ns/vmi: vol.img in the hotplug folder`
  for (const m of text.matchAll(
    /^\s*([a-z0-9-]+)\/([a-z0-9-]+): (?:domain disk \S+ \(([a-z0-9-]+)\)|([a-z0-9-]+?)(?:\.img)? in the hotplug folder)/gm,
  )) {
    found.add(`${m[1]}/${m[2]}/${m[3] ?? m[4]}`);
  }
  return [...found].slice(0, limit);
}

/** A stage's persisted unit snapshot (its machine context), shortened; `-` when there is none. */
async function unitSnapshot(
  bus: Awaited<ReturnType<typeof connectBus>>,
  stage: string,
  unit: string,
): Promise<string> {
  const kv = await bus.kvm.open(`plugline-${stage}`);
  const entry = await kv.get(kvKey(unit));
  if (entry === null || entry.length === 0) return '-';
  const record = entry.json<{ snapshot?: { value?: unknown; context?: unknown } }>();
  const shown = JSON.stringify({
    value: record.snapshot?.value,
    context: record.snapshot?.context,
  });
  return `rev ${entry.revision} ${shown.slice(0, 1500)}`;
}

/**
 * Prints, for the volumes a failed convergence names, the VMI's spec and status entry and every
 * event the stages published for them (type, operation, stage, phase): what a reader of a red
 * CI run needs to tell a lost fact from a wrong decision.
 */
export async function explainVolumes(f: ChaosFixture, violations: string): Promise<void> {
  const volumes = volumesNamed(violations, 6);
  if (volumes.length === 0) return;
  const bus = await connectBus({ servers: f.stack.natsUrl.split(','), apiTimeoutMs: 10_000 });
  try {
    // Whether the status projector has had the events below (their sequences are printed).
    const events = (await bus.jsm.streams.info(StreamName.Events)).state;
    const p = await bus.jsm.consumers.info(StreamName.Events, 'spec-watcher-projector');
    console.log(
      `[chaos] event stream last ${events.last_seq}; projector consumer: pending ${p.num_pending}, ` +
        `unacknowledged ${p.num_ack_pending}, redelivered ${p.num_redelivered}, ` +
        `delivered ${p.delivered.stream_seq}, ack floor ${p.ack_floor.stream_seq}`,
    );
    for (const key of volumes) {
      const [namespace = '', vmi = '', volume = ''] = key.split('/');
      const live = await f.client.getVmi(namespace, vmi).catch(() => undefined);
      const inSpec = (live?.spec.volumes ?? []).some((v) => v.name === volume);
      const status = live?.status?.volumeStatus?.find((v) => v.name === volume);
      const lines = [
        `[chaos] ${key} uid=${live?.metadata.uid} inSpec=${inSpec} status=${JSON.stringify(status)}`,
      ];
      const stream = await openEventStream(bus.js, { namespace, vmi, volume }, 'all');
      const deadline = setTimeout(() => stream.stop(), 5000);
      for await (const { event, pending, seq } of stream) {
        const d = event.data;
        lines.push(
          `    ${event.time.slice(11, 23)} seq ${seq} ${eventTypeOf(event)} op=${d.operationId} (${d.operation}) ` +
            `uid=${d.vmiUID.slice(0, 8)} stage=${d.stage} phase=${d.phase ?? '-'} target=${d.target ?? '-'}` +
            `${d.reason === undefined ? '' : ` reason=${d.reason}`}`,
        );
        if (pending === 0) break;
      }
      clearTimeout(deadline);
      stream.stop();
      for (const [stage, unit] of [
        ['spec-watcher', key],
        ['attachment-orchestrator', `${namespace}/${vmi}`],
        ['node-mounter', key],
        ['domain-updater', key],
      ] as const) {
        const shown = await unitSnapshot(bus, stage, unit).catch((e: unknown) => String(e));
        lines.push(`    ${stage} snapshot: ${shown}`);
      }
      console.log(lines.join('\n'));
    }
  } finally {
    await bus.close();
  }
}

/**
 * Prints, for each work consumer with outstanding items, the consumer's and the stream's state,
 * every item between its ack floor and what it delivered (or that the stream no longer holds it),
 * and what each service says it is working on: enough to tell an item a handler still holds
 * (its `working` keeps it) from one the server keeps pending for a message it removed.
 */
async function explainBacklog(f: ChaosFixture): Promise<void> {
  const bus = await connectBus({ servers: f.stack.natsUrl.split(','), apiTimeoutMs: 10_000 });
  try {
    const stream = await bus.jsm.streams.info(StreamName.Work);
    const { first_seq: first, last_seq: last, messages } = stream.state;
    const lines = [`[chaos] work stream: ${messages} message(s), first ${first}, last ${last}`];
    // Each sequence is read once: the consumers' items are among the stream's first ones.
    const reads = new Map<number, ReturnType<typeof bus.jsm.streams.getMessage>>();
    const messageAt = (seq: number) => {
      let read = reads.get(seq);
      if (read === undefined) {
        read = bus.jsm.streams.getMessage(StreamName.Work, { seq }).catch(() => null);
        reads.set(seq, read);
      }
      return read;
    };
    // The first few (a long run of removed sequences between them is not walked to its end).
    for (let seq = first, shown = 0; seq <= Math.min(last, first + 200) && shown < 10; seq++) {
      const held = await messageAt(seq);
      if (held === null) continue;
      lines.push(`    seq ${seq} ${held.subject}`);
      shown++;
    }
    for await (const c of bus.jsm.consumers.list(StreamName.Work)) {
      if (c.num_pending + c.num_ack_pending === 0) continue;
      lines.push(
        `    consumer ${c.name}: pending ${c.num_pending}, unacknowledged ${c.num_ack_pending}, ` +
          `redelivered ${c.num_redelivered}, waiting pulls ${c.num_waiting}, ` +
          `delivered ${c.delivered.stream_seq}, ack floor ${c.ack_floor.stream_seq}`,
      );
      const from = c.ack_floor.stream_seq + 1;
      let shown = 0;
      const units = new Set<string>();
      for (let seq = from; seq <= c.delivered.stream_seq && seq < from + 50; seq++) {
        const held = await messageAt(seq);
        if (held === null) continue;
        if (!subjectMatches(c.config.filter_subject ?? '>', held.subject)) continue;
        lines.push(`      seq ${seq} ${held.subject} ${held.string().slice(0, 400)}`);
        shown++;
        const decoded = decodeWorkItem(held.data);
        if (!decoded.ok) continue;
        const item = decoded.value;
        // The stage's persisted unit: what it is waiting on when it keeps sending an item back.
        const unit =
          item.stage === Stage.AttachmentOrchestrator
            ? `${item.namespace}/${item.vmi}`
            : `${item.namespace}/${item.vmi}/${item.volume}`;
        if (!units.has(`${item.stage} ${unit}`)) {
          units.add(`${item.stage} ${unit}`);
          const snapshot = await unitSnapshot(bus, item.stage, unit).catch((e: unknown) =>
            String(e),
          );
          lines.push(`      ${item.stage} snapshot of ${unit}: ${snapshot}`);
        }
      }
      if (shown < c.num_ack_pending) {
        lines.push(
          `      ${c.num_ack_pending - shown} unacknowledged item(s) the stream no longer holds`,
        );
      }
    }
    for (const s of f.stack.services) {
      const inFlight = counterSum(await metricsOf(s.healthUrl), 'plugline_units_in_flight');
      lines.push(`    ${s.id}: ${inFlight} unit(s) in flight`);
    }
    console.log(lines.join('\n'));
  } finally {
    await bus.close();
  }
}
