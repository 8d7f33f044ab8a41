import { assign, fromCallback, fromPromise, setup } from 'xstate';
import type { ActorRefFrom, SnapshotFrom } from 'xstate';

import {
  InvalidNameError,
  PathEscapeError,
  PluglineError,
  TerminalError,
} from '@plugline/contracts';

import type { VolumeMode } from './paths.js';

/**
 * The node-mounter's machine, one per volume on a node:
 * `unmounted → locatingSource → mounting → mounted → unmounting → unmounted`, with `retrying`
 * (backoff) from every active state and `failed` for errors retrying cannot fix.
 *
 * - The desired direction is data (`desired`), set by the last PLUG / UNPLUG; an effect in flight
 *   is never abandoned: when it ends, the machine goes where `desired` says.
 * - UNPLUG acts only once the domain has released the disk (`domainReleased`, from the UNPLUG
 *   event or the machine's input). Until then the volume stays mounted and is re-plugged on retry.
 * - The retry deadline is kept in context (`retryAt`), so a restored snapshot waits only for what
 *   is left; the `backoff` actor reports the deadline it chose (`RETRY_SCHEDULED`) and fires
 *   `RETRY` when it has passed. No `after` timers.
 * - Effects are the named actors `locateSource`, `mount`, `unmount`, `backoff`; this file only
 *   declares them (placeholders that fail), implementations are provided with `.provide()`.
 */

export interface VolumeIdentity {
  readonly vmiUID: string;
  readonly launcherUID: string;
  readonly attachPodUID: string;
  readonly volume: string;
  readonly pvName: string;
  readonly mode: VolumeMode;
}

/** Where the volume was found in the attachment pod and where it goes in the launcher. */
export interface LocatedSource {
  readonly source: string;
  readonly target: string;
}

/** What a completed mount / unmount established (the facts of `mounted-to-pod` / `unmounted-from-pod`). */
export interface EffectFacts {
  readonly changed: boolean;
  readonly target?: string;
}

export interface ErrorSummary {
  readonly name: string;
  readonly reason: string;
  readonly message: string;
}

export type Direction = 'mounted' | 'unmounted';

export interface MounterContext {
  readonly volume: VolumeIdentity;
  readonly desired: Direction;
  readonly domainReleased: boolean;
  readonly located: LocatedSource | null;
  readonly facts: EffectFacts | null;
  /** Failures since the last success. */
  readonly attempt: number;
  /** Epoch ms when the next retry is due; null until the backoff actor has chosen it. */
  readonly retryAt: number | null;
  readonly lastError: ErrorSummary | null;
}

export interface MounterInput {
  readonly volume: VolumeIdentity;
  /** Whether the domain has already let go of the disk (e.g. it was never attached). */
  readonly domainReleased?: boolean;
}

export type MounterEvent =
  | { readonly type: 'PLUG' }
  | { readonly type: 'UNPLUG'; readonly domainReleased?: boolean }
  | { readonly type: 'RETRY_SCHEDULED'; readonly retryAt: number }
  | { readonly type: 'RETRY' };

export interface BackoffInput {
  readonly attempt: number;
  /** A deadline chosen earlier (restored snapshot); null → choose one now. */
  readonly retryAt: number | null;
}

export interface LocateInput {
  readonly volume: VolumeIdentity;
}

export interface MountInput {
  readonly volume: VolumeIdentity;
  readonly located: LocatedSource;
}

export interface UnmountInput {
  readonly volume: VolumeIdentity;
}

/** Pure: exponential backoff, `base · 2^(attempt-1)`, capped. */
export function backoffDelay(attempt: number, baseMs = 500, maxMs = 30_000): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  return Math.min(baseMs * 2 ** exponent, maxMs);
}

/** Pure: errors that retrying cannot fix (a path out of the root, a bad name, a wrong file kind). */
export function isTerminalError(error: unknown): boolean {
  return (
    error instanceof TerminalError ||
    error instanceof PathEscapeError ||
    error instanceof InvalidNameError
  );
}

export function summarizeError(error: unknown): ErrorSummary {
  if (error instanceof PluglineError)
    return { name: error.name, reason: error.reason, message: error.message };
  if (error instanceof Error)
    return { name: error.name, reason: 'Unknown', message: error.message };
  return { name: 'Error', reason: 'Unknown', message: String(error) };
}

function notProvided(name: string): never {
  throw new Error(`node-mounter actor ${name} is not provided`);
}

/** The error carried by an actor's error event (the machine's event union does not list those). */
function errorOf(event: unknown): unknown {
  return (event as { error?: unknown }).error;
}

export const nodeMounterMachine = setup({
  types: {
    context: {} as MounterContext,
    events: {} as MounterEvent,
    input: {} as MounterInput,
  },
  actors: {
    locateSource: fromPromise<LocatedSource, LocateInput>(() => notProvided('locateSource')),
    mount: fromPromise<EffectFacts, MountInput>(() => notProvided('mount')),
    unmount: fromPromise<EffectFacts, UnmountInput>(() => notProvided('unmount')),
    backoff: fromCallback<MounterEvent, BackoffInput>(() => notProvided('backoff')),
  },
  guards: {
    /** UNPLUG may act: the event (or, without a flag, what is known already) says the domain let go. */
    releasedByUnplug: ({ context, event }) =>
      event.type === 'UNPLUG' && (context.domainReleased || event.domainReleased === true),
    /** After an effect: the last request was UNPLUG and the domain has let go. */
    wantsUnmount: ({ context }) => context.desired === 'unmounted' && context.domainReleased,
    /** After an unmount: a PLUG came in meanwhile. */
    wantsMount: ({ context }) => context.desired === 'mounted',
    terminal: ({ event }) => isTerminalError(errorOf(event)),
  },
  actions: {
    /** A (re)plug: the domain will take the disk again, so its release must be seen anew. */
    wantMounted: assign({ desired: 'mounted' as Direction, domainReleased: false }),
    /** Released stays true until the next PLUG: a domain cannot take back a disk it was not given. */
    wantUnmounted: assign({
      desired: 'unmounted' as Direction,
      domainReleased: ({ context, event }) =>
        context.domainReleased || (event.type === 'UNPLUG' && event.domainReleased === true),
    }),
    recordFailure: assign({
      attempt: ({ context }) => context.attempt + 1,
      retryAt: null,
      lastError: ({ event }) => summarizeError(errorOf(event)),
    }),
    recordRetryAt: assign({
      retryAt: ({ context, event }) =>
        event.type === 'RETRY_SCHEDULED' ? event.retryAt : context.retryAt,
    }),
    succeeded: assign({ attempt: 0, retryAt: null, lastError: null }),
  },
}).createMachine({
  id: 'nodeMounter',
  context: ({ input }) => ({
    volume: input.volume,
    desired: 'unmounted',
    domainReleased: input.domainReleased ?? false,
    located: null,
    facts: null,
    attempt: 0,
    retryAt: null,
    lastError: null,
  }),
  initial: 'unmounted',
  states: {
    unmounted: {
      on: {
        PLUG: { target: 'locatingSource', actions: 'wantMounted' },
        UNPLUG: { actions: 'wantUnmounted' },
      },
    },
    locatingSource: {
      invoke: {
        id: 'locateSource',
        src: 'locateSource',
        input: ({ context }) => ({ volume: context.volume }),
        onDone: {
          target: 'mounting',
          actions: assign({ located: ({ event }) => event.output }),
        },
        onError: [
          { guard: 'terminal', target: 'failed', actions: 'recordFailure' },
          { target: 'retrying', actions: 'recordFailure' },
        ],
      },
      on: {
        PLUG: { actions: 'wantMounted' },
        // Locating only reads; it can be abandoned.
        UNPLUG: [
          { guard: 'releasedByUnplug', target: 'unmounting', actions: 'wantUnmounted' },
          { actions: 'wantUnmounted' },
        ],
      },
    },
    mounting: {
      invoke: {
        id: 'mount',
        src: 'mount',
        input: ({ context }) => ({ volume: context.volume, located: context.located! }),
        onDone: [
          {
            guard: 'wantsUnmount',
            target: 'unmounting',
            actions: assign({ facts: ({ event }) => event.output }),
          },
          {
            target: 'mounted',
            actions: [assign({ facts: ({ event }) => event.output }), 'succeeded'],
          },
        ],
        onError: [
          { guard: 'terminal', target: 'failed', actions: 'recordFailure' },
          { guard: 'wantsUnmount', target: 'unmounting', actions: 'recordFailure' },
          { target: 'retrying', actions: 'recordFailure' },
        ],
      },
      on: {
        // A mount in flight is finished first; `desired` decides where to go next.
        PLUG: { actions: 'wantMounted' },
        UNPLUG: { actions: 'wantUnmounted' },
      },
    },
    mounted: {
      on: {
        // Level-triggered: a repeated PLUG re-verifies (every step is idempotent).
        PLUG: { target: 'locatingSource', actions: 'wantMounted' },
        UNPLUG: [
          { guard: 'releasedByUnplug', target: 'unmounting', actions: 'wantUnmounted' },
          { actions: 'wantUnmounted' },
        ],
      },
    },
    unmounting: {
      invoke: {
        id: 'unmount',
        src: 'unmount',
        input: ({ context }) => ({ volume: context.volume }),
        onDone: [
          {
            guard: 'wantsMount',
            target: 'locatingSource',
            actions: [assign({ facts: ({ event }) => event.output, located: null }), 'succeeded'],
          },
          {
            target: 'unmounted',
            actions: [assign({ facts: ({ event }) => event.output, located: null }), 'succeeded'],
          },
        ],
        onError: [
          { guard: 'terminal', target: 'failed', actions: 'recordFailure' },
          { target: 'retrying', actions: 'recordFailure' },
        ],
      },
      on: {
        PLUG: { actions: 'wantMounted' },
        UNPLUG: { actions: 'wantUnmounted' },
      },
    },
    retrying: {
      invoke: {
        id: 'backoff',
        src: 'backoff',
        input: ({ context }) => ({ attempt: context.attempt, retryAt: context.retryAt }),
      },
      on: {
        // Re-entered so the backoff actor's input carries the deadline: a restored snapshot
        // restores the child with the input it was started with.
        RETRY_SCHEDULED: { target: 'retrying', reenter: true, actions: 'recordRetryAt' },
        RETRY: [{ guard: 'wantsUnmount', target: 'unmounting' }, { target: 'locatingSource' }],
        // A fresh request skips the rest of the wait.
        PLUG: { target: 'locatingSource', actions: 'wantMounted' },
        UNPLUG: [
          { guard: 'releasedByUnplug', target: 'unmounting', actions: 'wantUnmounted' },
          { actions: 'wantUnmounted' },
        ],
      },
    },
    failed: {
      on: {
        PLUG: { target: 'locatingSource', actions: ['wantMounted', 'succeeded'] },
        UNPLUG: [
          {
            guard: 'releasedByUnplug',
            target: 'unmounting',
            actions: ['wantUnmounted', 'succeeded'],
          },
          { actions: 'wantUnmounted' },
        ],
      },
    },
  },
});

export type NodeMounterMachine = typeof nodeMounterMachine;
export type NodeMounterSnapshot = SnapshotFrom<NodeMounterMachine>;
export type NodeMounterActor = ActorRefFrom<NodeMounterMachine>;

/** The machine's states, for callers that map them to phases and events. */
export const MounterState = {
  Unmounted: 'unmounted',
  LocatingSource: 'locatingSource',
  Mounting: 'mounting',
  Mounted: 'mounted',
  Unmounting: 'unmounting',
  Retrying: 'retrying',
  Failed: 'failed',
} as const;
export type MounterState = (typeof MounterState)[keyof typeof MounterState];
