import {
  connectBus,
  ensureStageBuckets,
  provision,
  Publisher,
  readUnitContext,
  readUnitState,
  runStage,
  Slots,
} from '@plugline/bus';
import type { Bus, StageRunner } from '@plugline/bus';
import { newOperationId, NotFoundError, Stage } from '@plugline/contracts';
import type {
  OperationKind,
  VirtualMachine,
  VirtualMachineInstance,
  WorkItem,
} from '@plugline/contracts';
import {
  createInformer,
  EventRecorder,
  KubeClient,
  loadKubeConfig,
  Resources,
} from '@plugline/kube';
import type { Informer } from '@plugline/kube';
import { childLogger, createMetrics } from '@plugline/telemetry';
import type { Logger, PluglineMetrics } from '@plugline/telemetry';
import type { SpecWatcherConfig } from './config.js';
import { TemplateSync } from './declarative.js';
import {
  bookedOperation,
  decideEvent,
  decisionMachine,
  decisionUnit,
  decisionNudge,
  ENTRY_REMOVED_CAUSE,
  ENTRY_RETURNED_CAUSE,
  RESYNC_CAUSE,
  routingPhaseOf,
  SPEC_CAUSE,
  viewOf,
  type VolumeView,
} from './decision.js';
import { diffVolumes, hotplugVolumesOf, isHotplugStatus, type VolumeDiff } from './diff.js';
import { NudgeLedger, type EntriesSeen, type EntryChanges, type NudgeTarget } from './nudges.js';
import { desiredDirections } from './plan.js';
import { ensureProjectorConsumer, startProjector, type Projector } from './projector.js';

type KubeConfig = ReturnType<typeof loadKubeConfig>;

/** What {@link startSpecWatcher} may be given instead of making it from the config. */
export interface SpecWatcherDeps {
  readonly logger: Logger;
  /** A connected bus (then not drained on stop); default: connect to `config.natsUrls`. */
  readonly bus?: Bus;
  /** Default: loaded from `config.kubeconfig`. */
  readonly kubeConfig?: KubeConfig;
  readonly metrics?: PluglineMetrics;
  /** Identifies this worker in leases (default a random id). */
  readonly workerId?: string;
  /** What publishes its events and work (default: one made on the bus). */
  readonly publisher?: Publisher;
}

/** A running spec-watcher. */
export interface SpecWatcherService {
  readonly stage: StageRunner;
  readonly projector: Projector;
  readonly templateSync: TemplateSync;
  readonly metrics: PluglineMetrics;
  /** Nudges the decision of every hotplug volume not at its desired end; resolves with the count. */
  resync(): Promise<number>;
  /** Readiness: NATS connected, consumers bound, informers synced. */
  ready(): boolean;
  /** The named readiness checks (for `/readyz`). */
  readyChecks(): Record<string, () => boolean>;
  /** Stops the resync timer, the stage, the projector, the informers, and a bus it connected. */
  stop(): Promise<void>;
}

type VmiInformer = Informer<VirtualMachineInstance>;
type VmInformer = Informer<VirtualMachine>;

/**
 * The VMI as it is now: the cache, unless it may lag behind what the nudge's sender saw (an
 * older generation, or absent) — then the API server. Undefined when the VMI does not exist.
 */
async function currentVmi(
  vmis: VmiInformer,
  client: KubeClient,
  item: WorkItem,
): Promise<VirtualMachineInstance | undefined> {
  const cached = vmis.get(item.namespace, item.vmi);
  const behind =
    cached === undefined ||
    (item.observedGeneration !== undefined &&
      (cached.metadata.generation ?? 0) < item.observedGeneration);
  if (!behind) return cached;
  try {
    return await client.getVmi(item.namespace, item.vmi);
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

/** A volume's book as a resync sees it. */
interface BookView {
  /** The direction of the operation the decision last issued; undefined with no book. */
  direction: OperationKind | undefined;
  /**
   * The request the decision booked may never have been published: the watcher stopped between
   * writing the book and publishing (a crash). Its decision handles nudges made here, which no
   * stream keeps, so only a nudge gets the unit handled again, and with it the request out.
   */
  requestUnpublished: boolean;
}

interface Wiring {
  vmis: VmiInformer;
  vms: VmInformer;
  publisher: Publisher;
  templateSync: TemplateSync;
  /** What each VMI's diff held when it was last nudged. */
  nudged: NudgeLedger;
  /**
   * The decision stage, once it runs: a VMI change's nudges are handled here, without the
   * stream (see StageRunner.handleHere); before that, and for a resync, they are published.
   */
  stage?: StageRunner;
  /**
   * What the decision of a volume last issued (its book), once the decision stage runs: a
   * `Ready` entry of a volume in the spec is not at its end when its book unplugs it, or when the
   * book's request may never have gone out (see {@link BookView}).
   */
  readBook?: (vmi: VirtualMachineInstance, volume: string) => Promise<BookView>;
  log: Logger;
  signal: AbortSignal;
}

function publishNudges(
  w: Wiring,
  items: readonly WorkItem[],
  onLost: (item: WorkItem) => void = () => undefined,
  send: (item: WorkItem) => Promise<unknown> = (item) => w.publisher.publishWork(item, w.signal),
): Promise<void>[] {
  return items.map((item) =>
    send(item).then(
      () => undefined,
      (err: unknown) => {
        onLost(item);
        if (!w.signal.aborted) w.log.warn({ err, volume: item.volume }, 'could not nudge');
      },
    ),
  );
}

/**
 * The VMI's diff as (operation, volume) pairs; and a volume back in the spec whose removal the
 * last diff held: its entry may not have moved yet (still `Ready`), so the diff alone misses the
 * re-add, and the decision, which holds the unplug, must hear of it.
 */
function diffTargets(
  vmi: VirtualMachineInstance,
  diff: VolumeDiff,
  wanted: readonly string[],
  nudged: NudgeLedger,
): NudgeTarget[] {
  const targets = [
    ...diff.plug.map((v): NudgeTarget => ({ operation: 'plug', volume: v.name })),
    ...diff.unplug.map((s): NudgeTarget => ({ operation: 'unplug', volume: s.name })),
  ];
  const uid = vmi.metadata.uid ?? '';
  for (const volume of wanted) {
    const inDiff = targets.some((t) => t.volume === volume);
    if (!inDiff && nudged.holds(uid, { operation: 'unplug', volume })) {
      targets.push({ operation: 'plug', volume });
    }
  }
  return targets;
}

/**
 * The VMI's hotplug entries, as the nudge ledger compares them between changes (`wanted`: the
 * spec's hotplug volumes, read once per change).
 */
function entriesSeen(
  vmi: VirtualMachineInstance,
  diff: VolumeDiff,
  wanted: readonly string[],
): EntriesSeen {
  const wantedSet = new Set(wanted);
  // A permanent volume's entry (the root disk's) is none of the ledger's business.
  const withEntry = (vmi.status?.volumeStatus ?? [])
    .filter((s) => wantedSet.has(s.name) || isHotplugStatus(s))
    .map((s) => s.name);
  const entries = new Set(withEntry);
  const inDiff = new Set(diff.plug.map((v) => v.name));
  return {
    shown: wanted.filter((volume) => !inDiff.has(volume)),
    missing: new Set(wanted.filter((volume) => !entries.has(volume))),
    withEntry,
    unwanted: diff.unplug.map((s) => s.name),
  };
}

/** The cause of a VMI change's nudge of a volume, from what happened to its entry. */
function causeOf(target: NudgeTarget, changes: EntryChanges): string {
  if (target.operation === 'plug' && changes.dropped.has(target.volume)) return ENTRY_REMOVED_CAUSE;
  if (target.operation === 'unplug' && changes.returned.has(target.volume))
    return ENTRY_RETURNED_CAUSE;
  return SPEC_CAUSE;
}

/**
 * A VMI changed: nudge the decision of each volume that has newly entered the diff (its status
 * does not reflect its spec). Volumes nudged on an earlier update and still in the diff are not
 * nudged again: their decision already ran on a view at least as new as that update, and a
 * status write does not change what it decides (issue 10: re-nudging them made a burst O(n²)).
 * A volume whose plug entry this change dropped (`entry-removed`), or whose entry it wrote back
 * after the unplug had removed it (`entry-returned`), is nudged as such: its decision has the
 * stages state their facts again.
 */
function onVmiChange(w: Wiring, vmi: VirtualMachineInstance): void {
  const uid = vmi.metadata.uid;
  if (uid === undefined) return;
  if (vmi.metadata.deletionTimestamp !== undefined) {
    w.nudged.forget(uid);
    return;
  }
  const diff = diffVolumes(vmi);
  const wanted = hotplugVolumesOf(vmi).map((v) => v.name);
  const changes = w.nudged.entryChanges(uid, entriesSeen(vmi, diff, wanted));
  const fresh = w.nudged.fresh(uid, diffTargets(vmi, diff, wanted, w.nudged));
  if (fresh.length > 0) {
    const id = `rv-${vmi.metadata.resourceVersion ?? '0'}`;
    const items = fresh.map((target) =>
      decisionNudge(vmi, { ...target, cause: causeOf(target, changes), id }),
    );
    const lost = (item: WorkItem) =>
      w.nudged.unsent(uid, { operation: item.operation, volume: item.volume });
    const stage = w.stage;
    const send = stage === undefined ? undefined : (item: WorkItem) => stage.handleHere(item);
    void Promise.all(publishNudges(w, items, lost, send));
  }
  const { namespace = 'default', name = '' } = vmi.metadata;
  if (w.vms.get(namespace, name) !== undefined) w.templateSync.nudge(namespace, name);
}

/** Books read at once by a resync (two KV reads, side by side, per `Ready` volume in a spec). */
const BOOK_READS_AT_ONCE = 16;

/**
 * Resync: a decision nudge (cause `resync`) for every hotplug volume not at its desired end,
 * so the decision re-sends the current operation's work to the stage that moves it next. A
 * `Ready` volume in the spec is at its end unless its book unplugs it or its book's request may
 * not have gone out.
 */
async function resyncAll(w: Wiring, now: Date = new Date()): Promise<number> {
  const round = `resync-${now.getTime().toString(36)}`;
  const items: WorkItem[] = [];
  const live = new Set<string>();
  const readyButNotDone: Promise<void>[] = [];
  const bookReads = new Slots(BOOK_READS_AT_ONCE);
  for (const vmi of w.vmis.list()) {
    if (vmi.metadata.uid === undefined || vmi.metadata.deletionTimestamp !== undefined) continue;
    live.add(vmi.metadata.uid);
    for (const [volume, { operation, status }] of desiredDirections(vmi)) {
      const nudge = (): number =>
        items.push(decisionNudge(vmi, { volume, operation, cause: RESYNC_CAUSE, id: round, now }));
      if (operation !== 'plug' || routingPhaseOf(status) !== 'Ready') {
        nudge();
        continue;
      }
      // Ready, unless the book unplugs it (it came back into the spec before any stage moved its
      // entry, and its nudge was lost or made while this watcher was down), or the book's newer
      // request never went out (the watcher crashed between writing the book and publishing it,
      // after the volume went out of the spec and back: the entry is the older plug's).
      const readBook = w.readBook;
      if (readBook === undefined) continue;
      readyButNotDone.push(
        (async () => {
          await bookReads.acquire();
          try {
            const book = await readBook(vmi, volume);
            if (book.direction === 'unplug' || book.requestUnpublished) nudge();
          } catch (err) {
            w.log.debug({ err, volume }, 'reading the book of a Ready volume');
          } finally {
            bookReads.release();
          }
        })(),
      );
    }
  }
  await Promise.all(readyButNotDone);
  w.nudged.retainOnly(live);
  for (const vm of w.vms.list()) {
    const { namespace = 'default', name = '' } = vm.metadata;
    if (w.vmis.get(namespace, name) !== undefined) w.templateSync.nudge(namespace, name);
  }
  await Promise.all(publishNudges(w, items));
  if (items.length > 0) w.log.info({ volumes: items.length }, 'resync nudged volumes');
  return items.length;
}

/**
 * Starts the spec-watcher: provisions its work consumer and bucket and the projector's event
 * consumer (idempotent), syncs the VMI and VM informers, runs the decision stage
 * (`spec-watcher`, unit `ns/vmi/volume`), the status projector and the declarative template
 * sync, resyncs once and then every `resyncPeriodMs`.
 */
export async function startSpecWatcher(
  config: SpecWatcherConfig,
  deps: SpecWatcherDeps,
): Promise<SpecWatcherService> {
  const log = childLogger(deps.logger, { stage: Stage.SpecWatcher });
  const metrics = deps.metrics ?? createMetrics(undefined, { processMetrics: false });
  const kc = deps.kubeConfig ?? loadKubeConfig({ kubeconfig: config.kubeconfig });
  const bus =
    deps.bus ??
    (await connectBus({
      servers: config.natsUrls,
      auth: config.natsAuth,
      name: 'spec-watcher',
      logger: log,
    }));
  const ownsBus = deps.bus === undefined;
  // Each informer's logger names its component and resource.
  const vmis: VmiInformer = createInformer({
    kc,
    resource: Resources.virtualMachineInstances,
    logger: log,
  });
  const vms: VmInformer = createInformer({ kc, resource: Resources.virtualMachines, logger: log });
  const informers = [vmis, vms];
  const shutdown = new AbortController();
  let stage: StageRunner | undefined;
  let projector: Projector | undefined;
  try {
    await provision(bus, {
      replicas: config.streamReplicas,
      consumers: [{ stage: Stage.SpecWatcher, ackWaitMs: config.ackWaitMs }],
    });
    await ensureProjectorConsumer(bus, { ackWaitMs: config.ackWaitMs });
    const client = new KubeClient({ kc, fieldManager: 'spec-watcher', logger: log });
    const publisher = deps.publisher ?? new Publisher(bus, { logger: log, metrics });
    const templateSync = new TemplateSync({ client, vms, vmis, logger: log });
    const w: Wiring = {
      vmis,
      vms,
      publisher,
      templateSync,
      nudged: new NudgeLedger(),
      log,
      signal: shutdown.signal,
    };
    vmis.onAdd((vmi) => onVmiChange(w, vmi));
    vmis.onUpdate((vmi) => onVmiChange(w, vmi));
    const onVm = (vm: VirtualMachine) => {
      const { namespace = 'default', name = '' } = vm.metadata;
      if (vmis.get(namespace, name) !== undefined) templateSync.nudge(namespace, name);
    };
    vms.onAdd(onVm);
    vms.onUpdate(onVm);
    await Promise.all(informers.map((i) => i.start()));

    stage = await runStage({
      bus,
      stage: Stage.SpecWatcher,
      machine: decisionMachine,
      keyOf: decisionUnit,
      load: async (item) => viewOf(item, await currentVmi(vmis, client, item)),
      toEvent: (item, delivery) =>
        decideEvent(
          item,
          delivery.observed as VolumeView,
          newOperationId(new Date()),
          delivery.receivedAt,
        ),
      concurrency: config.concurrency,
      leaseTtlMs: config.leaseTtlMs,
      ...(config.instance === undefined ? {} : { instance: config.instance }),
      logger: log,
      metrics,
      publisher,
      ...(deps.workerId === undefined ? {} : { workerId: deps.workerId }),
    });
    w.stage = stage;
    const recorder = new EventRecorder({
      client,
      component: 'plugline-spec-watcher',
      logger: log,
    });
    const decisionBuckets = await ensureStageBuckets(bus, Stage.SpecWatcher);
    const decisions = decisionBuckets.snapshots;
    w.readBook = async (vmi, volume) => {
      const { namespace = 'default', name = '', uid = '' } = vmi.metadata;
      const unit = await readUnitState(
        decisionBuckets,
        decisionUnit({ namespace, vmi: name, volume }),
      );
      return {
        direction: bookedOperation(unit?.context, uid)?.operation,
        requestUnpublished: unit?.outboxUnpublished === true,
      };
    };
    projector = await startProjector({
      bus,
      client,
      vmis,
      bookedOperation: async (volume) => {
        const context = await readUnitContext(decisions, decisionUnit(volume));
        const booked = bookedOperation(context, volume.vmiUID);
        if (booked === undefined) return undefined;
        const { operationId: id, operation: direction, undoes } = booked;
        return undoes === undefined
          ? { id, direction, booked: true }
          : { id, direction, undoes, booked: true };
      },
      recorder,
      publisher,
      logger: log,
      metrics,
      concurrency: config.concurrency,
      statusLingerMs: config.statusLingerMs,
      onEventsSkipped: () => {
        resyncAll(w).catch((err: unknown) => log.warn({ err }, 'resync failed'));
      },
    });
    const projectorOf = projector;
    vmis.onDelete((vmi) => {
      const { uid, namespace = 'default', name = '' } = vmi.metadata;
      if (uid !== undefined) w.nudged.forget(uid);
      projectorOf.forget(namespace, name);
    });
    await resyncAll(w);
    const timer = setInterval(() => {
      resyncAll(w).catch((err: unknown) => log.warn({ err }, 'resync failed'));
    }, config.resyncPeriodMs);
    timer.unref();

    const running = { stage, projector };
    const readyChecks = () => ({
      nats: () => bus.connected(),
      consumers: () => running.stage.bound() && running.projector.bound(),
      informers: () => informers.every((i) => i.synced),
    });
    let stopping: Promise<void> | undefined;
    return {
      stage,
      projector,
      templateSync,
      metrics,
      resync: () => resyncAll(w),
      readyChecks,
      ready: () => Object.values(readyChecks()).every((check) => check()),
      stop: () =>
        (stopping ??= (async () => {
          clearInterval(timer);
          await Promise.all(informers.map((i) => i.stop()));
          shutdown.abort(new Error('spec-watcher stopping'));
          await templateSync.idle();
          await Promise.all([running.stage.stop(), running.projector.stop()]);
          if (ownsBus) await bus.drain();
        })()),
    };
  } catch (err) {
    shutdown.abort(err);
    await Promise.allSettled([stage?.stop(), projector?.stop()]);
    await Promise.all(informers.map((i) => i.stop()));
    if (ownsBus) await bus.close();
    throw err;
  }
}
