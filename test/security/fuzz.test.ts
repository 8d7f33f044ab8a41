import { randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, StreamName } from '@plugline/bus';
import type { Bus } from '@plugline/bus';
import {
  buildEvent,
  deadLetterSubject,
  encodeMessage,
  encodeToken,
  EVENT_TYPES,
  eventMsgId,
  eventSubject,
  EventType,
  MAX_MESSAGE_BYTES,
  Stage,
  workMsgId,
  workSubject,
} from '@plugline/contracts';
import type {
  EventData,
  MalformedReason,
  VirtualMachineInstance,
  VolumeEvent,
  VolumeStatus,
} from '@plugline/contracts';
import { startKubeSim, Types } from '@plugline/kube-sim';
import type { KubeObject, KubeSim } from '@plugline/kube-sim';
import {
  decisionNudge,
  parseConfig,
  PROJECTOR_CONSUMER,
  startSpecWatcher,
} from '@plugline/spec-watcher';
import type { SpecWatcherService } from '@plugline/spec-watcher';
import { createLogger, createMetrics, memoryDestination } from '@plugline/telemetry';
import type { PluglineMetrics } from '@plugline/telemetry';
import { startNats, waitFor } from '@plugline/testkit';
import type { NatsServer } from '@plugline/testkit';

/**
 * Issue 9: the spec-watcher (projector on the event stream, decision stage on its work subjects)
 * against a real nats-server and kube-sim, fed fast-check-generated garbage, truncated, oversized,
 * wrong-schema, unknown-type and mis-addressed messages, and replays. Every malformed message is
 * dead-lettered with its reason and counted; the service stays up; the next good message applies.
 * Names at the Kubernetes limits (63-char namespace and volume, 253-char dotted VMI name) flow
 * through subjects and into status.
 */

const NODE = 'node-1';
const STAGE = Stage.SpecWatcher;
const DLQ_SUBJECT = deadLetterSubject(STAGE);
const NUM_RUNS = 40;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A 63-character namespace (the label limit). */
const ns = `fz-${randomBytes(4).toString('hex')}-`.padEnd(62, 'n') + '9';
/** A 253-character VMI name (the subdomain limit) with dots. */
const longVmi = `${'v'.repeat(62)}.`.repeat(4) + 'z';
/** A 63-character volume name. */
const longVolume = `vol-${'x'.repeat(58)}9`;
const main = `vm-${randomBytes(3).toString('hex')}`;

let nats: NatsServer;
let sim: KubeSim;
let bus: Bus;
let service: SpecWatcherService;
let metrics: PluglineMetrics;
let mainOp = '';
let longOp = '';

// ---------------------------------------------------------------------------------------------
// Kubernetes fixtures

function getVmi(name: string): VirtualMachineInstance {
  return sim.store.get(
    Types.virtualmachineinstances,
    ns,
    name,
  ) as unknown as VirtualMachineInstance;
}

function statusOf(name: string, volume: string): VolumeStatus | undefined {
  return getVmi(name).status?.volumeStatus?.find((s) => s.name === volume);
}

function createRunningVmi(name: string): void {
  sim.store.create(
    Types.virtualmachineinstances,
    {
      apiVersion: 'kubevirt.io/v1',
      kind: 'VirtualMachineInstance',
      metadata: { name },
      spec: {
        domain: { devices: { disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }] } },
        volumes: [{ name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/fedora' } }],
      },
    },
    { namespace: ns },
  );
  sim.store.update(
    Types.virtualmachineinstances,
    name,
    {
      ...(getVmi(name) as unknown as KubeObject),
      status: {
        phase: 'Running',
        nodeName: NODE,
        volumeStatus: [{ name: 'rootdisk', target: 'vda', phase: 'Ready' }],
      },
    },
    { namespace: ns, subresource: 'status' },
  );
}

function addVolume(vmiName: string, volume: string): void {
  const vmi = structuredClone(getVmi(vmiName));
  vmi.spec.volumes = [
    ...(vmi.spec.volumes ?? []),
    { name: volume, persistentVolumeClaim: { claimName: `claim-${volume}`, hotpluggable: true } },
  ];
  vmi.spec.domain.devices.disks = [
    ...(vmi.spec.domain.devices.disks ?? []),
    { name: volume, disk: { bus: 'scsi' }, serial: volume },
  ];
  sim.store.update(Types.virtualmachineinstances, vmiName, vmi as unknown as KubeObject, {
    namespace: ns,
  });
}

// ---------------------------------------------------------------------------------------------
// Streams

async function requestedOp(vmiName: string, volume: string): Promise<string> {
  const prefix = `plugline.v1.events.${encodeToken(ns)}.${encodeToken(vmiName)}.${encodeToken(volume)}.`;
  return waitFor(
    async () => {
      const info = await bus.jsm.streams.info(StreamName.Events);
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await bus.jsm.streams.getMessage(StreamName.Events, { seq }).catch(() => null);
        if (m === null || !m.subject.startsWith(prefix)) continue;
        const e = JSON.parse(decoder.decode(m.data)) as VolumeEvent;
        if (e.type === `io.plugline.volume.${EventType.Requested}`) return e.data.operationId;
      }
      return undefined;
    },
    { timeout: 10_000, description: `requested event of ${volume}` },
  );
}

function readyEvent(vmiName: string, volume: string, operationId: string): VolumeEvent {
  const vmi = getVmi(vmiName);
  const data: Omit<EventData, 'stage'> = {
    operation: 'plug',
    vmiUID: vmi.metadata.uid ?? '',
    operationId,
    target: 'sda',
  };
  return buildEvent({
    namespace: ns,
    vmi: vmiName,
    volume,
    type: EventType.Ready,
    stage: Stage.AttachmentOrchestrator,
    id: randomUUID(),
    data,
  });
}

async function projected(seq: number): Promise<void> {
  await waitFor(
    async () => {
      const info = await bus.jsm.consumers.info(StreamName.Events, PROJECTOR_CONSUMER);
      return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0;
    },
    { timeout: 10_000, description: `projection of event ${seq}` },
  );
}

async function deadLetterCounts(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const v of (await metrics.deadLetters.get()).values) {
    if (v.labels.stage !== STAGE) continue;
    const reason = String(v.labels.reason);
    out.set(reason, (out.get(reason) ?? 0) + v.value);
  }
  return out;
}

function total(counts: Map<string, number>): number {
  return [...counts.values()].reduce((a, b) => a + b, 0);
}

// ---------------------------------------------------------------------------------------------
// Generated malformed messages

interface Case {
  kind: string;
  subject: string;
  data: Uint8Array;
  /** The exact reason, or the set a wrong-schema body may map to. */
  reasons: readonly MalformedReason[];
}

const ANY_BODY_REASON: readonly MalformedReason[] = [
  'invalid-json',
  'invalid-envelope',
  'invalid-data',
  'unknown-type',
];

/**
 * Tokens that no name encodes to: uppercase and symbols, non-canonical `_xx` escapes, and an
 * overlong one (254 characters is past even a VMI name's 253; 64 was a valid VMI name, which made
 * a "bad" subject merely name another VMI: dead-lettered as a mismatch, not as invalid).
 */
const badToken = fc.oneof(
  fc.stringMatching(/^[A-Z~!#%=+][A-Za-z0-9_~!#%=+-]{0,30}$/),
  fc.constantFrom('_61', '_2e', '_zz', '__', '_', 'a_', '-a', 'a-', '_e2_82', 'x'.repeat(254)),
);

function oversized(size: number): Uint8Array {
  return encoder.encode(JSON.stringify({ pad: 'p'.repeat(size) }));
}

function truncate(bytes: Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc.nat({ max: bytes.length - 1 }).map((n) => bytes.slice(0, n));
}

const wrongSchema = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 6 }),
  fc.jsonValue({ maxDepth: 2 }),
  fc.constant({ specversion: '1.0', type: 'io.plugline.volume.ready' }),
  fc.constant({ v: 2, stage: 'spec-watcher' }),
);

function eventCases(validEvent: () => VolumeEvent): fc.Arbitrary<Case> {
  const subject = eventSubject({ namespace: ns, vmi: main, volume: 'fz' }, 'ready');
  const prefix = `plugline.v1.events.${encodeToken(ns)}.${encodeToken(main)}`;
  return fc.oneof(
    fc
      .uint8Array({ maxLength: 512 })
      .map((data): Case => ({ kind: 'garbage', subject, data, reasons: ANY_BODY_REASON })),
    fc
      .constant(null)
      .chain(() => truncate(encodeMessage(validEvent())))
      .map((data): Case => ({ kind: 'truncated', subject, data, reasons: ['invalid-json'] })),
    fc.integer({ min: MAX_MESSAGE_BYTES + 1, max: MAX_MESSAGE_BYTES + 4096 }).map((n): Case => ({
      kind: 'oversized',
      subject,
      data: oversized(n),
      reasons: ['oversized'],
    })),
    wrongSchema.map((v): Case => ({
      kind: 'wrong-schema',
      subject,
      data: encoder.encode(JSON.stringify(v)),
      reasons: ANY_BODY_REASON,
    })),
    fc
      .stringMatching(/^[a-z][a-z-]{2,15}$/)
      .filter((t) => !(EVENT_TYPES as readonly string[]).includes(t))
      .map((t): Case => {
        const e = { ...validEvent(), type: `io.plugline.volume.${t}` };
        return {
          kind: 'unknown-type',
          subject: eventSubject({ namespace: ns, vmi: main, volume: 'fz' }, t),
          data: encoder.encode(JSON.stringify(e)),
          reasons: ['unknown-type'],
        };
      }),
    fc.tuple(badToken, fc.integer({ min: 0, max: 3 })).map(([token, at]): Case => {
      const tokens = [encodeToken(ns), encodeToken(main), 'fz', 'ready'];
      tokens[at] = token;
      return {
        kind: 'bad-subject',
        subject: `plugline.v1.events.${tokens.join('.')}`,
        data: encodeMessage(validEvent()),
        // A well-formed token in the type's place names another (unknown) type than the event's.
        reasons: at === 3 ? ['invalid-subject', 'subject-mismatch'] : ['invalid-subject'],
      };
    }),
    fc.constant<Case>({
      kind: 'short-subject',
      subject: `${prefix}.fz`,
      data: encodeMessage(validEvent()),
      reasons: ['invalid-subject'],
    }),
  );
}

function workCases(): fc.Arbitrary<Case> {
  const valid = () =>
    decisionNudge(getVmi(main), {
      volume: 'fz',
      operation: 'plug',
      cause: 'resync',
      id: randomUUID(),
    });
  const subject = workSubject({ stage: STAGE, namespace: ns, vmi: main, volume: 'fz' });
  return fc.oneof(
    fc
      .uint8Array({ maxLength: 512 })
      .map((data): Case => ({ kind: 'garbage', subject, data, reasons: ANY_BODY_REASON })),
    fc
      .constant(null)
      .chain(() => truncate(encodeMessage(valid())))
      .map((data): Case => ({ kind: 'truncated', subject, data, reasons: ['invalid-json'] })),
    fc.integer({ min: MAX_MESSAGE_BYTES + 1, max: MAX_MESSAGE_BYTES + 4096 }).map((n): Case => ({
      kind: 'oversized',
      subject,
      data: oversized(n),
      reasons: ['oversized'],
    })),
    wrongSchema.map((v): Case => ({
      kind: 'wrong-schema',
      subject,
      data: encoder.encode(JSON.stringify(v)),
      reasons: ANY_BODY_REASON,
    })),
    // A valid CloudEvent is not a work item.
    fc.constant(null).map((): Case => ({
      kind: 'event-as-work',
      subject,
      data: encodeMessage(readyEvent(main, 'fz', randomUUID())),
      reasons: ANY_BODY_REASON,
    })),
    fc.tuple(badToken, fc.integer({ min: 0, max: 2 })).map(([token, at]): Case => {
      const tokens = [encodeToken(ns), encodeToken(main), 'fz'];
      tokens[at] = token;
      return {
        kind: 'bad-subject',
        subject: `plugline.v1.work.${STAGE}._.${tokens.join('.')}`,
        data: encodeMessage(valid()),
        reasons: ['subject-mismatch'],
      };
    }),
  );
}

/** Shows a case in a counterexample by kind, subject and size, not its (maybe 64 KiB) bytes. */
function labelled(arb: fc.Arbitrary<Case>): fc.Arbitrary<Case> {
  return arb.map((c) =>
    Object.assign(c, {
      [fc.toStringMethod]: () => `${c.kind} on ${c.subject} (${c.data.length} bytes)`,
    }),
  );
}

/** Publishes one case; resolves once its dead letter is on the DLQ stream, and checks it. */
async function publishAndExpectDeadLetter(c: Case, stream: string): Promise<void> {
  const before = await deadLetterCounts();
  const ack = await bus.js.publish(c.subject, c.data, { msgID: randomUUID() });
  expect(ack.stream).toBe(stream);
  const dead = await waitFor(
    async () => {
      const m = await bus.jsm.streams
        .getMessage(StreamName.DeadLetters, { last_by_subj: DLQ_SUBJECT })
        .catch(() => null);
      return m !== null &&
        m.header.get('Plugline-Subject') === c.subject &&
        m.header.get('Plugline-Stream-Seq') === String(ack.seq)
        ? m
        : undefined;
    },
    { timeout: 5000, description: `dead letter of ${c.kind} on ${c.subject}` },
  );
  const reason = dead.header.get('Plugline-Reason') as MalformedReason;
  expect(c.reasons, `${c.kind}: reason ${reason}`).toContain(reason);
  expect(dead.header.get('Plugline-Error')).not.toBe('');
  expect(Buffer.from(dead.data).equals(Buffer.from(c.data))).toBe(true);
  const after = await waitFor(async () => {
    const counts = await deadLetterCounts();
    return total(counts) > total(before) ? counts : undefined;
  });
  expect(total(after) - total(before)).toBe(1);
  expect((after.get(reason) ?? 0) - (before.get(reason) ?? 0)).toBe(1);
  expect(service.ready()).toBe(true);
}

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  nats = await startNats();
  sim = await startKubeSim({ kubelet: false, namespaces: [ns], nodes: [NODE] });
  bus = await connectBus({ servers: nats.url });
  const config = parseConfig({
    NATS_URL: nats.url,
    KUBECONFIG: sim.kubeconfigPath,
    PLUGLINE_ACK_WAIT_MS: '5000',
    PLUGLINE_CONCURRENCY: '4',
    PLUGLINE_RESYNC_PERIOD_MS: '600000',
    PLUGLINE_LEASE_TTL_MS: '2000',
  });
  metrics = createMetrics(undefined, { processMetrics: false });
  const logger = createLogger({ level: 'warn' }, memoryDestination());
  service = await startSpecWatcher(config, { logger, bus, metrics, workerId: 'fuzz' });
  await waitFor(() => service.ready(), { timeout: 10_000, description: 'spec-watcher ready' });
  createRunningVmi(main);
  addVolume(main, 'fz');
  mainOp = await requestedOp(main, 'fz');
}, 60_000);

afterAll(async () => {
  await service?.stop();
  await bus?.close();
  await sim?.stop();
  await nats?.stop();
});

describe('fuzzing the spec-watcher subjects (stage)', { timeout: 40_000 }, () => {
  it('names at the limits flow through subjects and into status', async () => {
    expect(ns).toHaveLength(63);
    expect(longVmi).toHaveLength(253);
    expect(longVolume).toHaveLength(63);
    createRunningVmi(longVmi);
    addVolume(longVmi, longVolume);
    longOp = await requestedOp(longVmi, longVolume);
    const event = readyEvent(longVmi, longVolume, longOp);
    const subject = eventSubject({ namespace: ns, vmi: longVmi, volume: longVolume }, 'ready');
    await bus.js.publish(subject, encodeMessage(event), { msgID: eventMsgId(event) });
    await waitFor(() => statusOf(longVmi, longVolume)?.phase === 'Ready', {
      timeout: 10_000,
      description: 'long-named volume Ready',
    });
    expect(statusOf(longVmi, longVolume)).toMatchObject({ target: 'sda', reason: 'VolumeReady' });
  });

  it('malformed events are dead-lettered with a reason, counted, and the next good one applies', async () => {
    const valid = () => readyEvent(main, 'fz', mainOp);
    await fc.assert(
      fc.asyncProperty(labelled(eventCases(valid)), (c) =>
        publishAndExpectDeadLetter(c, StreamName.Events),
      ),
      { numRuns: NUM_RUNS, endOnFailure: true },
    );
    const good = valid();
    const ack = await bus.js.publish(
      eventSubject({ namespace: ns, vmi: main, volume: 'fz' }, 'ready'),
      encodeMessage(good),
      { msgID: eventMsgId(good) },
    );
    await projected(ack.seq);
    await waitFor(() => statusOf(main, 'fz')?.phase === 'Ready', {
      description: 'fz Ready after the garbage',
    });
    expect(service.ready()).toBe(true);
  });

  it('malformed work items are dead-lettered with a reason, counted, and the next one is processed', async () => {
    await fc.assert(
      fc.asyncProperty(labelled(workCases()), (c) =>
        publishAndExpectDeadLetter(c, StreamName.Work),
      ),
      { numRuns: NUM_RUNS, endOnFailure: true },
    );
    const before = total(await deadLetterCounts());
    const item = decisionNudge(getVmi(main), {
      volume: 'fz',
      operation: 'plug',
      cause: 'resync',
      id: randomUUID(),
    });
    const ack = await bus.js.publish(workSubject(item), encodeMessage(item), {
      msgID: workMsgId(item),
    });
    const consumer = service.stage.consumer;
    await waitFor(
      async () => {
        const info = await bus.jsm.consumers.info(StreamName.Work, consumer);
        return (
          info.ack_floor.stream_seq >= ack.seq &&
          info.num_ack_pending === 0 &&
          info.num_pending === 0
        );
      },
      { timeout: 10_000, description: 'the valid work item processed' },
    );
    expect(total(await deadLetterCounts())).toBe(before);
    expect(service.ready()).toBe(true);
  });

  it('replayed valid messages: deduplicated by Nats-Msg-Id, and idempotent past the window', async () => {
    const rv = getVmi(longVmi).metadata.resourceVersion;
    const before = total(await deadLetterCounts());
    const event = readyEvent(longVmi, longVolume, longOp);
    const subject = eventSubject({ namespace: ns, vmi: longVmi, volume: longVolume }, 'ready');
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 5 }), fc.uuid(), async (n, suffix) => {
        for (let i = 0; i < n; i++) {
          // Same id as the first publish: the server drops it.
          const dup = await bus.js.publish(subject, encodeMessage(event), {
            msgID: eventMsgId(event),
          });
          expect(dup.duplicate).toBe(true);
        }
        // A replay past the duplicate window (new id): handled idempotently, nothing written.
        const ack = await bus.js.publish(subject, encodeMessage(event), {
          msgID: `${eventMsgId(event)}:${suffix}`,
        });
        expect(ack.duplicate).toBe(false);
        await projected(ack.seq);
        expect(getVmi(longVmi).metadata.resourceVersion).toBe(rv);
      }),
      { numRuns: 10, endOnFailure: true },
    );
    expect(statusOf(longVmi, longVolume)?.phase).toBe('Ready');
    expect(total(await deadLetterCounts())).toBe(before);
    expect(service.ready()).toBe(true);
  });
});
