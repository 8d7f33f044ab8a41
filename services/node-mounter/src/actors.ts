import { fromCallback, fromPromise } from 'xstate';

import { backoffDelay } from './machine.js';
import type {
  BackoffInput,
  EffectFacts,
  LocatedSource,
  LocateInput,
  MounterEvent,
  MountInput,
  UnmountInput,
} from './machine.js';
import type { NodeMounter } from './node-mounter.js';

export interface BackoffOptions {
  readonly baseMs?: number;
  readonly maxMs?: number;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

/**
 * The `backoff` actor: picks a deadline when none is stored (and reports it, so it lands in the
 * machine's context and survives a restore), then sends RETRY once it has passed.
 */
export function backoffActor(options: BackoffOptions = {}) {
  const now = options.now ?? Date.now;
  return fromCallback<MounterEvent, BackoffInput>(({ input, sendBack }) => {
    let retryAt = input.retryAt;
    if (retryAt === null) {
      retryAt = now() + backoffDelay(input.attempt, options.baseMs, options.maxMs);
      sendBack({ type: 'RETRY_SCHEDULED', retryAt });
    }
    const timer = setTimeout(() => sendBack({ type: 'RETRY' }), Math.max(0, retryAt - now()));
    return () => clearTimeout(timer);
  });
}

/** The machine's effects, implemented by a NodeMounter; pass to `nodeMounterMachine.provide({ actors })`. */
export function nodeMounterActors(mounter: NodeMounter, backoff: BackoffOptions = {}) {
  return {
    locateSource: fromPromise<LocatedSource, LocateInput>(({ input }) =>
      mounter.locate(input.volume),
    ),
    mount: fromPromise<EffectFacts, MountInput>(({ input }) =>
      mounter.mountLocated(input.volume, input.located),
    ),
    unmount: fromPromise<EffectFacts, UnmountInput>(({ input }) =>
      mounter.unplug({
        vmiUID: input.volume.vmiUID,
        volume: input.volume.volume,
        launcherUID: input.volume.launcherUID,
        mode: input.volume.mode,
      }),
    ),
    backoff: backoffActor(backoff),
  };
}
