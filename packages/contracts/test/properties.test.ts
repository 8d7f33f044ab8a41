/**
 * Property tests: whatever arrives, the decoders and validators answer with a typed result and
 * never throw. Run counts are modest so the suite stays fast on a shared 2-core machine.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  EVENT_TYPES,
  InvalidRequestError,
  MalformedMessageError,
  STAGES,
  Stage,
  addVolumeOptionsFromFlags,
  buildEvent,
  decodeEvent,
  decodeToken,
  decodeWorkItem,
  encodeMessage,
  encodeToken,
  eventSubject,
  parseEventSubject,
  parseWorkSubject,
  validateAddVolume,
  validateHotplugDisk,
  validateRemoveVolume,
  workSubject,
} from '../src/index.js';
import { vm, vmi, withHotplugPVC } from './builders.js';

const RUNS = { numRuns: 300 };

/** `String.prototype.toWellFormed` (ES2024, beyond this project's lib): lone surrogates → U+FFFD. */
const toWellFormed = (s: string): string =>
  s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');

/** Any sequence of UTF-16 code units, lone surrogates included. */
const utf16 = fc
  .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 40 })
  .map((codes) => String.fromCharCode(...codes));

/** Any input an untrusted peer could hand over: text, bytes, JSON values, JS oddities. */
const anyInput = fc.oneof(
  fc.string({ unit: 'binary' }),
  utf16,
  fc.string({ unit: 'grapheme' }),
  fc.uint8Array({ maxLength: 256 }),
  fc.jsonValue(),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.jsonValue().map((v) => new TextEncoder().encode(JSON.stringify(v))),
  fc.anything(),
);

/** Objects shaped like add requests, with every field possibly of the wrong kind. */
const fuzzValue = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.string({ maxLength: 70 }),
  fc.constantFrom('scsi', 'virtio', 'sata', '', 'none', 'All', 'a'.repeat(64)),
  fc.integer(),
  fc.boolean(),
  fc.jsonValue({ maxDepth: 2 }),
);
const addLike = fc.record(
  {
    name: fuzzValue,
    disk: fc.oneof(
      fuzzValue,
      fc.record(
        {
          name: fuzzValue,
          disk: fc.oneof(fuzzValue, fc.record({ bus: fuzzValue }, { requiredKeys: [] })),
          lun: fc.oneof(fuzzValue, fc.record({ bus: fuzzValue }, { requiredKeys: [] })),
          cdrom: fuzzValue,
          serial: fuzzValue,
          cache: fuzzValue,
          io: fuzzValue,
          errorPolicy: fuzzValue,
          bootOrder: fuzzValue,
          dedicatedIOThread: fuzzValue,
        },
        { requiredKeys: [] },
      ),
    ),
    volumeSource: fc.oneof(
      fuzzValue,
      fc.record(
        {
          persistentVolumeClaim: fc.oneof(
            fuzzValue,
            fc.record({ claimName: fuzzValue, readOnly: fuzzValue }, { requiredKeys: [] }),
          ),
          dataVolume: fc.oneof(fuzzValue, fc.record({ name: fuzzValue }, { requiredKeys: [] })),
        },
        { requiredKeys: [] },
      ),
    ),
    dryRun: fuzzValue,
  },
  { requiredKeys: [] },
);

const targets = fc.constantFrom(
  [undefined, undefined],
  [vmi(), undefined],
  [vmi(withHotplugPVC('a', 'a')), undefined],
  [undefined, vm(withHotplugPVC('b'))],
  [{ metadata: {}, spec: {} }, undefined],
  [undefined, { metadata: {}, spec: {} }],
) as fc.Arbitrary<[never, never]>;

function expectTyped(
  result: { ok: boolean; error?: unknown },
  errorClass: abstract new (...args: never[]) => Error,
): void {
  if (!result.ok) expect(result.error).toBeInstanceOf(errorClass);
}

describe('never throws an untyped error', () => {
  it('decodeWorkItem and decodeEvent, for any input', () => {
    fc.assert(
      fc.property(anyInput, (input) => {
        expectTyped(decodeWorkItem(input as Uint8Array), MalformedMessageError);
        expectTyped(decodeEvent(input as Uint8Array), MalformedMessageError);
      }),
      RUNS,
    );
  });

  it('decodeEvent, for envelopes with fuzzed fields', () => {
    const base = buildEvent({
      namespace: 'ns',
      vmi: 'vm',
      volume: 'vol',
      type: 'ready',
      stage: Stage.DomainUpdater,
      id: 'e1',
      data: { operationId: 'op', operation: 'plug', vmiUID: 'uid', target: 'sda' },
    });
    fc.assert(
      fc.property(
        fc.constantFrom(...Object.keys(base), ...Object.keys(base.data).map((k) => `data.${k}`)),
        fuzzValue,
        fc.constantFrom(...EVENT_TYPES),
        (field, value, type) => {
          const event = JSON.parse(JSON.stringify(base)) as Record<string, Record<string, unknown>>;
          event.type = `io.plugline.volume.${type}` as never;
          if (field.startsWith('data.')) event.data![field.slice(5)] = value;
          else event[field] = value as never;
          expectTyped(decodeEvent(JSON.stringify(event)), MalformedMessageError);
        },
      ),
      RUNS,
    );
  });

  it('parseWorkSubject and parseEventSubject, for any input and for near-subjects', () => {
    const token = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom('_', '*', '>', '', '_2e', 'ns', ...STAGES),
    );
    const nearSubject = fc
      .array(token, { minLength: 0, maxLength: 9 })
      .chain((tokens) =>
        fc.constantFrom(
          ['plugline', 'v1', 'work', ...tokens].join('.'),
          ['plugline', 'v1', 'events', ...tokens].join('.'),
        ),
      );
    fc.assert(
      fc.property(fc.oneof(anyInput, nearSubject), (subject) => {
        expectTyped(parseWorkSubject(subject as string), MalformedMessageError);
        expectTyped(parseEventSubject(subject as string), MalformedMessageError);
      }),
      RUNS,
    );
  });

  it('validateAddVolume and validateRemoveVolume, for any input and any target', () => {
    fc.assert(
      fc.property(fc.oneof(anyInput, addLike), targets, (body, [vmiTarget, vmTarget]) => {
        expectTyped(validateAddVolume(body, vmiTarget, vmTarget), InvalidRequestError);
        expectTyped(validateRemoveVolume(body, vmiTarget, vmTarget), InvalidRequestError);
        expectTyped(
          validateHotplugDisk((body as { disk?: unknown } | null)?.disk),
          InvalidRequestError,
        );
      }),
      RUNS,
    );
  });

  it('addVolumeOptionsFromFlags, for any flag values', () => {
    const flag = fc.option(fc.string({ maxLength: 70 }), { nil: undefined });
    fc.assert(
      fc.property(
        fc.record({
          volumeName: fc.string({ maxLength: 70 }),
          diskName: flag,
          serial: flag,
          cache: fc.option(fc.constantFrom('none', 'writeback', 'unsafe', ''), { nil: undefined }),
          diskType: fc.option(fc.constantFrom('disk', 'lun', 'cdrom'), { nil: undefined }),
          bus: fc.option(fc.constantFrom('scsi', 'virtio', 'sata'), { nil: undefined }),
          dryRun: fc.option(fc.boolean(), { nil: undefined }),
          source: fc.constantFrom('pvc' as const, 'dataVolume' as const),
        }),
        (flags) => {
          const result = addVolumeOptionsFromFlags(flags);
          expectTyped(result, InvalidRequestError);
          // Whatever it builds, the server-side rules accept.
          if (result.ok) expect(validateAddVolume(result.value).ok).toBe(true);
        },
      ),
      RUNS,
    );
  });

  it('decodeToken, for any input', () => {
    fc.assert(
      fc.property(anyInput, (input) => {
        const decoded = decodeToken(input as string);
        expect(decoded === undefined || typeof decoded === 'string').toBe(true);
      }),
      RUNS,
    );
  });
});

describe('round trips', () => {
  it('decodeToken(encodeToken(s)) === s for any well-formed string', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' }), utf16),
        (s) => {
          fc.pre(toWellFormed(s) === s);
          const token = encodeToken(s);
          expect(token).toMatch(/^[a-z0-9_-]*$/);
          expect(decodeToken(token)).toBe(s);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a string with a lone surrogate encodes as its well-formed form (U+FFFD)', () => {
    fc.assert(
      fc.property(utf16, (s) => {
        expect(decodeToken(encodeToken(s))).toBe(toWellFormed(s));
      }),
      RUNS,
    );
  });

  const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
  const subdomain = fc
    .array(label, { minLength: 1, maxLength: 4 })
    .map((labels) => labels.join('.'))
    .filter((s) => s.length <= 253);

  it('work and event subjects parse back to what built them', () => {
    fc.assert(
      fc.property(
        fc.record({ namespace: label, vmi: subdomain, volume: label }),
        fc.constantFrom(...STAGES),
        fc.option(subdomain, { nil: undefined }),
        fc.constantFrom(...EVENT_TYPES),
        (key, stage, node, type) => {
          expect(parseWorkSubject(workSubject({ ...key, stage, node }))).toEqual({
            ok: true,
            value: { ...key, stage, node },
          });
          expect(parseEventSubject(eventSubject(key, type))).toEqual({
            ok: true,
            value: { ...key, type },
          });
        },
      ),
      RUNS,
    );
  });

  it('a built event decodes to itself', () => {
    fc.assert(
      fc.property(
        label,
        subdomain,
        label,
        fc.constantFrom(...STAGES),
        (namespace, vmiName, volume, stage) => {
          const event = buildEvent({
            namespace,
            vmi: vmiName,
            volume,
            type: 'attached-to-node',
            stage,
            id: 'e-1',
            data: {
              operationId: 'op-1',
              operation: 'plug',
              vmiUID: 'uid-1',
              node: 'node-01',
              attachPod: { name: 'hp-volume-abcde', uid: 'pod-uid' },
            },
          });
          expect(decodeEvent(encodeMessage(event))).toEqual({ ok: true, value: event });
        },
      ),
      RUNS,
    );
  });
});
