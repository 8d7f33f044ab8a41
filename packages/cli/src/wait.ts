/**
 * `--wait`: follows one operation on one volume through the event stream until it reaches its
 * end (`ready` for a plug, `removed` for an unplug), fails, or the timeout passes. A failure the
 * operation goes on after (a guest holding a detached disk past the timeout) is shown and
 * followed past.
 */
import {
  EventType,
  eventTypeOf,
  failureEndsOperation,
  type OperationKind,
  type VolumeEvent,
} from '@plugline/contracts';
import type { EventStream } from './event-stream.js';

export const WaitResult = {
  Done: 'done',
  Failed: 'failed',
  Timeout: 'timeout',
} as const;
export type WaitResult = (typeof WaitResult)[keyof typeof WaitResult];

export interface WaitOutcome {
  result: WaitResult;
  /** The last event of the operation (the `ready`/`removed`/`failed` one when it ended). */
  last: VolumeEvent | undefined;
  /** Milliseconds from `startedAt` to the end. */
  elapsedMs: number;
  operationId: string | undefined;
}

export interface WaitOptions {
  operation: OperationKind;
  timeoutMs: number;
  /** When the request was sent (epoch ms); step times are measured from it. */
  startedAt: number;
  /** Called for each event of the operation, with the time since the previous one. */
  onEvent?: (event: VolumeEvent, stepMs: number, totalMs: number) => void;
  now?: () => number;
}

const FIRST: Record<OperationKind, EventType> = {
  plug: EventType.Requested,
  unplug: EventType.UnplugRequested,
};
const LAST: Record<OperationKind, EventType> = {
  plug: EventType.Ready,
  unplug: EventType.Removed,
};

/**
 * Consumes `stream` (opened from a time before the request) until the operation ends. The
 * operation is the first `requested` (plug) / `unplug-requested` (unplug) seen; events of other
 * operations on the same volume are ignored.
 */
export async function waitForOperation(
  stream: EventStream,
  options: WaitOptions,
): Promise<WaitOutcome> {
  const now = options.now ?? Date.now;
  let operationId: string | undefined;
  let last: VolumeEvent | undefined;
  let previous = options.startedAt;
  let timedOut = false;
  const timer = setTimeout(
    () => {
      timedOut = true;
      stream.stop();
    },
    Math.max(0, options.timeoutMs),
  );
  try {
    for await (const { event } of stream) {
      const type = eventTypeOf(event);
      if (operationId === undefined) {
        if (type !== FIRST[options.operation]) continue;
        operationId = event.data.operationId;
      } else if (event.data.operationId !== operationId) {
        continue;
      }
      last = event;
      // The stage's own clock (same machine for the embedded default); never before the last.
      const stamped = Date.parse(event.time);
      const at = Math.max(Number.isNaN(stamped) ? now() : stamped, previous);
      options.onEvent?.(event, at - previous, at - options.startedAt);
      previous = at;
      const failed = type === EventType.Failed && failureEndsOperation(event.data.reason);
      if (type === LAST[options.operation] || failed) {
        const result = failed ? WaitResult.Failed : WaitResult.Done;
        return { result, last, elapsedMs: now() - options.startedAt, operationId };
      }
    }
  } finally {
    clearTimeout(timer);
    stream.stop();
  }
  return {
    result: timedOut ? WaitResult.Timeout : WaitResult.Failed,
    last,
    elapsedMs: now() - options.startedAt,
    operationId,
  };
}
