import {
  DEAD_LETTER_PREFIX,
  encodeToken,
  EVENTS_PREFIX,
  NODE_STAGES,
  WORK_PREFIX,
  type Stage,
} from '@plugline/contracts';

/** The JetStream streams of ARCHITECTURE.md §2. */
export const StreamName = {
  Work: 'PLUGLINE_WORK',
  Events: 'PLUGLINE_EVENTS',
  DeadLetters: 'PLUGLINE_DLQ',
} as const;
export type StreamName = (typeof StreamName)[keyof typeof StreamName];

export const STREAM_SUBJECTS: Readonly<Record<StreamName, string>> = {
  [StreamName.Work]: `${WORK_PREFIX}.>`,
  [StreamName.Events]: `${EVENTS_PREFIX}.>`,
  [StreamName.DeadLetters]: `${DEAD_LETTER_PREFIX}.>`,
};

/**
 * The durable consumer of a stage: `<stage>`, or `<stage>-<encoded node>` for node stages (each
 * node agent has its own consumer filtered on its node token).
 */
export function durableName(stage: Stage, node?: string): string {
  if (NODE_STAGES.has(stage) && node === undefined) {
    throw new RangeError(`stage ${stage} runs per node; give its node`);
  }
  return node === undefined ? stage : `${stage}-${encodeToken(node)}`;
}

/** KV bucket with the persisted machine snapshots of a stage. */
export function snapshotBucket(stage: Stage): string {
  return `plugline-${stage}`;
}

/** KV bucket with the unit leases of a stage. */
export function leaseBucket(stage: Stage): string {
  return `plugline-${stage}-leases`;
}

/** A unit key (any string, e.g. `ns/vmi/volume`) as a valid KV key. */
export function kvKey(unitKey: string): string {
  return encodeToken(unitKey);
}
