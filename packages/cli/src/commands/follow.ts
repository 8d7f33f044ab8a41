/** The `--wait` part shared by addvolume and removevolume. */
import {
  eventTypeOf,
  traceIdOf,
  type OperationKind,
  type VolumeEvent,
  type VolumeStatus,
} from '@plugline/contracts';
import type { KubeClient } from '@plugline/kube';
import type { CliConfig } from '../config.js';
import { CliError, ExitCode } from '../errors.js';
import { natsFrom, type Nats } from '../clients.js';
import { openEventStream, type EventStream } from '../event-stream.js';
import type { Io } from '../io.js';
import { formatDuration, formatProgressLine } from '../render.js';
import { WaitResult, waitForOperation } from '../wait.js';

export const DEFAULT_TIMEOUT_MS = 5 * 60_000;

/** A follower opened before the request is sent, so no event of the operation is missed. */
export interface Follower {
  /** Waits for the operation's end and prints each phase; returns the exit code. */
  follow(volume: string, startedAt: number): Promise<ExitCode>;
  close(): Promise<void>;
}

/** Whether the VMI's status shows the operation's end: the entry Ready with a target, or gone. */
function statusShowsEnd(entry: VolumeStatus | undefined, operation: OperationKind): boolean {
  return operation === 'plug'
    ? entry?.phase === 'Ready' && entry.target !== ''
    : entry === undefined;
}

/**
 * The event stream runs ahead of `vmi.status` (the projector writes it from the same facts):
 * once the last event is in, wait for the status to show it too, so `kubectl get vmi` agrees
 * with what plugctl printed.
 */
async function confirmStatus(
  client: KubeClient,
  scope: { namespace: string; vmi: string; volume: string },
  operation: OperationKind,
  deadline: number,
): Promise<boolean> {
  for (;;) {
    const vmi = await client.getVmi(scope.namespace, scope.vmi);
    const entry = vmi.status?.volumeStatus?.find((s) => s.name === scope.volume);
    if (statusShowsEnd(entry, operation)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** ` (trace <id>)` when the services export traces (the event carries its `traceparent`). */
function traceSuffix(event: VolumeEvent | undefined): string {
  const id = event === undefined ? undefined : traceIdOf(event);
  return id === undefined ? '' : ` (trace ${id})`;
}

export interface FollowSpec {
  scope: { namespace: string; vmi: string; volume: string };
  operation: OperationKind;
  timeoutMs: number;
  /** Reads the VMI to confirm its status shows the end. */
  client: KubeClient;
}

export async function openFollower(config: CliConfig, io: Io, spec: FollowSpec): Promise<Follower> {
  const { scope, operation, timeoutMs, client } = spec;
  const nats: Nats = await natsFrom(config);
  let stream: EventStream;
  const from = new Date();
  try {
    stream = await openEventStream(nats.js, scope, from);
  } catch (err) {
    await nats.close();
    throw err;
  }
  const onAbort = (): void => stream.stop();
  io.signal?.addEventListener('abort', onAbort, { once: true });
  const close = async (): Promise<void> => {
    io.signal?.removeEventListener('abort', onAbort);
    stream.stop();
    await nats.close();
  };
  const follow = async (volume: string, startedAt: number): Promise<ExitCode> => {
    const outcome = await waitForOperation(stream, {
      operation,
      timeoutMs,
      startedAt: Math.min(startedAt, from.getTime()),
      onEvent: (event, stepMs, totalMs) =>
        io.out(`${formatProgressLine(event, stepMs, totalMs)}\n`),
    });
    if (
      outcome.result === WaitResult.Done &&
      !(await confirmStatus(client, { ...scope, volume }, operation, startedAt + timeoutMs))
    ) {
      throw new CliError(
        `timed out after ${formatDuration(timeoutMs)} waiting for the status of volume ${volume} to show the end of the operation`,
        ExitCode.Timeout,
        'Timeout',
      );
    }
    const total = formatDuration(outcome.elapsedMs);
    const trace = traceSuffix(outcome.last);
    if (outcome.result === WaitResult.Done) {
      const target = outcome.last?.data.target;
      io.out(
        operation === 'plug'
          ? `Volume ${volume} is Ready${target ? ` as ${target}` : ''} after ${total}${trace}\n`
          : `Volume ${volume} was removed after ${total}${trace}\n`,
      );
      return ExitCode.Ok;
    }
    if (outcome.result === WaitResult.Timeout) {
      const lastType = outcome.last === undefined ? 'no event yet' : eventTypeOf(outcome.last);
      throw new CliError(
        `timed out after ${formatDuration(timeoutMs)} waiting for volume ${volume} ` +
          `(last: ${lastType})${trace}`,
        ExitCode.Timeout,
        'Timeout',
      );
    }
    if (io.signal?.aborted) throw new CliError('interrupted', ExitCode.Error, 'Interrupted');
    const d = outcome.last?.data;
    throw new CliError(
      d === undefined
        ? `the event stream ended before volume ${volume} finished`
        : `volume ${volume} failed at stage ${d.stage}: ${d.reason ?? 'Failed'}: ${d.message ?? ''}`.trimEnd() +
            trace,
      ExitCode.Failed,
      d?.reason ?? 'Failed',
    );
  };
  return { follow, close };
}
