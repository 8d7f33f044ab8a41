import { describe, expect, it } from 'vitest';
import type { EventData, EventType, NewEvent, WorkItem } from '../src/index.js';
import {
  EVENT_DATA_REQUIREMENTS,
  EVENT_TYPES,
  MAX_MESSAGE_BYTES,
  MalformedMessageError,
  Stage,
  buildEvent,
  decodeEvent,
  decodeToken,
  decodeWorkItem,
  encodeMessage,
  encodeToken,
  eventFilter,
  eventMsgId,
  eventSubject,
  parseEventSubject,
  parseWorkSubject,
  resyncRoundOf,
  workFilter,
  workMsgId,
  workSubject,
} from '../src/index.js';

const key = { namespace: 'tenant-a1b2c3', vmi: 'my.vm', volume: 'data-disk-4k9' };

/** The data each type needs, so every type has a valid example. */
const dataFor: Record<EventType, Partial<EventData>> = {
  requested: {},
  'unplug-requested': { operation: 'unplug' },
  pending: { phase: 'Pending', reason: 'FailedPvcNotFound', message: 'PVC pvc-1 not found' },
  bound: { phase: 'Bound' },
  'import-progress': { progress: '45.10%' },
  'attached-to-node': {
    node: 'node-01',
    attachPod: { name: 'hp-volume-x7k2p', uid: '0b7f8f4e-1f53-4a54-9a43' },
  },
  'mounted-to-pod': { node: 'node-01' },
  ready: { target: 'sda', node: 'node-01' },
  'detached-from-domain': { operation: 'unplug' },
  'unmounted-from-pod': { operation: 'unplug' },
  detaching: { operation: 'unplug' },
  released: { operation: 'unplug' },
  removed: { operation: 'unplug' },
  failed: { reason: 'HotplugFailed', message: 'mount failed: EIO' },
};

function newEvent(type: EventType, extra: Partial<EventData> = {}): NewEvent {
  return {
    ...key,
    type,
    stage: Stage.NodeMounter,
    id: `evt-${type}`,
    time: new Date('2026-08-22T10:00:00Z'),
    data: {
      operationId: 'op-1',
      operation: 'plug',
      vmiUID: 'b6e0c1e4-0d65-4c1f-9a7e',
      attempt: 1,
      ...dataFor[type],
      ...extra,
    },
  };
}

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

function workItem(overrides: Partial<WorkItem> = {}): WorkItem {
  return {
    v: 1,
    stage: Stage.NodeMounter,
    namespace: key.namespace,
    vmi: key.vmi,
    vmiUID: 'b6e0c1e4-0d65-4c1f-9a7e',
    volume: key.volume,
    node: 'node-01',
    operationId: 'op-1',
    operation: 'plug',
    cause: 'attached-to-node',
    issuedAt: '2026-08-22T10:00:00.000Z',
    ...overrides,
  };
}

function expectMalformed(result: { ok: boolean; error?: unknown }, reason: string): string {
  expect(result.ok).toBe(false);
  expect(result.error).toBeInstanceOf(MalformedMessageError);
  const error = result.error as MalformedMessageError;
  expect(error.malformed).toBe(reason);
  expect(error.reason).toBe('MalformedMessage');
  return error.message;
}

describe('subject tokens', () => {
  it.each([
    ['my.vm', 'my_2evm'],
    ['a', 'a'],
    ['vm-1', 'vm-1'],
    ['..', '_2e_2e'],
    ['a/b', 'a_2fb'],
    ['*', '_2a'],
    ['>', '_3e'],
    ['_', '_5f'],
    ['Ä', '_c3_84'],
    ['😀', '_f0_9f_98_80'],
    [' ', '_20'],
  ])('%j ⇄ %s', (name, token) => {
    expect(encodeToken(name)).toBe(token);
    expect(decodeToken(token)).toBe(name);
  });

  it.each([
    ['_', 'the no-node token'],
    ['my.vm', 'a dot'],
    ['_2', 'a truncated escape'],
    ['_2G', 'a bad hex digit'],
    ['_61', 'a safe byte escaped (non-canonical)'],
    ['_2E', 'upper-case hex (non-canonical)'],
    ['_ff', 'invalid UTF-8'],
    ['_c3', 'a truncated UTF-8 sequence'],
    ['A', 'an upper-case letter'],
    ['a b', 'a space'],
    ['*', 'a wildcard'],
  ])('rejects %j (%s)', (token) => {
    expect(decodeToken(token)).toBeUndefined();
  });

  it('decodes the empty token to the empty name (the inverse of encoding it)', () => {
    expect(encodeToken('')).toBe('');
    expect(decodeToken('')).toBe('');
  });

  it('does not throw on non-strings from untyped callers', () => {
    for (const v of [undefined, null, 42, {}, ['a']]) {
      expect(decodeToken(v as string)).toBeUndefined();
    }
  });
});

describe('subjects', () => {
  it('round-trip a work subject for a cluster stage (node _)', () => {
    const subject = workSubject({ stage: Stage.AttachmentOrchestrator, ...key });
    expect(subject).toBe(
      'plugline.v1.work.attachment-orchestrator._.tenant-a1b2c3.my_2evm.data-disk-4k9',
    );
    expect(parseWorkSubject(subject)).toEqual({
      ok: true,
      value: { stage: 'attachment-orchestrator', node: undefined, ...key },
    });
  });

  it('round-trip an event subject, and filters select it', () => {
    const subject = eventSubject(key, 'ready');
    expect(subject).toBe('plugline.v1.events.tenant-a1b2c3.my_2evm.data-disk-4k9.ready');
    expect(parseEventSubject(subject)).toEqual({ ok: true, value: { ...key, type: 'ready' } });
    expect(eventFilter({ namespace: key.namespace, vmi: key.vmi })).toBe(
      'plugline.v1.events.tenant-a1b2c3.my_2evm.*.*',
    );
    expect(workFilter(Stage.DomainUpdater, 'node.01')).toBe(
      'plugline.v1.work.domain-updater.node_2e01.>',
    );
  });

  it.each([
    '',
    'plugline',
    'plugline.v1.work',
    'plugline.v1.work.node-mounter._.ns.vm.vol.extra',
    'plugline.v1.work.unknown-stage._.ns.vm.vol',
    'plugline.v2.work.node-mounter._.ns.vm.vol',
    'plugline.v1.work.node-mounter._.NS.vm.vol',
    'plugline.v1.work.node-mounter._.ns._2e_2e.vol',
    'plugline.v1.work.node-mounter._.ns.vm.my_2evol',
    'plugline.v1.work.node-mounter..ns.vm.vol',
    'plugline.v1.work.node-mounter.*.ns.vm.vol',
    'plugline.v1.work.node-mounter._.ns.vm._',
    'plugline.v1.work.node-mounter._.ns.vm.' + 'a'.repeat(64),
    'plugline.v1.events.ns.vm.vol.ready',
  ])('rejects the work subject %j', (subject) => {
    expectMalformed(parseWorkSubject(subject), 'invalid-subject');
  });

  it.each([
    'plugline.v1.events.ns.vm.vol',
    'plugline.v1.events.ns.vm.vol.READY',
    'plugline.v1.events.ns.vm.vol.>',
    'plugline.v1.events.ns.vm.vol.',
    'plugline.v1.events.ns.vm._ff.ready',
    'plugline.v1.events.ns.vm.vol.ready.x',
    'plugline.v1.work.node-mounter._.ns.vm.vol',
    '\u0000',
  ])('rejects the event subject %j', (subject) => {
    expectMalformed(parseEventSubject(subject), 'invalid-subject');
  });

  it('a VMI name of 253 characters with dots survives a subject', () => {
    const vmi = Array.from({ length: 4 }, () => 'a'.repeat(62)).join('.') + '.b';
    expect(vmi).toHaveLength(253);
    const parsed = parseEventSubject(eventSubject({ ...key, vmi }, 'bound'));
    expect(parsed.ok && parsed.value.vmi).toBe(vmi);
  });
});

describe('Nats-Msg-Id', () => {
  it('is <vmiUID>:<volume>:<operationId>:<type> for an event, and names the target a fact states', () => {
    const event = buildEvent(newEvent('mounted-to-pod'));
    expect(eventMsgId(event)).toBe('b6e0c1e4-0d65-4c1f-9a7e:data-disk-4k9:op-1:mounted-to-pod');
    expect(eventMsgId(buildEvent(newEvent('ready')))).toBe(
      'b6e0c1e4-0d65-4c1f-9a7e:data-disk-4k9:op-1:ready:sda',
    );
  });

  it('is stable for a retried publish and distinct per type and operation', () => {
    const a = eventMsgId(buildEvent(newEvent('ready')));
    expect(eventMsgId(buildEvent({ ...newEvent('ready'), id: 'another-id' }))).toBe(a);
    expect(eventMsgId(buildEvent(newEvent('mounted-to-pod')))).not.toBe(a);
    expect(eventMsgId(buildEvent(newEvent('ready', { operationId: 'op-2' })))).not.toBe(a);
  });

  it('tells apart what one operation states again with something new: another pod, a new progress, another target', () => {
    const onPod = (uid: string, id = 'evt') =>
      eventMsgId(
        buildEvent({
          ...newEvent('attached-to-node', { attachPod: { name: `hp-${uid}`, uid } }),
          id,
        }),
      );
    expect(onPod('uid-first')).toBe(onPod('uid-first', 'a-retry'));
    expect(onPod('uid-replacement')).not.toBe(onPod('uid-first'));
    const progress = (p: string) =>
      eventMsgId(buildEvent(newEvent('import-progress', { progress: p })));
    expect(progress('45.10%')).not.toBe(progress('12.00%'));
    expect(progress('45.10%')).toBe(progress('45.10%'));
    // A re-add's disk attached afresh under the bus its spec asks for, after the guest let go of
    // the one it had kept: the status must follow it to the new target.
    const readyOn = (target: string, id = 'evt') =>
      eventMsgId(buildEvent({ ...newEvent('ready', { target }), id }));
    expect(readyOn('vda')).not.toBe(readyOn('sda'));
    expect(readyOn('vda', 'a-retry')).toBe(readyOn('vda'));
  });

  it('tells apart a fact each resync asked for again, and keeps a retried restatement one message', () => {
    const stated = (resync?: string, id = 'evt') =>
      eventMsgId(buildEvent({ ...newEvent('ready', resync === undefined ? {} : { resync }), id }));
    const first = '2026-12-06T23:00:00.000Z';
    const next = '2026-12-06T23:05:00.000Z';
    expect(stated(first)).toBe(`${stated()}@resync:${first}`);
    expect(stated(first, 'a-retry')).toBe(stated(first));
    expect(stated(next)).not.toBe(stated(first));
  });

  it('distinguishes work nudges by stage, cause and issue time; a retried publish keeps its id', () => {
    const item = workItem();
    expect(workMsgId(item)).toBe(
      `b6e0c1e4-0d65-4c1f-9a7e:data-disk-4k9:op-1:work.node-mounter.attached-to-node@${item.issuedAt}`,
    );
    expect(workMsgId({ ...item })).toBe(workMsgId(item));
    expect(workMsgId(workItem({ cause: 'resync' }))).not.toBe(workMsgId(item));
    // the same nudge issued again (the next resync round) is a new message
    const later = new Date(Date.parse(item.issuedAt) + 1000).toISOString();
    expect(workMsgId({ ...item, issuedAt: later })).not.toBe(workMsgId(item));
  });
});

describe('decodeEvent', () => {
  it.each(EVENT_TYPES.map((t) => [t]))('accepts a valid %s event', (type) => {
    const event = buildEvent(newEvent(type));
    expect(event.type).toBe(`io.plugline.volume.${type}`);
    expect(event.subject).toBe('tenant-a1b2c3/my.vm/data-disk-4k9');
    expect(decodeEvent(encodeMessage(event))).toEqual({ ok: true, value: event });
  });

  const required = EVENT_TYPES.flatMap((type) =>
    EVENT_DATA_REQUIREMENTS[type].map((field) => [type, field] as const),
  );
  it.each(required)('rejects a %s event without data.%s', (type, field) => {
    const event = buildEvent(newEvent(type));
    const data = { ...event.data } as Record<string, unknown>;
    delete data[field];
    const message = expectMalformed(decodeEvent(encode({ ...event, data })), 'invalid-data');
    expect(message).toContain(`data.${field} is required`);
    expect(message).toContain(`invalid ${type} event`);
  });

  it('requires at least the documented facts', () => {
    expect(EVENT_DATA_REQUIREMENTS['attached-to-node']).toEqual(['node', 'attachPod']);
    expect(EVENT_DATA_REQUIREMENTS.ready).toEqual(['target']);
    expect(EVENT_DATA_REQUIREMENTS.failed).toEqual(['reason', 'message']);
  });

  const valid = buildEvent(newEvent('ready'));
  it.each([
    ['specversion 0.3', { specversion: '0.3' }, 'invalid-envelope'],
    ['no id', { id: undefined }, 'invalid-envelope'],
    ['bad time', { time: 'yesterday' }, 'invalid-envelope'],
    ['wrong content type', { datacontenttype: 'text/plain' }, 'invalid-envelope'],
    ['bad traceparent', { traceparent: '00-xyz' }, 'invalid-envelope'],
    ['subject with ../', { subject: 'ns/../vol' }, 'invalid-envelope'],
    ['subject with two parts', { subject: 'ns/vm' }, 'invalid-envelope'],
    ['unknown type', { type: 'io.plugline.volume.exploded' }, 'unknown-type'],
    ['foreign type', { type: 'com.example.ready' }, 'unknown-type'],
    ['data is an array', { data: [] }, 'invalid-data'],
    ['data is null', { data: null }, 'invalid-data'],
    ['bad stage', { data: { ...valid.data, stage: 'kubelet' } }, 'invalid-data'],
    ['negative attempt', { data: { ...valid.data, attempt: -1 } }, 'invalid-data'],
    ['NaN-like duration', { data: { ...valid.data, durationMs: '5' } }, 'invalid-data'],
    [
      'attachPod without uid',
      { data: { ...valid.data, attachPod: { name: 'p' } } },
      'invalid-data',
    ],
    ['node with a space', { data: { ...valid.data, node: 'node 1' } }, 'invalid-data'],
    ['operation sideways', { data: { ...valid.data, operation: 'sideways' } }, 'invalid-data'],
    ['target too long', { data: { ...valid.data, target: 'x'.repeat(65) } }, 'invalid-data'],
    ['resync not a time', { data: { ...valid.data, resync: 'round-7' } }, 'invalid-data'],
  ])('rejects an event with %s', (_title, patch, reason) => {
    expectMalformed(decodeEvent(encode({ ...valid, ...patch })), reason);
  });

  it.each([
    ['non-JSON', new TextEncoder().encode('not json'), 'invalid-json'],
    ['invalid UTF-8', new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d]), 'invalid-json'],
    ['a JSON array', encode([valid]), 'invalid-json'],
    ['JSON null', encode(null), 'invalid-json'],
    ['a JSON string', encode('ready'), 'invalid-json'],
    ['empty bytes', new Uint8Array(), 'invalid-json'],
    ['oversize', new Uint8Array(MAX_MESSAGE_BYTES + 1).fill(0x20), 'oversized'],
    ['an oversize string', ' '.repeat(MAX_MESSAGE_BYTES + 1), 'oversized'],
  ])('rejects %s', (_title, bytes, reason) => {
    expectMalformed(decodeEvent(bytes), reason);
  });

  it('keeps the parse error as the cause', () => {
    const result = decodeEvent('{');
    expect(!result.ok && result.error.cause).toBeInstanceOf(SyntaxError);
  });

  it('rejects non-bytes from untyped callers without throwing', () => {
    for (const v of [undefined, null, 42, {}, [1, 2]]) {
      expectMalformed(decodeEvent(v as Uint8Array), 'invalid-json');
      expectMalformed(decodeWorkItem(v as Uint8Array), 'invalid-json');
    }
  });
});

describe('decodeWorkItem', () => {
  it('accepts a valid work item, as bytes or text', () => {
    const item = workItem({ observedGeneration: 3 });
    expect(decodeWorkItem(encodeMessage(item))).toEqual({ ok: true, value: item });
    expect(decodeWorkItem(JSON.stringify(item))).toEqual({ ok: true, value: item });
  });

  it.each([
    ['v 2', { v: 2 }, 'v must be 1'],
    ['unknown stage', { stage: 'kubelet' }, 'stage is not a known stage'],
    ['namespace with a dot', { namespace: 'a.b' }, 'namespace is not a DNS-1123 label'],
    ['vmi with ../', { vmi: '../x' }, 'vmi is not a DNS-1123 subdomain'],
    ['Unicode volume', { volume: 'vølume' }, 'volume is not a DNS-1123 label'],
    ['volume of 64 characters', { volume: 'a'.repeat(64) }, 'volume is not a DNS-1123 label'],
    ['uid with a space', { vmiUID: 'a b' }, 'vmiUID is missing or malformed'],
    ['empty operationId', { operationId: '' }, 'operationId is missing or malformed'],
    ['no cause', { cause: undefined }, 'cause is missing'],
    ['fractional generation', { observedGeneration: 1.5 }, 'observedGeneration'],
    ['bad timestamp', { issuedAt: 'soon' }, 'issuedAt is not a timestamp'],
    ['resync round not a time', { resync: 'round-7' }, 'resync is not a timestamp'],
  ])('rejects %s', (_title, patch, problem) => {
    const message = expectMalformed(
      decodeWorkItem(encode({ ...workItem(), ...patch })),
      'invalid-data',
    );
    expect(message).toContain(problem);
  });

  it('belongs to a resync round: a resync nudge begins one, the work sent on in it carries it', () => {
    const resync = workItem({ cause: 'resync', issuedAt: '2026-12-06T23:00:00.000Z' });
    expect(resyncRoundOf(resync)).toBe(resync.issuedAt);
    const sentOn = workItem({ cause: 'mounted-to-pod', resync: resync.issuedAt });
    expect(decodeWorkItem(encode(sentOn))).toEqual({ ok: true, value: sentOn });
    expect(resyncRoundOf(sentOn)).toBe(resync.issuedAt);
    expect(resyncRoundOf(workItem({ cause: 'mounted-to-pod' }))).toBeUndefined();
    // An issue time in another form than toISOString's still names the round in that form.
    const other = workItem({ cause: 'resync', issuedAt: '2026-12-06T23:00:00Z' });
    expect(decodeWorkItem(encode(other)).ok).toBe(true);
    expect(resyncRoundOf(other)).toBe('2026-12-06T23:00:00.000Z');
  });

  it('accepts a volume name of exactly 63 characters', () => {
    expect(decodeWorkItem(encode(workItem({ volume: 'a'.repeat(63) }))).ok).toBe(true);
  });
});
