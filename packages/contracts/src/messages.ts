import { MalformedMessageError } from './errors.js';
import { isName } from './names.js';
import type { ParseResult, Stage, VolumeKey } from './subjects.js';
import { STAGES } from './subjects.js';

/** Largest message a stage accepts; anything bigger is dead-lettered as `oversized`. */
export const MAX_MESSAGE_BYTES = 64 * 1024;

/** Every fact a stage can establish about a volume. The event subject's last token. */
export const EventType = {
  Requested: 'requested',
  UnplugRequested: 'unplug-requested',
  Pending: 'pending',
  Bound: 'bound',
  ImportProgress: 'import-progress',
  AttachedToNode: 'attached-to-node',
  MountedToPod: 'mounted-to-pod',
  Ready: 'ready',
  DetachedFromDomain: 'detached-from-domain',
  UnmountedFromPod: 'unmounted-from-pod',
  Detaching: 'detaching',
  Released: 'released',
  Removed: 'removed',
  Failed: 'failed',
} as const;
export type EventType = (typeof EventType)[keyof typeof EventType];
export const EVENT_TYPES: readonly EventType[] = Object.values(EventType);

export const CLOUDEVENT_TYPE_PREFIX = 'io.plugline.volume.';

/** The direction an operation drives a volume. */
export type OperationKind = 'plug' | 'unplug';

/** The facts carried by an event. Optional fields appear where the stage knows them. */
export interface EventData {
  /** Groups every event of one add or remove; chosen by spec-watcher. */
  operationId: string;
  operation: OperationKind;
  vmiUID: string;
  /** Which stage established this fact. */
  stage: Stage;
  /** The KubeVirt phase this fact implies, when it implies one. */
  phase?: string;
  reason?: string;
  message?: string;
  node?: string;
  attachPod?: { name: string; uid: string };
  target?: string;
  /** Time the stage spent on this step, in milliseconds. */
  durationMs?: number;
  attempt?: number;
  /** Import progress of a DataVolume, e.g. `45.10%`. */
  progress?: string;
  /** Extra facts a consumer may show (PVC info, volume mode); never trusted for decisions. */
  details?: Record<string, unknown>;
  /**
   * Set on a fact stated in a resync round (see {@link resyncRoundOf}): the round. It makes the
   * restatement a message of its own (see {@link eventMsgId}).
   */
  resync?: string;
}

/** A CloudEvents 1.0 JSON envelope. */
export interface VolumeEvent {
  specversion: '1.0';
  id: string;
  /** `plugline/<stage>` (the emitting stage). */
  source: string;
  /** `io.plugline.volume.<type>` */
  type: string;
  /** `<namespace>/<vmi>/<volume>` */
  subject: string;
  /** RFC 3339 timestamp. */
  time: string;
  datacontenttype: 'application/json';
  /** W3C trace context, as the CloudEvents distributed-tracing extension. */
  traceparent?: string;
  tracestate?: string;
  data: EventData;
}

/** A nudge for one stage about one volume. It names the unit; the handler re-reads the truth. */
export interface WorkItem {
  v: 1;
  stage: Stage;
  namespace: string;
  vmi: string;
  vmiUID: string;
  volume: string;
  /** The node for node stages. */
  node?: string;
  operationId: string;
  operation: OperationKind;
  /** What prompted this nudge: an event type, `resync`, or `retry`. */
  cause: string;
  /** The VMI generation the sender saw, for logs and staleness checks. */
  observedGeneration?: number;
  issuedAt: string;
  /**
   * The resync round this nudge continues (see {@link resyncRoundOf}): set on the work a stage
   * sends while handling a resync's nudge, so the stages after it state again what they stated.
   */
  resync?: string;
}

/**
 * The cause of a work item that asks its stage to report again what it already reported: the
 * spec-watcher's periodic resync of a volume not at its desired end. A stage that would stay
 * silent because it already published a fact of the operation publishes it again, so a status
 * that lost the fact (or never showed it) converges.
 */
export const RESYNC_CAUSE = 'resync';

/**
 * The resync round a work item belongs to: the `issuedAt` of a resync's nudge (cause
 * {@link RESYNC_CAUSE}), carried on (`resync`) by the work each stage sends while handling it.
 * Undefined outside a round. Inside one, a stage states again what it already stated, and the
 * runtime marks those facts with the round (`data.resync`), so the event stream's duplicate window
 * does not drop them (see {@link eventMsgId}): a status that lost the facts to a crash, or had its
 * entry removed, is rebuilt in one round, every stage of the chain in turn.
 */
export function resyncRoundOf(item: WorkItem): string | undefined {
  if (item.resync !== undefined) return item.resync;
  // In `toISOString`'s form, whatever form the (validated) `issuedAt` came in: it goes into ids.
  return item.cause === RESYNC_CAUSE ? new Date(item.issuedAt).toISOString() : undefined;
}

export function eventTypeOf(event: VolumeEvent): EventType {
  return event.type.slice(CLOUDEVENT_TYPE_PREFIX.length) as EventType;
}

/** W3C trace context's `traceparent`: version, trace id, parent span id, flags. */
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The id of the trace an event was published in; undefined when no traces are exported. */
export function traceIdOf(event: VolumeEvent): string | undefined {
  return TRACEPARENT.exec(event.traceparent ?? '')?.[1];
}

export function keyOfEvent(event: VolumeEvent): VolumeKey {
  const [namespace = '', vmi = '', volume = ''] = event.subject.split('/');
  return { namespace, vmi, volume };
}

const OPERATION_TIME_WIDTH = 10; // base-36 milliseconds stay 10 digits wide until the year 5188
const OPERATION_TAIL_WIDTH = 8;
const ISSUED_OPERATION_ID = /^[0-9a-z]{10}-[0-9a-z]{8}$/;

/**
 * A new operation id issued at `now` (the spec-watcher issues them): fixed-width base-36
 * milliseconds, then a random tail, so ids sort by the time they were issued. `random` returns
 * values in [0, 1).
 */
export function newOperationId(now: Date, random: () => number = Math.random): string {
  const time = now.getTime().toString(36).padStart(OPERATION_TIME_WIDTH, '0');
  let tail = '';
  for (let i = 0; i < OPERATION_TAIL_WIDTH; i += 1) tail += Math.floor(random() * 36).toString(36);
  return `${time}-${tail}`;
}

/**
 * Orders two operation ids: negative when `a` was issued before `b`, positive after, 0 for the
 * same id. Issued ids ({@link newOperationId}) begin with their issue time, so any stage can tell
 * an older operation on a volume from a newer one. An id a stage made up for its own nudge
 * (`reconcile-<uuid>`, `device-added-<uuid>`) names no issued operation and ranks below every
 * issued one: a fact reported under it never passes for a newer operation. (Compared as text,
 * such ids sorted after every issued id, and one fact under one made every later request on the
 * volume look older: its status never showed a re-add again.)
 */
export function compareOperationIds(a: string, b: string): number {
  if (a === b) return 0;
  const issuedA = ISSUED_OPERATION_ID.test(a);
  if (issuedA !== ISSUED_OPERATION_ID.test(b)) return issuedA ? 1 : -1;
  return a < b ? -1 : 1;
}

/**
 * `Nats-Msg-Id` of an event: a retried publish inside the duplicate window is dropped. The facts
 * a stage states again within one operation with something new are messages of their own: a
 * volume in use announced on the pod that replaced its first one (`attached-to-node`, which the
 * status must follow: dropped as a duplicate, it left the status naming a deleted pod), each new
 * import progress, a disk under another target (`ready` again after a re-add's guest let go of
 * the disk it had kept and the disk was attached afresh, under the bus the spec asks for:
 * dropped, the status named the target of a disk no longer there), and a fact stated again in a
 * resync round (`data.resync`: the status may have lost the first statement, and would wait out
 * the window, 2 minutes, to be repaired).
 */
export function eventMsgId(event: VolumeEvent): string {
  const { volume } = keyOfEvent(event);
  const base = `${event.data.vmiUID}:${volume}:${event.data.operationId}:${eventTypeOf(event)}`;
  const variant = event.data.attachPod?.uid ?? event.data.progress ?? event.data.target;
  const id = variant === undefined ? base : `${base}:${variant}`;
  return event.data.resync === undefined ? id : `${id}@resync:${event.data.resync}`;
}

/**
 * `Nats-Msg-Id` of a work item. A retried publish of the same item is dropped; a nudge issued
 * again later (a resync round, a repeated cause) is a new message, or the stage it is meant to
 * wake would not hear it until the duplicate window had passed.
 */
export function workMsgId(item: WorkItem): string {
  return `${item.vmiUID}:${item.volume}:${item.operationId}:work.${item.stage}.${item.cause}@${item.issuedAt}`;
}

export interface NewEvent extends VolumeKey {
  type: EventType;
  stage: Stage;
  data: Omit<EventData, 'stage'>;
  id: string;
  time?: Date;
  traceparent?: string;
}

export function buildEvent(input: NewEvent): VolumeEvent {
  const event: VolumeEvent = {
    specversion: '1.0',
    id: input.id,
    source: `plugline/${input.stage}`,
    type: `${CLOUDEVENT_TYPE_PREFIX}${input.type}`,
    subject: `${input.namespace}/${input.vmi}/${input.volume}`,
    time: (input.time ?? new Date()).toISOString(),
    datacontenttype: 'application/json',
    data: { ...input.data, stage: input.stage },
  };
  if (input.traceparent !== undefined) event.traceparent = input.traceparent;
  return event;
}

// ---------------------------------------------------------------------------------------------
// Decoding untrusted bytes. These never throw: every problem is a MalformedMessageError.

type Json = Record<string, unknown>;

function fail<T>(
  malformed: MalformedMessageError['malformed'],
  message: string,
  cause?: unknown,
): ParseResult<T> {
  return {
    ok: false,
    error: new MalformedMessageError(
      malformed,
      message,
      cause === undefined ? undefined : { cause },
    ),
  };
}

function parseJsonObject(bytes: Uint8Array | string): ParseResult<Json> {
  // Typed callers pass bytes or text; untyped ones (a JSON-decoded header, `any`) may not.
  if (typeof bytes !== 'string' && !(bytes instanceof Uint8Array))
    return fail('invalid-json', 'message must be bytes or a string');
  const size = typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.byteLength;
  if (size > MAX_MESSAGE_BYTES)
    return fail('oversized', `message is ${size} bytes; the limit is ${MAX_MESSAGE_BYTES}`);
  let parsed: unknown;
  try {
    const text =
      typeof bytes === 'string' ? bytes : new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    parsed = JSON.parse(text);
  } catch (err) {
    return fail('invalid-json', 'message is not valid UTF-8 JSON', err);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return fail('invalid-json', 'message is not a JSON object');
  }
  return { ok: true, value: parsed as Json };
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isShortString = (v: unknown, max = 256): v is string =>
  isString(v) && v.length > 0 && v.length <= max;
const isOptional = (v: unknown, check: (x: unknown) => boolean): boolean =>
  v === undefined || check(v);
const isTimestamp = (v: unknown): v is string =>
  isShortString(v, 64) && !Number.isNaN(Date.parse(v));
/** RFC 3339 as `Date.toISOString` writes it (strict: the value becomes part of a message id). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const isRfc3339 = (v: unknown): v is string => isTimestamp(v) && RFC3339.test(v);
const isNonNegativeInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isOperation = (v: unknown): v is OperationKind => v === 'plug' || v === 'unplug';
const isStage = (v: unknown): v is Stage => STAGES.includes(v as Stage);
const isId = (v: unknown): v is string => isShortString(v, 128) && /^[A-Za-z0-9._:-]+$/.test(v);

/** Decodes and validates a work item. Never throws. */
export function decodeWorkItem(bytes: Uint8Array | string): ParseResult<WorkItem> {
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) return parsed;
  const o = parsed.value;
  const problems: string[] = [];
  if (o.v !== 1) problems.push('v must be 1');
  if (!isStage(o.stage)) problems.push('stage is not a known stage');
  if (!isName(o.namespace, 'label')) problems.push('namespace is not a DNS-1123 label');
  if (!isName(o.vmi, 'subdomain')) problems.push('vmi is not a DNS-1123 subdomain');
  if (!isName(o.volume, 'label')) problems.push('volume is not a DNS-1123 label');
  if (!isId(o.vmiUID)) problems.push('vmiUID is missing or malformed');
  if (!isOptional(o.node, (n) => isName(n, 'subdomain')))
    problems.push('node is not a DNS-1123 subdomain');
  if (!isId(o.operationId)) problems.push('operationId is missing or malformed');
  if (!isOperation(o.operation)) problems.push('operation must be plug or unplug');
  if (!isShortString(o.cause, 64)) problems.push('cause is missing');
  if (!isOptional(o.observedGeneration, isNonNegativeInt))
    problems.push('observedGeneration must be a non-negative integer');
  if (!isTimestamp(o.issuedAt)) problems.push('issuedAt is not a timestamp');
  if (!isOptional(o.resync, isRfc3339)) problems.push('resync is not a timestamp');
  if (problems.length > 0) return fail('invalid-data', `invalid work item: ${problems.join('; ')}`);
  return { ok: true, value: o as unknown as WorkItem };
}

function eventDataProblems(d: Json): string[] {
  const problems: string[] = [];
  if (!isId(d.operationId)) problems.push('data.operationId is missing or malformed');
  if (!isOperation(d.operation)) problems.push('data.operation must be plug or unplug');
  if (!isId(d.vmiUID)) problems.push('data.vmiUID is missing or malformed');
  if (!isStage(d.stage)) problems.push('data.stage is not a known stage');
  for (const field of ['phase', 'reason', 'target', 'progress'] as const) {
    if (!isOptional(d[field], (v) => isShortString(v, 64)))
      problems.push(`data.${field} must be a short string`);
  }
  if (!isOptional(d.message, (v) => isString(v) && v.length <= 4096))
    problems.push('data.message must be a string');
  if (!isOptional(d.node, (n) => isName(n, 'subdomain')))
    problems.push('data.node is not a DNS-1123 subdomain');
  if (!isOptional(d.durationMs, (v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) {
    problems.push('data.durationMs must be a non-negative number');
  }
  if (!isOptional(d.attempt, isNonNegativeInt))
    problems.push('data.attempt must be a non-negative integer');
  if (!isOptional(d.resync, isRfc3339)) problems.push('data.resync is not a timestamp');
  const pod = d.attachPod as Json | undefined;
  if (
    pod !== undefined &&
    (typeof pod !== 'object' ||
      pod === null ||
      !isName(pod.name, 'subdomain') ||
      !isShortString(pod.uid, 128))
  ) {
    problems.push('data.attachPod must have a pod name and uid');
  }
  if (!isOptional(d.details, (v) => typeof v === 'object' && v !== null && !Array.isArray(v))) {
    problems.push('data.details must be an object');
  }
  return problems;
}

function envelopeProblems(o: Json): string[] {
  const problems: string[] = [];
  if (o.specversion !== '1.0') problems.push('specversion must be "1.0"');
  if (!isShortString(o.id)) problems.push('id is missing');
  if (!isShortString(o.source)) problems.push('source is missing');
  if (!isTimestamp(o.time)) problems.push('time is not a timestamp');
  if (o.datacontenttype !== 'application/json')
    problems.push('datacontenttype must be application/json');
  if (!isOptional(o.traceparent, (v) => isString(v) && TRACEPARENT.test(v))) {
    problems.push('traceparent is malformed');
  }
  const parts = isString(o.subject) ? o.subject.split('/') : [];
  if (
    parts.length !== 3 ||
    !isName(parts[0], 'label') ||
    !isName(parts[1], 'subdomain') ||
    !isName(parts[2], 'label')
  ) {
    problems.push('subject must be <namespace>/<vmi>/<volume>');
  }
  return problems;
}

/**
 * Data fields each event type must carry, beyond the common ones: a fact is only useful with
 * what it establishes (where the volume is attached, which target the guest sees, why it failed).
 */
export const EVENT_DATA_REQUIREMENTS: Readonly<Record<EventType, readonly (keyof EventData)[]>> = {
  requested: [],
  'unplug-requested': [],
  pending: [],
  bound: [],
  'import-progress': ['progress'],
  'attached-to-node': ['node', 'attachPod'],
  'mounted-to-pod': ['node'],
  ready: ['target'],
  'detached-from-domain': [],
  'unmounted-from-pod': [],
  detaching: [],
  released: [],
  removed: [],
  failed: ['reason', 'message'],
};

function typeDataProblems(type: EventType, d: Json): string[] {
  const problems: string[] = [];
  for (const field of EVENT_DATA_REQUIREMENTS[type]) {
    const value = d[field];
    if (value === undefined || value === '') problems.push(`data.${field} is required`);
  }
  return problems;
}

/** Decodes and validates a CloudEvents envelope of a known type. Never throws. */
export function decodeEvent(bytes: Uint8Array | string): ParseResult<VolumeEvent> {
  const parsed = parseJsonObject(bytes);
  if (!parsed.ok) return parsed;
  const o = parsed.value;
  const problems = envelopeProblems(o);
  if (problems.length > 0)
    return fail('invalid-envelope', `invalid event envelope: ${problems.join('; ')}`);
  const type =
    isString(o.type) && o.type.startsWith(CLOUDEVENT_TYPE_PREFIX)
      ? o.type.slice(CLOUDEVENT_TYPE_PREFIX.length)
      : undefined;
  if (!EVENT_TYPES.includes(type as EventType))
    return fail('unknown-type', `unknown event type ${JSON.stringify(o.type)}`);
  if (o.data === null || typeof o.data !== 'object' || Array.isArray(o.data))
    return fail('invalid-data', 'data must be an object');
  const dataProblems = eventDataProblems(o.data as Json);
  if (dataProblems.length === 0)
    dataProblems.push(...typeDataProblems(type as EventType, o.data as Json));
  if (dataProblems.length > 0)
    return fail('invalid-data', `invalid ${type} event: ${dataProblems.join('; ')}`);
  return { ok: true, value: o as unknown as VolumeEvent };
}

/** Encodes a message as UTF-8 JSON bytes. */
export function encodeMessage(message: WorkItem | VolumeEvent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(message));
}
