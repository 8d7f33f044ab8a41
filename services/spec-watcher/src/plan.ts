import type {
  NewEvent,
  OperationKind,
  VirtualMachineInstance,
  VolumeStatus,
  WorkItem,
} from '@plugline/contracts';
import { EventType, Stage, VolumePhase } from '@plugline/contracts';
import { diffVolumes, hotplugVolumesOf, isHotplugStatus } from './diff.js';

/** The operation spec-watcher last issued for a volume. */
export interface OperationRef {
  operationId: string;
  operation: OperationKind;
}

export type OperationBook = Readonly<Record<string, OperationRef>>;

export interface SyncInput {
  vmi: VirtualMachineInstance;
  /** The operations issued so far, per volume (persisted with the watcher's state). */
  operations: OperationBook;
  now: Date;
  /** Issues a new operation id (`newOperationId`). */
  newId: () => string;
}

export interface SyncPlan {
  /** `requested` / `unplug-requested` facts to publish. */
  events: NewEvent[];
  /** Work for the stage that moves each volume next. */
  work: WorkItem[];
  /** The operation book after this plan. */
  operations: Record<string, OperationRef>;
}

/**
 * The stage that moves a volume next, from its direction and current phase; undefined when the
 * volume is at its desired end (plugged and `Ready`). Unplug runs the chain backwards, always
 * from the domain-updater, whatever the phase: the status is not proof that the domain lacks
 * the disk, nor the launcher the mount. The stages follow the spec, so a volume removed, added
 * and removed again within a second can be in the domain, or mounted, under an operation the
 * status took as stale, with an entry that shows no attachment or an unplug phase (`kill` and
 * `nats` soaks left such a disk for 29 s and such a mount for 55 s, until the stage's own
 * reconcile). Only the node stages look at the domain and the launcher; for a volume already
 * out, they find nothing to undo and hand on at once.
 */
export function nextStageFor(
  operation: OperationKind,
  phase: string | undefined,
): Stage | undefined {
  if (operation === 'unplug') return Stage.DomainUpdater;
  switch (phase) {
    case VolumePhase.Ready:
      return undefined;
    case VolumePhase.AttachedToNode:
      return Stage.NodeMounter;
    case VolumePhase.MountedToPod:
      return Stage.DomainUpdater;
    default:
      return Stage.AttachmentOrchestrator;
  }
}

/** Where a nudge goes: a stage and, for node stages, the node. */
export interface Route {
  stage: Stage;
  node?: string;
}

/**
 * The stage (and node) that moves a volume next. A node stage needs the VMI's node: a VMI
 * never scheduled has none, and its volume goes to the attachment-orchestrator instead.
 */
export function routeFor(
  operation: OperationKind,
  phase: string | undefined,
  node: string | undefined,
): Route | undefined {
  const stage = nextStageFor(operation, phase);
  if (stage === undefined) return undefined;
  if (stage === Stage.NodeMounter || stage === Stage.DomainUpdater) {
    return node === undefined || node === ''
      ? { stage: Stage.AttachmentOrchestrator }
      : { stage, node };
  }
  return { stage };
}

function workFor(
  input: SyncInput,
  volume: string,
  ref: OperationRef,
  phase: string | undefined,
  cause: string,
): WorkItem | undefined {
  const { vmi } = input;
  const route = routeFor(ref.operation, phase, vmi.status?.nodeName);
  if (route === undefined) return undefined;
  const item: WorkItem = {
    v: 1,
    stage: route.stage,
    namespace: vmi.metadata.namespace ?? 'default',
    vmi: vmi.metadata.name ?? '',
    vmiUID: vmi.metadata.uid ?? '',
    volume,
    operationId: ref.operationId,
    operation: ref.operation,
    cause,
    issuedAt: input.now.toISOString(),
  };
  if (route.node !== undefined) item.node = route.node;
  if (vmi.metadata.generation !== undefined) item.observedGeneration = vmi.metadata.generation;
  return item;
}

function requestFact(input: SyncInput, volume: string, ref: OperationRef): NewEvent {
  const { vmi } = input;
  const type = ref.operation === 'plug' ? EventType.Requested : EventType.UnplugRequested;
  const vmiUID = vmi.metadata.uid ?? '';
  return {
    namespace: vmi.metadata.namespace ?? 'default',
    vmi: vmi.metadata.name ?? '',
    volume,
    type,
    stage: Stage.SpecWatcher,
    id: `${vmiUID}:${volume}:${ref.operationId}:${type}`,
    time: input.now,
    data: { operationId: ref.operationId, operation: ref.operation, vmiUID },
  };
}

/**
 * The direction each hotplug volume should go, with its current status entry: plug for every
 * hotpluggable spec volume, unplug for every hotplug status entry whose volume left the spec.
 */
export function desiredDirections(
  vmi: VirtualMachineInstance,
): Map<string, { operation: OperationKind; status: VolumeStatus | undefined }> {
  const statuses = new Map((vmi.status?.volumeStatus ?? []).map((s) => [s.name, s]));
  const specNames = new Set((vmi.spec.volumes ?? []).map((v) => v.name));
  const out = new Map<string, { operation: OperationKind; status: VolumeStatus | undefined }>();
  for (const v of hotplugVolumesOf(vmi))
    out.set(v.name, { operation: 'plug', status: statuses.get(v.name) });
  for (const s of statuses.values()) {
    if (!specNames.has(s.name) && isHotplugStatus(s))
      out.set(s.name, { operation: 'unplug', status: s });
  }
  return out;
}

function prunedBook(
  vmi: VirtualMachineInstance,
  operations: OperationBook,
): Record<string, OperationRef> {
  const live = desiredDirections(vmi);
  return Object.fromEntries(Object.entries(operations).filter(([name]) => live.has(name)));
}

function issue(
  input: SyncInput,
  plan: SyncPlan,
  volume: string,
  operation: OperationKind,
  status: VolumeStatus | undefined,
): void {
  const ref = { operationId: input.newId(), operation };
  plan.operations[volume] = ref;
  const fact = requestFact(input, volume, ref);
  plan.events.push(fact);
  const item = workFor(input, volume, ref, status?.phase, fact.type);
  if (item !== undefined) plan.work.push(item);
}

/**
 * Turns the spec/status diff into operations: a volume to plug or unplug whose book does not
 * already hold an operation in that direction gets a new operation id, its `requested` /
 * `unplug-requested` fact and the work of the stage that moves it next. Idempotent: the same VMI
 * and book give no new operations. Entries of volumes that are gone everywhere leave the book.
 */
export function planVolumeOperations(input: SyncInput): SyncPlan {
  const plan: SyncPlan = {
    events: [],
    work: [],
    operations: prunedBook(input.vmi, input.operations),
  };
  const diff = diffVolumes(input.vmi);
  const statuses = new Map((input.vmi.status?.volumeStatus ?? []).map((s) => [s.name, s]));
  for (const volume of diff.plug) {
    if (plan.operations[volume.name]?.operation === 'plug') continue;
    issue(input, plan, volume.name, 'plug', statuses.get(volume.name));
  }
  for (const status of diff.unplug) {
    if (plan.operations[status.name]?.operation === 'unplug') continue;
    issue(input, plan, status.name, 'unplug', status);
  }
  return plan;
}

/**
 * Resync (at start and every `resyncPeriod`): work for every hotplug volume not at its desired
 * end, under its current operation (cause `resync`). A volume whose book has no operation in the
 * wanted direction (a lost book) gets a new one, with its fact, as in `planVolumeOperations`.
 */
export function resyncWork(input: SyncInput): SyncPlan {
  const plan = planVolumeOperations(input);
  const fresh = new Set(plan.events.map((e) => e.volume));
  for (const [volume, { operation, status }] of desiredDirections(input.vmi)) {
    if (fresh.has(volume)) continue;
    const ref = plan.operations[volume];
    if (ref?.operation !== operation) {
      issue(input, plan, volume, operation, status);
      continue;
    }
    const item = workFor(input, volume, ref, status?.phase, 'resync');
    if (item !== undefined) plan.work.push(item);
  }
  return plan;
}
