import { randomUUID } from 'node:crypto';
import {
  buildEvent,
  EventType,
  resyncRoundOf,
  type NewEvent,
  type Stage,
  type VolumeEvent,
  type WorkItem,
} from '@plugline/contracts';
import { traceFields } from '@plugline/telemetry';

/** A fact the machine establishes; the runtime adds `stage`, `id`, `time` and `traceparent`. */
export type FactSpec = Omit<NewEvent, 'stage' | 'id' | 'time' | 'traceparent'>;

/** A nudge the machine sends to a stage; the runtime adds `v` and `issuedAt`. */
export type WorkSpec = Omit<WorkItem, 'v' | 'issuedAt'>;

/**
 * What a stage machine emits (with XState's `emit` action) to have the runtime publish something
 * once its new snapshot is safely persisted. Declare it in `setup({ types: { emitted } })`.
 */
export type StageEmitted =
  { type: 'plugline.fact'; fact: FactSpec } | { type: 'plugline.work'; work: WorkSpec };

/** `emit(fact({...}))`: publish an event on the event stream. */
export function fact(spec: FactSpec): StageEmitted {
  return { type: 'plugline.fact', fact: spec };
}

/** `emit(nextWork({...}))`: send a work item to a stage. */
export function nextWork(spec: WorkSpec): StageEmitted {
  return { type: 'plugline.work', work: spec };
}

/** A message built and stored with the snapshot (transactional outbox), published after it. */
export type OutboxEntry = { kind: 'event'; event: VolumeEvent } | { kind: 'work'; item: WorkItem };

/**
 * What a fact or a nudge sent while handling `item` carries of its resync round (see
 * `resyncRoundOf`): the round, so a restated fact passes the event stream's duplicate window and
 * the next stage states again what it stated too.
 */
function inRoundOf(item: WorkItem): { resync?: string } {
  const round = resyncRoundOf(item);
  return round === undefined ? {} : { resync: round };
}

/**
 * Builds the outbox entry for what the machine emitted while handling `item`; undefined for
 * emitted events that are not ours.
 */
export function toOutboxEntry(
  stage: Stage,
  emitted: { type: string },
  now: Date,
  item: WorkItem,
): OutboxEntry | undefined {
  const e = emitted as StageEmitted;
  if (e.type === 'plugline.fact') {
    const { fact } = e;
    const data = { ...fact.data, ...inRoundOf(item) };
    const event = buildEvent({
      ...fact,
      data,
      stage,
      id: randomUUID(),
      time: now,
      ...traceFields(),
    });
    return { kind: 'event', event };
  }
  if (e.type === 'plugline.work') {
    const work: WorkItem = { v: 1, ...e.work, issuedAt: now.toISOString(), ...inRoundOf(item) };
    return { kind: 'work', item: work };
  }
  return undefined;
}

/** The `failed` event the runtime publishes when it gives a work item up. */
export function failedEvent(
  stage: Stage,
  item: WorkItem,
  failure: { reason: string; message: string },
  attempt: number,
): OutboxEntry {
  const event = buildEvent({
    namespace: item.namespace,
    vmi: item.vmi,
    volume: item.volume,
    type: EventType.Failed,
    stage,
    id: randomUUID(),
    ...traceFields(),
    data: {
      operationId: item.operationId,
      operation: item.operation,
      vmiUID: item.vmiUID,
      reason: failure.reason.slice(0, 64),
      message: failure.message.slice(0, 4096),
      attempt,
      ...(item.node === undefined ? {} : { node: item.node }),
      ...inRoundOf(item),
    },
  });
  return { kind: 'event', event };
}
