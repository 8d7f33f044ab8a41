import { MalformedMessageError } from './errors.js';
import { isName } from './names.js';

/** The four stages of the chain, as subject tokens and consumer names. */
export const Stage = {
  SpecWatcher: 'spec-watcher',
  AttachmentOrchestrator: 'attachment-orchestrator',
  NodeMounter: 'node-mounter',
  DomainUpdater: 'domain-updater',
} as const;
export type Stage = (typeof Stage)[keyof typeof Stage];
export const STAGES: readonly Stage[] = Object.values(Stage);

/** Stages that run one per node and so take work on their node's subject. */
export const NODE_STAGES: ReadonlySet<Stage> = new Set([Stage.NodeMounter, Stage.DomainUpdater]);

export const SUBJECT_ROOT = 'plugline.v1';
export const WORK_PREFIX = `${SUBJECT_ROOT}.work`;
export const EVENTS_PREFIX = `${SUBJECT_ROOT}.events`;
export const DEAD_LETTER_PREFIX = `${SUBJECT_ROOT}.dlq`;

/**
 * The subjects of the placeholders that move a stream's sequence past a consumer a crash left it
 * behind (the bus package's `SequenceGap`): in their stream, never a work item or an event (one
 * token after the prefix, never the encoding of a name), taken by no stage, skipped by the status
 * projector and event followers.
 */
export const WORK_PLACEHOLDER_SUBJECT = `${WORK_PREFIX}._gap`;
export const EVENTS_PLACEHOLDER_SUBJECT = `${EVENTS_PREFIX}._gap`;

/** The token standing for "no node" (cluster-wide stages); never the encoding of a name. */
export const NO_NODE = '_';

/**
 * Encodes a name as one NATS subject token. `[a-z0-9-]` pass through; every other UTF-8 byte
 * becomes `_xx` (lowercase hex). `my.vm` → `my_2evm`. The result never contains `.`, `*`, `>`,
 * whitespace, and is never `_` alone, so it is a safe single token and decodes back exactly.
 */
export function encodeToken(name: string): string {
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    const isSafe =
      (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) || byte === 0x2d;
    out += isSafe ? String.fromCharCode(byte) : `_${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

const ENCODED_TOKEN = /^(?:[a-z0-9-]|_[0-9a-f]{2})+$/;

/** Decodes a token made by `encodeToken`; undefined for anything it could not have made. */
export function decodeToken(token: string): string | undefined {
  if (typeof token !== 'string') return undefined;
  // `encodeToken('')` is `''`; an empty token is never a valid subject token, but decoding must
  // invert encoding, and the subject parsers reject empty names on their own.
  if (token === '') return '';
  if (!ENCODED_TOKEN.test(token)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < token.length;) {
    if (token[i] === '_') {
      bytes.push(Number.parseInt(token.slice(i + 1, i + 3), 16));
      i += 3;
    } else {
      bytes.push(token.charCodeAt(i));
      i += 1;
    }
  }
  const decoded = Buffer.from(bytes).toString('utf8');
  // Reject non-canonical encodings (a safe byte written as _xx, invalid UTF-8) so one name has one token.
  return encodeToken(decoded) === token ? decoded : undefined;
}

/** What a message is about: one volume of one VMI. */
export interface VolumeKey {
  namespace: string;
  vmi: string;
  volume: string;
}

export interface WorkAddress extends VolumeKey {
  stage: Stage;
  /** The node for node stages; undefined for cluster-wide stages. */
  node?: string | undefined;
}

/** `plugline.v1.work.<stage>.<node|_>.<ns>.<vmi>.<volume>` */
export function workSubject(address: WorkAddress): string {
  const node = address.node === undefined ? NO_NODE : encodeToken(address.node);
  return [
    WORK_PREFIX,
    address.stage,
    node,
    encodeToken(address.namespace),
    encodeToken(address.vmi),
    encodeToken(address.volume),
  ].join('.');
}

/** The filter a stage's durable consumer uses: its stage and, for node agents, its node. */
export function workFilter(stage: Stage, node?: string): string {
  const nodeToken = node === undefined ? '*' : encodeToken(node);
  return `${WORK_PREFIX}.${stage}.${nodeToken}.>`;
}

/** `plugline.v1.events.<ns>.<vmi>.<volume>.<type>` */
export function eventSubject(key: VolumeKey, type: string): string {
  return [
    EVENTS_PREFIX,
    encodeToken(key.namespace),
    encodeToken(key.vmi),
    encodeToken(key.volume),
    type,
  ].join('.');
}

/** A filter for the events of one VMI (or all VMIs of a namespace, or everything). */
export function eventFilter(
  scope: { namespace?: string; vmi?: string; volume?: string } = {},
): string {
  const ns = scope.namespace === undefined ? '*' : encodeToken(scope.namespace);
  const vmi = scope.vmi === undefined ? '*' : encodeToken(scope.vmi);
  const vol = scope.volume === undefined ? '*' : encodeToken(scope.volume);
  return `${EVENTS_PREFIX}.${ns}.${vmi}.${vol}.*`;
}

/** `plugline.v1.dlq.<stage>` — where a stage's malformed messages go, with the reason in headers. */
export function deadLetterSubject(stage: string): string {
  return `${DEAD_LETTER_PREFIX}.${encodeToken(stage)}`;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: MalformedMessageError };

function bad<T>(message: string): ParseResult<T> {
  return { ok: false, error: new MalformedMessageError('invalid-subject', message) };
}

function decodeKey(
  nsToken: string | undefined,
  vmiToken: string | undefined,
  volToken: string | undefined,
): ParseResult<VolumeKey> {
  const namespace = nsToken === undefined ? undefined : decodeToken(nsToken);
  const vmi = vmiToken === undefined ? undefined : decodeToken(vmiToken);
  const volume = volToken === undefined ? undefined : decodeToken(volToken);
  if (!isName(namespace, 'label'))
    return bad(`namespace token ${JSON.stringify(nsToken)} is invalid`);
  if (!isName(vmi, 'subdomain')) return bad(`vmi token ${JSON.stringify(vmiToken)} is invalid`);
  if (!isName(volume, 'label')) return bad(`volume token ${JSON.stringify(volToken)} is invalid`);
  return { ok: true, value: { namespace, vmi, volume } };
}

/** Parses and validates a work subject. Never throws. */
export function parseWorkSubject(subject: string): ParseResult<WorkAddress> {
  if (typeof subject !== 'string') return bad('subject must be a string');
  const tokens = subject.split('.');
  const prefix = WORK_PREFIX.split('.');
  if (tokens.length !== prefix.length + 5 || prefix.some((t, i) => tokens[i] !== t)) {
    return bad(`${JSON.stringify(subject)} is not a work subject`);
  }
  const [stage, nodeToken, ns, vmi, vol] = tokens.slice(prefix.length);
  if (!STAGES.includes(stage as Stage)) return bad(`unknown stage ${JSON.stringify(stage)}`);
  let node: string | undefined;
  if (nodeToken !== NO_NODE) {
    node = nodeToken === undefined ? undefined : decodeToken(nodeToken);
    if (!isName(node, 'subdomain'))
      return bad(`node token ${JSON.stringify(nodeToken)} is invalid`);
  }
  const key = decodeKey(ns, vmi, vol);
  if (!key.ok) return key;
  return { ok: true, value: { ...key.value, stage: stage as Stage, node } };
}

/** Parses and validates an event subject. Never throws. */
export function parseEventSubject(subject: string): ParseResult<VolumeKey & { type: string }> {
  if (typeof subject !== 'string') return bad('subject must be a string');
  const tokens = subject.split('.');
  const prefix = EVENTS_PREFIX.split('.');
  if (tokens.length !== prefix.length + 4 || prefix.some((t, i) => tokens[i] !== t)) {
    return bad(`${JSON.stringify(subject)} is not an event subject`);
  }
  const [ns, vmi, vol, type] = tokens.slice(prefix.length);
  const key = decodeKey(ns, vmi, vol);
  if (!key.ok) return key;
  if (type === undefined || !/^[a-z][a-z-]*$/.test(type))
    return bad(`event type token ${JSON.stringify(type)} is invalid`);
  return { ok: true, value: { ...key.value, type } };
}
