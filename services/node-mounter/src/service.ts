import { stat } from 'node:fs/promises';
import { join } from 'node:path';

import { connectBus, provision, runStage } from '@plugline/bus';
import type { Bus, StageRunner } from '@plugline/bus';
import {
  HOTPLUG_DISK_LABEL_VALUE,
  KubevirtLabel,
  LAUNCHER_LABEL_VALUE,
  Stage,
} from '@plugline/contracts';
import type { VirtualMachineInstance, WorkItem } from '@plugline/contracts';
import { createInformer, currentVmi, KubeClient, loadKubeConfig, Resources } from '@plugline/kube';
import type { Informer } from '@plugline/kube';
import { childLogger, createMetrics } from '@plugline/telemetry';
import type { Logger, PluglineMetrics } from '@plugline/telemetry';

import type { NodeMounterConfig } from './config.js';
import {
  decide,
  DecisionKind,
  DecisionReason,
  vmiKeyOfPod,
  vmiPodsKey,
  wantedVolumes,
} from './decide.js';
import type { Decision, PodView, PvcView } from './decide.js';
import { NodeMounter } from './node-mounter.js';
import type { CgroupOutcome, ReconcileReport } from './node-mounter.js';
import {
  checkpointedVmiUids,
  loadCheckpoint,
  removeAbandonedTempFiles,
  type ReconcileAction,
} from './checkpoint.js';
import { assertUid, VolumeMode } from './paths.js';
import { CgroupState, mounterStageActors, mounterStageMachine } from './stage-machine.js';
import type { MounterEffects } from './stage-machine.js';

/** What {@link startNodeMounter} may be given instead of making it from the config. */
export interface NodeMounterDeps {
  readonly logger: Logger;
  /** A connected bus (then not drained on stop); default: connect to `config.natsUrls`. */
  readonly bus?: Bus;
  /** Default: loaded from `config.kubeconfig`. */
  readonly kubeConfig?: KubeConfig;
  readonly metrics?: PluglineMetrics;
  /** Identifies this worker in leases (default a random id). */
  readonly workerId?: string;
  /** How often the checkpoints are compared with the specs again after the start (default 30 s). */
  readonly reconcileIntervalMs?: number;
  /** How long a plug waits in its handling for the pod cache (default {@link POD_CACHE_CATCH_UP_MS}). */
  readonly podCacheCatchUpMs?: number;
}

const DEFAULT_RECONCILE_INTERVAL_MS = 30_000;

/** A running node-mounter. */
export interface NodeMounterService {
  readonly node: string;
  readonly mounter: NodeMounter;
  readonly stage: StageRunner;
  readonly metrics: PluglineMetrics;
  /** What reconcile-at-start undid and kept. */
  readonly reconciled: ReconcileReport;
  /**
   * Compares the checkpoints with what the specs want now and undoes what was unwanted at the
   * previous call too (runs every `reconcileIntervalMs`).
   */
  reconcile(): Promise<ReconcileReport>;
  /** Readiness: NATS connected, consumer bound, informers synced. */
  ready(): boolean;
  /** The named readiness checks (for `/readyz`). */
  readyChecks(): Record<string, () => boolean>;
  /** Stops the stage (lets running units finish), the informers, and a bus it connected. */
  stop(): Promise<void>;
}

type KubeConfig = ReturnType<typeof loadKubeConfig>;

type VmiInformer = Informer<VirtualMachineInstance & { metadata: { name: string } }>;
type PodInformer = Informer<PodView & { metadata?: { name?: string } }>;
type PvcInformer = Informer<PvcView & { metadata?: { name?: string } }>;

interface Truth {
  readonly vmis: VmiInformer;
  readonly pods: PodInformer;
  readonly pvcs: PvcInformer;
  /** The cached launcher and attachment pods of a VMI, by {@link vmiPodsKey}. */
  readonly podsOfVmi: (key: string) => PodView[];
  readonly client: KubeClient;
}

function startInformers(kc: KubeConfig, node: string, logger: Logger): Truth {
  // Each informer's logger names its component and resource.
  // The launcher and attachment pods on this node: the only pods it mounts between.
  const pods: PodInformer = createInformer({
    kc,
    resource: Resources.pods,
    fieldSelector: `spec.nodeName=${node}`,
    labelSelector: `${KubevirtLabel.App} in (${LAUNCHER_LABEL_VALUE},${HOTPLUG_DISK_LABEL_VALUE})`,
    logger,
  });
  return {
    // This node's VMIs only, by the label virt-controller gives a scheduled VMI (as virt-handler
    // watches them): a node's agents neither cache nor wake for the rest of the cluster's VMIs.
    vmis: createInformer({
      kc,
      resource: Resources.virtualMachineInstances,
      labelSelector: `${KubevirtLabel.NodeName}=${node}`,
      logger,
    }),
    pods,
    pvcs: createInformer({ kc, resource: Resources.persistentVolumeClaims, logger }),
    podsOfVmi: pods.index((pod) => {
      const key = vmiKeyOfPod(pod);
      return key === undefined ? [] : [key];
    }),
    client: new KubeClient({ kc, fieldManager: 'node-mounter', logger }),
  };
}

/**
 * How long a plug waits, in its handling, for this node's pod cache to show the attachment pod
 * ready. The orchestrator announces `attached-to-node` from its own cache, and this one usually
 * follows within milliseconds: waiting on the cache's next change costs those milliseconds,
 * where resting the unit as `waiting` cost its first wait (50 ms) and a second handling (beside a
 * busy loop, one plug in ten or more). Past it, the unit rests and is delivered again.
 */
export const POD_CACHE_CATCH_UP_MS = 100;

async function observe(
  truth: Truth,
  where: { node: string; catchUpMs: number },
  item: WorkItem,
  log: Logger,
  signal: AbortSignal,
): Promise<Decision> {
  const { node } = where;
  const podsKey = vmiPodsKey(item.namespace, item.vmiUID);
  const decideNow = async (): Promise<Decision> =>
    decide({
      item,
      node,
      vmi: await currentVmi({ cache: truth.vmis, api: truth.client }, item),
      pods: truth.podsOfVmi(podsKey),
      pvc: (name) => truth.pvcs.get(item.namespace, name),
    });
  const deadline = performance.now() + where.catchUpMs;
  let decision = await decideNow();
  while (
    decision.kind === DecisionKind.Wait &&
    decision.reason === DecisionReason.AttachmentPodNotRunning &&
    !signal.aborted
  ) {
    const left = deadline - performance.now();
    if (left <= 0) break;
    log.debug(
      { namespace: item.namespace, vmi: item.vmi, volume: item.volume, leftMs: Math.round(left) },
      'waiting for the pod cache to show the attachment pod ready',
    );
    if (!(await podsChanged(truth.pods, item.namespace, left, signal))) break;
    decision = await decideNow();
  }
  log.debug(
    { namespace: item.namespace, vmi: item.vmi, volume: item.volume, cause: item.cause, decision },
    'decided from the truth',
  );
  return decision;
}

/**
 * Resolves true at the next added or updated pod of `namespace` in the cache, false after
 * `timeoutMs`. By resourceVersion, not the object: `on` would deep-copy every pod event on the
 * node while a plug waits; a change of another VMI's pod only costs one more look.
 */
function podsChanged(
  pods: PodInformer,
  namespace: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (changed: boolean): void => {
      off();
      clearTimeout(timer);
      signal.removeEventListener('abort', aborted);
      resolve(changed);
    };
    const aborted = (): void => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    const off = pods.onVersion((changedNamespace) => {
      if (changedNamespace === namespace) done(true);
    });
    signal.addEventListener('abort', aborted, { once: true });
  });
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

function cgroupStateOf(
  mode: VolumeMode | undefined,
  outcome: CgroupOutcome | undefined,
  direction: 'allow' | 'deny',
  configured: boolean,
): CgroupState {
  if (mode === VolumeMode.Filesystem || outcome === undefined) return CgroupState.None;
  if (outcome.kind === 'applied')
    return direction === 'allow' ? CgroupState.Allowed : CgroupState.Denied;
  if (outcome.kind === 'unsupported') return CgroupState.Skipped;
  return configured ? CgroupState.Absent : CgroupState.Disabled;
}

function effectsOf(mounter: NodeMounter, configured: boolean): MounterEffects {
  return {
    async plug(request) {
      const started = performance.now();
      const fact = await mounter.plug(request);
      return {
        fact,
        cgroup: cgroupStateOf(fact.mode, fact.cgroup, 'allow', configured),
        durationMs: Math.round(performance.now() - started),
      };
    },
    async unplug(request) {
      const started = performance.now();
      const fact = await mounter.unplug(request);
      return {
        fact,
        cgroup: cgroupStateOf(fact.mode, fact.cgroup, 'deny', configured),
        durationMs: Math.round(performance.now() - started),
      };
    },
  };
}

/** The launcher's device cgroup, `<root>/pod<uid>`, when the root is configured and it exists. */
function cgroupLocator(config: NodeMounterConfig, log: Logger) {
  const root = config.deviceCgroupRoot;
  if (root === undefined) {
    log.info(
      'PLUGLINE_DEVICE_CGROUP_ROOT is not set: block volumes get no device cgroup rule (cgroup: disabled)',
    );
    return undefined;
  }
  return async (launcherUID: string): Promise<string | undefined> => {
    const dir = join(root, `pod${assertUid(root, 'launcherPodUID', launcherUID)}`);
    if (await isDirectory(dir)) return dir;
    log.warn(
      { cgroupDir: dir },
      'the launcher pod has no device cgroup here; skipping its rule (cgroup: absent)',
    );
    return undefined;
  };
}

/**
 * What the specs want on this node now, by VMI uid: those of the VMIs on this node (or not yet
 * placed, which {@link wantedVolumes} places by their launcher). The cache holds only the VMIs
 * labelled for this node, so a VMI with checkpointed volumes that it lacks is read from the API
 * server before those volumes count as unwanted: one not labelled yet, or placed only by its
 * launcher, keeps them; one gone or moved away does not.
 */
async function wantedNow(
  truth: Truth,
  node: string,
  stateDir: string,
): Promise<Map<string, Set<string>>> {
  const mayBeHere = (vmi: VirtualMachineInstance): boolean =>
    (vmi.status?.nodeName ?? '') === '' || vmi.status?.nodeName === node;
  const pods = truth.pods.list();
  const wanted = wantedVolumes(truth.vmis.list(mayBeHere), node, pods);
  const unseen = new Map<string, Set<string>>();
  // Only the checkpoints of VMIs the cache does not account for are read (rarely any).
  for (const vmiUID of await checkpointedVmiUids(stateDir)) {
    if (wanted.has(vmiUID)) continue;
    for (const { namespace } of (await loadCheckpoint(stateDir, vmiUID)).entries) {
      if (namespace === undefined) continue;
      const uids = unseen.get(namespace) ?? new Set<string>();
      unseen.set(namespace, uids.add(vmiUID));
    }
  }
  for (const [namespace, uids] of unseen) {
    const listed = await truth.client.listVmis(namespace);
    const checkpointed = listed.filter((vmi) => uids.has(vmi.metadata.uid ?? ''));
    for (const [uid, volumes] of wantedVolumes(checkpointed, node, pods)) wanted.set(uid, volumes);
  }
  return wanted;
}

/** Logs each undo of a reconcile: `undone` for one that worked, `failed` for one that did not. */
function logOutcomes(
  report: ReconcileReport,
  log: Logger,
  messages: { undone: string; failed: string; level: 'info' | 'warn' },
): void {
  for (const outcome of report.outcomes) {
    const fields = { vmiUID: outcome.vmiUID, volume: outcome.volume, target: outcome.target };
    if (outcome.error === undefined)
      log[messages.level]({ ...fields, action: outcome.action }, messages.undone);
    else log.error({ ...fields, err: outcome.error }, messages.failed);
  }
}

async function reconcileAtStart(
  mounter: NodeMounter,
  truth: Truth,
  { node, stateDir }: { node: string; stateDir: string },
  log: Logger,
): Promise<ReconcileReport> {
  const abandoned = await removeAbandonedTempFiles(stateDir);
  if (abandoned.length > 0) {
    log.info({ files: abandoned }, 'removed checkpoint writes a killed process left unfinished');
  }
  const wanted = await wantedNow(truth, node, stateDir);
  const report = await mounter.reconcile(wanted);
  logOutcomes(report, log, {
    undone: 'reconciled a checkpointed volume no spec wants',
    failed: 'could not undo a checkpointed volume; kept for the next start',
    level: 'info',
  });
  for (const problem of report.problems) log.warn(problem, 'a checkpoint was corrupt');
  log.info(
    { undone: report.facts.length, kept: [...wanted.values()].reduce((n, s) => n + s.size, 0) },
    'reconciled checkpoints at start',
  );
  return report;
}

function actionKey(action: ReconcileAction): string {
  return JSON.stringify([action.type, action.vmiUID, action.entry]);
}

/**
 * The level-triggered repair while running: a volume no spec wants any more whose unplug never
 * reached this stage (its request lost in a crash of an earlier stage) would otherwise stay
 * mounted until the next restart. An action is taken only when the previous look found the same
 * one, so a cache a moment behind a plug in flight (checkpointed, not yet in the informer, or not
 * yet mounted) never undoes it.
 */
function periodicReconciler(
  mounter: NodeMounter,
  truth: Truth,
  { node, stateDir }: { node: string; stateDir: string },
  log: Logger,
) {
  let previous = new Set<string>();
  let running: Promise<ReconcileReport> | undefined;
  const once = async (): Promise<ReconcileReport> => {
    const seen = new Set<string>();
    const report = await mounter.reconcile(await wantedNow(truth, node, stateDir), {
      confirm: (action) => {
        const key = actionKey(action);
        seen.add(key);
        return previous.has(key);
      },
    });
    previous = seen;
    if (report.deferred > 0)
      log.info(
        { volumes: report.deferred },
        'found volumes no spec wants; undone at the next look if still unwanted',
      );
    logOutcomes(report, log, {
      undone: 'undid a volume no spec wants any more',
      failed: 'could not undo a volume no spec wants',
      level: 'warn',
    });
    return report;
  };
  return {
    /** One look; a call while one runs joins it. */
    run: (): Promise<ReconcileReport> =>
      (running ??= once().finally(() => {
        running = undefined;
      })),
    /** Resolves when no look runs. */
    settled: async (): Promise<void> => {
      await running?.catch(() => undefined);
    },
  };
}

/**
 * Starts the node-mounter for `config.nodeName`: provisions its consumer (idempotent), syncs
 * informers (VMIs; pods on this node; PVCs), reconciles the checkpoints against the mount table
 * and what the specs want, then runs the stage (`node-mounter`, unit `ns/vmi/volume`).
 */
export async function startNodeMounter(
  config: NodeMounterConfig,
  deps: NodeMounterDeps,
): Promise<NodeMounterService> {
  const node = config.nodeName;
  const log = childLogger(deps.logger, { stage: Stage.NodeMounter, node });
  const metrics = deps.metrics ?? createMetrics(undefined, { processMetrics: false });
  const kc = deps.kubeConfig ?? loadKubeConfig({ kubeconfig: config.kubeconfig });
  const bus =
    deps.bus ??
    (await connectBus({
      servers: config.natsUrls,
      auth: config.natsAuth,
      name: `node-mounter@${node}`,
      logger: log,
    }));
  const ownsBus = deps.bus === undefined;
  const truth = startInformers(kc, node, log);
  const informers = [truth.vmis, truth.pods, truth.pvcs];
  try {
    await provision(bus, {
      replicas: config.streamReplicas,
      consumers: [{ stage: Stage.NodeMounter, node, ackWaitMs: config.ackWaitMs }],
    });
    await Promise.all(informers.map((i) => i.start()));
    const cgroupDirFor = cgroupLocator(config, log);
    const mounter = new NodeMounter({
      kubeletRoot: config.kubeletRoot,
      stateDir: config.stateDir,
      ...(cgroupDirFor === undefined ? {} : { cgroupDirFor }),
    });
    const where = { node, stateDir: config.stateDir };
    const reconciled = await reconcileAtStart(mounter, truth, where, log);
    const stage = await runStage({
      bus,
      stage: Stage.NodeMounter,
      node,
      machine: mounterStageMachine.provide({
        actors: mounterStageActors(effectsOf(mounter, cgroupDirFor !== undefined)),
      }),
      keyOf: (item) => `${item.namespace}/${item.vmi}/${item.volume}`,
      load: (item, delivery) =>
        observe(
          truth,
          { node, catchUpMs: deps.podCacheCatchUpMs ?? POD_CACHE_CATCH_UP_MS },
          item,
          log,
          delivery.signal,
        ),
      concurrency: config.concurrency,
      leaseTtlMs: config.leaseTtlMs,
      ...(config.instance === undefined ? {} : { instance: config.instance }),
      logger: log,
      metrics,
      ...(deps.workerId === undefined ? {} : { workerId: deps.workerId }),
    });
    const reconciler = periodicReconciler(mounter, truth, where, log);
    const reconcileTimer = setInterval(() => {
      reconciler.run().catch((err: unknown) => log.warn({ err }, 'periodic reconcile failed'));
    }, deps.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS);
    reconcileTimer.unref();
    const readyChecks = () => ({
      nats: () => bus.connected(),
      consumer: () => stage.bound(),
      informers: () => informers.every((i) => i.synced),
    });
    let stopping: Promise<void> | undefined;
    return {
      node,
      mounter,
      stage,
      metrics,
      reconciled,
      reconcile: reconciler.run,
      readyChecks,
      ready: () => Object.values(readyChecks()).every((check) => check()),
      stop: () =>
        (stopping ??= (async () => {
          clearInterval(reconcileTimer);
          await reconciler.settled();
          await stage.stop();
          await Promise.all(informers.map((i) => i.stop()));
          if (ownsBus) await bus.drain();
        })()),
    };
  } catch (err) {
    await Promise.all(informers.map((i) => i.stop()));
    if (ownsBus) await bus.close();
    throw err;
  }
}
