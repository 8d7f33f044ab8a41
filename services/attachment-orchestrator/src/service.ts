import { randomUUID } from 'node:crypto';
import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import {
  BoundedMap,
  Publisher,
  runStage,
  waitsOnNothing,
  type Bus,
  type StageRunner,
} from '@plugline/bus';
import {
  isHotpluggable,
  isName,
  Stage,
  type VirtualMachineInstance,
  type WorkItem,
} from '@plugline/contracts';
import { KubeClient } from '@plugline/kube';
import { childLogger, type Logger, type PluglineMetrics } from '@plugline/telemetry';
import { fromPromise } from 'xstate';
import { createClusterView, type ClusterView, type Nudge } from './cluster.js';
import type { OrchestratorConfig } from './config.js';
import { createOrchestratorMachine, orchestratorDisposition } from './machine.js';
import { NudgeGate } from './nudges.js';
import { isNudge, NudgeCause, type DecideOptions, type Effect, type VmiRef } from './reconcile.js';

/** How many of its own nudges the service remembers (a few seconds' worth under load). */
const OWN_NUDGES_KEPT = 4096;

/** The parts of {@link OrchestratorConfig} the service itself uses. */
export type ServiceConfig = Pick<
  OrchestratorConfig,
  'concurrency' | 'attachImage' | 'coalesceMs' | 'leaseTtlMs'
> &
  Partial<Pick<OrchestratorConfig, 'instance'>>;

export interface OrchestratorDeps {
  bus: Bus;
  kc: KubeConfig;
  logger: Logger;
  metrics?: PluglineMetrics;
  /** Watch one namespace only (tests); all when absent. */
  namespace?: string;
  /** Re-delivery of a waiting VMI when no informer nudge comes (default 5000 ms). */
  fallbackMs?: number;
  /** Sending again an unplug this service sent down the node stages, unanswered (default 15 s). */
  reaskMs?: number;
  /** Storage classes that bind on first consumer (default `['local-wffc']`). */
  waitForFirstConsumerClasses?: readonly string[];
  /**
   * How long a VMI's nudge may wait for a reconcile here before further changes nudge it again
   * (default 1000 ms; see {@link NudgeGate}).
   */
  nudgeOutstandingMs?: number;
}

/** A running attachment-orchestrator. */
export interface AttachmentOrchestrator extends AsyncDisposable {
  readonly stage: StageRunner;
  /** NATS connected, the consumer bound and the informers synced. */
  ready(): boolean;
  stop(): Promise<void>;
}

/** The `applyEffects` adapter: creates (idempotently) and deletes (by UID, grace 0) pods. */
export async function applyEffects(
  kube: KubeClient,
  effects: readonly Effect[],
  log: Logger,
): Promise<void> {
  for (const e of effects) {
    if (e.kind === 'createPod') {
      const { created } = await kube.createPod(e.namespace, e.pod as unknown as V1Pod);
      // What a unit waiting for its pod to show in the cache waits for (`created` in its state).
      log.debug(
        { namespace: e.namespace, pod: e.pod.metadata.name, created },
        'created the attachment pod',
      );
    } else {
      const deleted = await kube.deletePod(e.namespace, e.name, {
        gracePeriodSeconds: 0,
        ...(e.uid === undefined ? {} : { uid: e.uid }),
      });
      log.debug(
        { namespace: e.namespace, pod: e.name, reason: e.reason, deleted },
        'deleted the attachment pod',
      );
    }
  }
}

/** The volume a nudge names in its subject: one the VMI or the change concerns. */
function nudgeVolume(vmi: VirtualMachineInstance, hint?: string): string | undefined {
  const candidates = [
    hint,
    ...(vmi.spec.volumes ?? []).filter(isHotpluggable).map((v) => v.name),
    ...(vmi.status?.volumeStatus ?? []).map((s) => s.name),
  ];
  return candidates.find((c): c is string => c !== undefined && isName(c, 'label'));
}

/**
 * Starts the attachment-orchestrator stage: informers on VMIs, PVCs, DataVolumes and pods,
 * which nudge the VMIs they concern through the stage's own work subject, and the stage
 * runtime running {@link createOrchestratorMachine} per VMI (`keyOf` = `ns/vmi`). At start,
 * once the caches are synced, every VMI with hotplug volumes is nudged once (a restarted
 * replica converges without waiting for the next change).
 */
export async function startAttachmentOrchestrator(
  config: ServiceConfig,
  deps: OrchestratorDeps,
): Promise<AttachmentOrchestrator> {
  const log = childLogger(deps.logger, { stage: Stage.AttachmentOrchestrator });
  const kube = new KubeClient({
    kc: deps.kc,
    fieldManager: Stage.AttachmentOrchestrator,
    logger: log,
  });
  const publisher = new Publisher(deps.bus, {
    logger: log,
    ...(deps.metrics === undefined ? {} : { metrics: deps.metrics }),
  });
  const bootId = randomUUID().slice(0, 8);
  let stopped = false;

  const toWorkItem = (n: Nudge): WorkItem | undefined => {
    const { vmi } = n;
    const volume = nudgeVolume(vmi, n.volume);
    const uid = vmi.metadata.uid;
    if (volume === undefined || uid === undefined) return undefined;
    const inSpec = (vmi.spec.volumes ?? []).some((v) => v.name === volume);
    return {
      v: 1,
      stage: Stage.AttachmentOrchestrator,
      namespace: vmi.metadata.namespace ?? 'default',
      vmi: vmi.metadata.name ?? '',
      vmiUID: uid,
      volume,
      operationId: `nudge-${n.change}`.slice(0, 128).replace(/[^A-Za-z0-9._:-]/g, '-'),
      operation: inSpec ? 'plug' : 'unplug',
      cause: n.cause,
      issuedAt: new Date().toISOString(),
    };
  };
  // The nudges this process published: their change is in its caches already, so a reconcile
  // of the VMI that starts here later covers them (the runtime's `coalesce`). Forgetting one
  // only costs the reconcile it would have saved.
  const ownNudges = new BoundedMap<string, true>(OWN_NUDGES_KEPT);
  // Handled here once the stage runs (see StageRunner.handleHere); published before that.
  const runner: { stage?: StageRunner } = {};
  // One outstanding nudge per VMI: a reconcile re-reads everything, so the changes seen while
  // one waits ride on it instead of queuing a reconcile each behind the VMI's lease.
  const nudges = new NudgeGate<WorkItem>({
    outstandingMs: deps.nudgeOutstandingMs ?? 1000,
    publish: (item) => {
      ownNudges.set(item.operationId, true);
      const here = runner.stage;
      const sent = here === undefined ? publisher.publishWork(item) : here.handleHere(item);
      return sent.catch((err: unknown) => {
        if (!stopped)
          log.warn({ err, vmi: item.vmi, cause: item.cause }, 'could not publish a nudge');
        throw err;
      });
    },
  });
  const publishNudge = (n: Nudge): void => {
    const item = stopped ? undefined : toWorkItem(n);
    if (item !== undefined) nudges.offer(`${item.namespace}/${item.vmi}`, item);
  };

  const cluster: ClusterView = createClusterView({
    kc: deps.kc,
    logger: log,
    ...(deps.namespace === undefined ? {} : { namespace: deps.namespace }),
    onNudge: publishNudge,
  });
  const options: DecideOptions = {
    coalesceMs: config.coalesceMs,
    fallbackMs: deps.fallbackMs ?? 5000,
    ...(deps.reaskMs === undefined ? {} : { reaskMs: deps.reaskMs }),
    attachImage: config.attachImage,
    waitForFirstConsumerClasses: deps.waitForFirstConsumerClasses ?? ['local-wffc'],
  };
  const machine = createOrchestratorMachine(options).provide({
    actors: {
      observe: fromPromise<ReturnType<ClusterView['observe']>, { vmi: VmiRef }>(({ input }) => {
        nudges.observed(`${input.vmi.namespace}/${input.vmi.name}`);
        return Promise.resolve(cluster.observe(input.vmi));
      }),
      applyEffects: fromPromise<void, { effects: Effect[] }>(({ input }) =>
        applyEffects(kube, input.effects, log),
      ),
    },
  });

  await cluster.start();
  let stage: StageRunner;
  try {
    stage = await runStage({
      bus: deps.bus,
      stage: Stage.AttachmentOrchestrator,
      machine,
      keyOf: (item) => `${item.namespace}/${item.vmi}`,
      coalesce: (item) => isNudge(item.cause) && ownNudges.get(item.operationId) !== undefined,
      input: (item) => ({ vmi: { namespace: item.namespace, name: item.vmi, uid: item.vmiUID } }),
      disposition: orchestratorDisposition,
      // A VMI's plan comes from the caches and the operations its snapshot keeps, not from the
      // item: once the unit waits on nothing, a work item left waiting for its pod is served
      // (it came back five seconds later for a handling that changed nothing, once a plug).
      servedWaiting: waitsOnNothing,
      concurrency: config.concurrency,
      leaseTtlMs: config.leaseTtlMs,
      ...(config.instance === undefined ? {} : { instance: config.instance }),
      logger: log,
      publisher,
      ...(deps.metrics === undefined ? {} : { metrics: deps.metrics }),
    });
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  runner.stage = stage;
  for (const vmi of cluster.vmisToReconcile()) {
    publishNudge({ vmi, cause: NudgeCause.Startup, change: `${bootId}-${vmi.metadata.uid ?? ''}` });
  }
  log.info({ vmis: cluster.vmisToReconcile().length }, 'attachment-orchestrator started');

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      stopped = true;
      nudges.close();
      await stage.stop();
      await cluster.stop();
    })());
  return {
    stage,
    ready: () => deps.bus.connected() && stage.bound() && cluster.synced(),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
