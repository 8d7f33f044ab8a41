import { NODE_STAGES, type Stage } from '@plugline/contracts';

/** How a hop of section 9 hands an item on (see hop-stage.ts). */
export const HopVariant = {
  Core: 'core',
  JetStream: 'jetstream',
  Exchanges: 'exchanges',
  Runtime: 'runtime',
} as const;
export type HopVariant = (typeof HopVariant)[keyof typeof HopVariant];

/**
 * The work-queue stream of the `jetstream` and `exchanges` variants: one subject, and one
 * consumer, per hop (and one no one consumes for the facts of `exchanges`).
 */
export const HOP_STREAM = 'BENCH_HOPS';

/** The node the `runtime` variant's node stages run on. */
export const HOP_NODE = 'node-1';

/** What reaches hop `hop` (the driver listens on the one past the last). */
export function hopSubject(variant: HopVariant, hop: number): string {
  return `bench.hops.${variant}.${hop}`;
}

/** Where the `exchanges` variant publishes its facts. */
export function hopFactSubject(variant: HopVariant): string {
  return `bench.hops.${variant}.facts`;
}

export function hopConsumer(hop: number): string {
  return `hop-${hop}`;
}

/** A node stage's node, for its work items and its consumer. */
export function nodeOf(stage: Stage): { node?: string } {
  return NODE_STAGES.has(stage) ? { node: HOP_NODE } : {};
}
