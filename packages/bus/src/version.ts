import { UnsupportedFeatureError } from './errors.js';

/** A parsed `major.minor.patch` server version. */
export interface ServerVersion {
  major: number;
  minor: number;
  patch: number;
  /** As the server reported it, e.g. `2.9.10`. */
  text: string;
}

/**
 * JetStream features newer than nats-server 2.9, with the version that introduced them. 2.9
 * rejects the 2.10 ones with an error, but **silently ignores** the 2.11 TTL ones, which is why
 * they must be refused before use.
 */
export const ServerFeature = {
  MultipleFilterSubjects: 'multiple-filter-subjects',
  SubjectTransform: 'subject-transform',
  StreamMetadata: 'stream-metadata',
  Compression: 'compression',
  KvMultiKeyWatch: 'kv-multi-key-watch',
  PerMessageTtl: 'per-message-ttl',
  KvPerKeyTtl: 'kv-per-key-ttl',
  KvMarkerTtl: 'kv-marker-ttl',
  ConsumerPause: 'consumer-pause',
  /** `+TERM <reason>`: 2.9 does not parse the reason and ignores the whole term. */
  TermReason: 'term-reason',
} as const;
export type ServerFeature = (typeof ServerFeature)[keyof typeof ServerFeature];

/** Minimum server version of each feature. */
export const FEATURE_MIN_VERSION: Readonly<Record<ServerFeature, string>> = {
  [ServerFeature.MultipleFilterSubjects]: '2.10.0',
  [ServerFeature.SubjectTransform]: '2.10.0',
  [ServerFeature.StreamMetadata]: '2.10.0',
  [ServerFeature.Compression]: '2.10.0',
  [ServerFeature.KvMultiKeyWatch]: '2.10.0',
  [ServerFeature.PerMessageTtl]: '2.11.0',
  [ServerFeature.KvPerKeyTtl]: '2.11.0',
  [ServerFeature.KvMarkerTtl]: '2.11.0',
  [ServerFeature.ConsumerPause]: '2.11.0',
  [ServerFeature.TermReason]: '2.10.0',
};

export function parseServerVersion(text: string): ServerVersion {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(text.trim());
  if (!m) return { major: 0, minor: 0, patch: 0, text };
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), text };
}

export function compareVersions(a: ServerVersion, b: ServerVersion): number {
  return a.major - b.major || a.minor - b.minor || a.patch - b.patch;
}

/** True when the server at `version` has `feature`. */
export function supportsFeature(version: ServerVersion | string, feature: ServerFeature): boolean {
  const v = typeof version === 'string' ? parseServerVersion(version) : version;
  return compareVersions(v, parseServerVersion(FEATURE_MIN_VERSION[feature])) >= 0;
}

/**
 * Throws {@link UnsupportedFeatureError} naming the first feature the server lacks. Call it before
 * using anything newer than 2.9, so a 2.9 server fails loudly instead of ignoring an option.
 */
export function requireFeatures(
  version: ServerVersion | string,
  ...features: readonly ServerFeature[]
): void {
  const v = typeof version === 'string' ? parseServerVersion(version) : version;
  for (const feature of features) {
    if (!supportsFeature(v, feature)) {
      throw new UnsupportedFeatureError(feature, FEATURE_MIN_VERSION[feature], v.text);
    }
  }
}

/** Stream and consumer config fields newer than 2.9, by the feature they belong to. */
const STREAM_FIELDS: Readonly<Record<string, ServerFeature>> = {
  metadata: ServerFeature.StreamMetadata,
  compression: ServerFeature.Compression,
  subject_transform: ServerFeature.SubjectTransform,
  allow_msg_ttl: ServerFeature.PerMessageTtl,
  subject_delete_marker_ttl: ServerFeature.KvMarkerTtl,
};
const CONSUMER_FIELDS: Readonly<Record<string, ServerFeature>> = {
  filter_subjects: ServerFeature.MultipleFilterSubjects,
  metadata: ServerFeature.StreamMetadata,
  pause_until: ServerFeature.ConsumerPause,
};

function checkFields(
  version: ServerVersion,
  config: object,
  fields: Readonly<Record<string, ServerFeature>>,
): void {
  for (const [field, feature] of Object.entries(fields)) {
    const value = (config as Record<string, unknown>)[field];
    const set =
      value !== undefined &&
      value !== null &&
      value !== false &&
      value !== 'none' &&
      value !== 0 &&
      !(Array.isArray(value) && value.length === 0);
    if (set) requireFeatures(version, feature);
  }
}

/**
 * Throws {@link UnsupportedFeatureError} when a stream config sets a field the server does not
 * know (2.9 ignores some of them silently, e.g. `allow_msg_ttl`).
 */
export function checkStreamConfig(version: ServerVersion, config: object): void {
  checkFields(version, config, STREAM_FIELDS);
}

/** As {@link checkStreamConfig}, for consumer configs (`filter_subjects`, `metadata`, …). */
export function checkConsumerConfig(version: ServerVersion, config: object): void {
  checkFields(version, config, CONSUMER_FIELDS);
}
