import { randomUUID } from 'node:crypto';
import { provision, Publisher, runStage, type Bus, type StageRunner } from '@plugline/bus';
import {
  isHotpluggable,
  isName,
  KubevirtLabel,
  PersistentVolumeMode,
  Stage,
  type OperationKind,
  type VirtualMachineInstance,
  type WorkItem,
} from '@plugline/contracts';
import {
  createLibvirtDriver,
  createSimulatedDriver,
  DeviceEventType,
  domainNameOf,
  parseDomainName,
  volumeOfAlias,
  type DeviceEvent,
  type DomainDriver,
} from '@plugline/hypervisor';
import {
  createInformer,
  KubeClient,
  Resources,
  type Informer,
  type loadKubeConfig,
} from '@plugline/kube';
import { childLogger, type Logger, type PluglineMetrics } from '@plugline/telemetry';
import { createActors, DeviceEventLog } from './adapters.js';
import { HypervisorKind, type DomainUpdaterConfig } from './config.js';
import { detachReported, domainUpdaterMachine, NudgeCause } from './machine.js';
import {
  createObserver,
  createdByKeys,
  launcherFromCache,
  readyTargetOf,
  runsOn,
  specDiskOf,
  type PodLike,
  type PvcLike,
} from './observe.js';
import { checkedHotplugSource } from './paths.js';

type KubeConfig = ReturnType<typeof loadKubeConfig>;

/** What the service needs of its configuration (tests give a subset with overrides). */
export type DomainUpdaterSettings = Pick<
  DomainUpdaterConfig,
  | 'nodeName'
  | 'kubeletRoot'
  | 'hypervisor'
  | 'libvirtUri'
  | 'simStateDir'
  | 'simDetachDelayMs'
  | 'detachTimeoutMs'
  | 'diskSourceDir'
  | 'confirmTimeoutMs'
  | 'concurrency'
> &
  Partial<Pick<DomainUpdaterConfig, 'streamReplicas' | 'ackWaitMs' | 'leaseTtlMs' | 'instance'>>;

const DEFAULT_RECONCILE_INTERVAL_MS = 30_000;

/** How often a unit waiting for its detach looks again (see `waitingRecheckMs`). */
const DETACH_RECHECK_MS = 5_000;

export interface DomainUpdaterDeps {
  bus: Bus;
  kc: KubeConfig;
  logger: Logger;
  metrics?: PluglineMetrics;
  /**
   * The hypervisor; by default one is made from the settings (and closed on stop). With the
   * simulated hypervisor, pass `defineDomain` too (the service then defines missing domains).
   */
  driver?: DomainDriver;
  defineDomain?: (domain: string) => Promise<void>;
  listDomains?: () => Promise<string[]>;
  /** How often domains and specs are compared again after the start (default 30 s). */
  reconcileIntervalMs?: number;
}

export interface DomainUpdater {
  readonly stage: StageRunner;
  readonly driver: DomainDriver;
  /** Informers synced, consumer bound, NATS connected. */
  ready(): boolean;
  /** Publishes a nudge for every volume whose domain and spec disagree (run at start). */
  reconcile(): Promise<number>;
  stop(): Promise<void>;
}

/** Creates the streams, this node's consumer and the stage's buckets. Idempotent. */
export async function provisionDomainUpdater(
  bus: Bus,
  settings: Pick<DomainUpdaterSettings, 'nodeName'> & Partial<DomainUpdaterSettings>,
): Promise<void> {
  await provision(bus, {
    replicas: settings.streamReplicas ?? 1,
    consumers: [
      {
        stage: Stage.DomainUpdater,
        node: settings.nodeName,
        ackWaitMs: settings.ackWaitMs ?? 30_000,
      },
    ],
  });
}

function makeDriver(settings: DomainUpdaterSettings): {
  driver: DomainDriver;
  defineDomain?: (domain: string) => Promise<void>;
  listDomains?: () => Promise<string[]>;
} {
  if (settings.hypervisor === HypervisorKind.Libvirt) {
    return { driver: createLibvirtDriver({ uri: settings.libvirtUri }) };
  }
  const sim = createSimulatedDriver({
    stateDir: settings.simStateDir,
    detachDelayMs: settings.simDetachDelayMs,
  });
  return {
    driver: sim,
    defineDomain: (d) => sim.defineDomain(d),
    listDomains: () => sim.listDomains(),
  };
}

/**
 * Starts the domain-updater of one node: informers (VMIs, this node's launcher pods, PVCs), the
 * device-event subscription (each `device-added` / `device-removed` of a `ua-<volume>` disk
 * becomes a nudge for that volume), the stage loop, and the start-up reconcile.
 */
export async function startDomainUpdater(
  settings: DomainUpdaterSettings,
  deps: DomainUpdaterDeps,
): Promise<DomainUpdater> {
  const node = settings.nodeName;
  const log = childLogger(deps.logger, { component: 'domain-updater', node });
  const made = deps.driver === undefined ? makeDriver(settings) : undefined;
  const driver = deps.driver ?? made!.driver;
  const defineDomain = deps.defineDomain ?? made?.defineDomain;
  const listDomains = deps.listDomains ?? made?.listDomains;

  // This node's VMIs only, by the label virt-controller gives a scheduled VMI (as virt-handler
  // watches them): a node's agents neither cache nor wake for the rest of the cluster's VMIs.
  const vmis = createInformer<VirtualMachineInstance>({
    kc: deps.kc,
    resource: Resources.virtualMachineInstances,
    labelSelector: `${KubevirtLabel.NodeName}=${node}`,
    logger: log,
  });
  const pods = createInformer<PodLike & { metadata?: { namespace?: string } }>({
    kc: deps.kc,
    resource: Resources.pods,
    labelSelector: 'kubevirt.io=virt-launcher',
    fieldSelector: `spec.nodeName=${node}`,
    logger: log,
  });
  const pvcs = createInformer<PvcLike>({
    kc: deps.kc,
    resource: Resources.persistentVolumeClaims,
    logger: log,
  });
  const launchersOf = pods.index(createdByKeys);
  const informers: Informer<never>[] = [vmis, pods, pvcs] as unknown as Informer<never>[];
  const events = new DeviceEventLog(driver);
  const publisher = new Publisher(deps.bus, {
    logger: log,
    ...(deps.metrics === undefined ? {} : { metrics: deps.metrics }),
  });
  const stopping = new AbortController();
  let stage: StageRunner | undefined;

  /** Defines the launcher's domain when the simulated hypervisor does not have it (libvirt: never). */
  const known = new Set<string>();
  async function ensureDomain(domain: string): Promise<void> {
    if (defineDomain === undefined || known.has(domain)) return;
    const domains = listDomains === undefined ? [] : await listDomains();
    if (!domains.includes(domain)) {
      await defineDomain(domain);
      log.info({ domain }, 'defined the simulated domain of a running VMI');
    }
    known.add(domain);
  }

  /**
   * Work for one volume's unit. With `restate`, a resync round of its own: the unit states its
   * facts again, and they pass the event stream's duplicate window.
   */
  async function nudge(
    vmi: VirtualMachineInstance,
    volume: string,
    cause: string,
    operation: OperationKind,
    restate = false,
  ): Promise<void> {
    const issuedAt = new Date().toISOString();
    const item: WorkItem = {
      v: 1,
      stage: Stage.DomainUpdater,
      node,
      namespace: vmi.metadata.namespace!,
      vmi: vmi.metadata.name!,
      vmiUID: vmi.metadata.uid!,
      volume,
      operationId: `${cause}-${randomUUID()}`,
      operation,
      cause,
      issuedAt,
      ...(restate ? { resync: issuedAt } : {}),
    };
    await publisher.publishWork(item, stopping.signal);
  }

  function onDevice(event: DeviceEvent, expected: boolean): void {
    if (event.type !== DeviceEventType.Added && event.type !== DeviceEventType.Removed) return;
    // This process's own attach, confirmed by the handling that made it: a nudge would only run
    // the unit again to find it attached (one handling per plug, issue 10). Should that handling
    // fail, its work item is delivered again.
    if (expected) return;
    const volume = volumeOfAlias(event.alias);
    const names = parseDomainName(event.domain);
    if (volume === undefined || names === undefined || !isName(volume, 'label')) return;
    const vmi = vmis.get(names.namespace, names.vmi);
    if (vmi?.metadata.uid === undefined || !runsOn(vmi, node)) return;
    const added = event.type === DeviceEventType.Added;
    nudge(
      vmi,
      volume,
      added ? NudgeCause.DeviceAdded : NudgeCause.DeviceRemoved,
      added ? 'plug' : 'unplug',
    ).catch((err: unknown) =>
      log.warn(
        { err, domain: event.domain, alias: event.alias },
        'could not publish a device nudge',
      ),
    );
  }

  const observer = createObserver({
    node,
    kubeletRoot: settings.kubeletRoot,
    diskSourceDir: settings.diskSourceDir,
    vmis,
    api: new KubeClient({ kc: deps.kc, fieldManager: 'plugline-domain-updater', logger: log }),
    launchersOf,
    pvcs,
    driver,
    ensureDomain,
    deviceEvents: events,
  });

  /**
   * Whether node-mounter has made a volume's source. A source refused as not node-mounter's (a
   * symlink, the wrong kind, a bad launcher UID) counts too: the nudged stage reports the refusal.
   */
  async function sourceThere(launcherUID: string, volume: string): Promise<boolean> {
    for (const mode of [PersistentVolumeMode.Filesystem, PersistentVolumeMode.Block]) {
      try {
        if (
          (await checkedHotplugSource(settings.kubeletRoot, launcherUID, volume, mode)) !==
          undefined
        )
          return true;
      } catch (err) {
        log.warn({ err, volume }, 'reconcile: refused a hotplug source; the stage will report it');
        return true;
      }
    }
    return false;
  }

  /**
   * Volumes whose domain and spec disagree get a nudge, and so do attached volumes whose `Ready`
   * status names another target than their disk has; the machines decide the rest.
   */
  async function reconcile(): Promise<number> {
    let nudged = 0;
    for (const vmi of vmis.list((v) => runsOn(v, node))) {
      const ns = vmi.metadata.namespace!;
      const name = vmi.metadata.name!;
      const domain = domainNameOf(ns, name);
      let targets: Map<string, string>;
      try {
        await ensureDomain(domain);
        targets = new Map(
          (await driver.listDisks(domain)).flatMap((d) => {
            const volume = volumeOfAlias(d.alias);
            return volume === undefined ? [] : [[volume, d.target] as const];
          }),
        );
      } catch (err) {
        log.warn({ err, domain }, 'reconcile: cannot read the domain');
        continue;
      }
      for (const [volume, target] of targets) {
        if (!isName(volume, 'label')) continue;
        if (specDiskOf(vmi, volume) === undefined) {
          await nudge(vmi, volume, NudgeCause.Reconcile, 'unplug');
          nudged++;
        } else if ((readyTargetOf(vmi, volume) ?? target) !== target) {
          // Its report was lost (to a store rolled back, say) or dropped: stated again.
          await nudge(vmi, volume, NudgeCause.Reconcile, 'plug', true);
          nudged++;
        }
      }
      const launcher = launcherFromCache(launchersOf, vmi.metadata.uid!, node, ns);
      if (launcher === undefined) continue;
      const launcherUID = launcher.metadata!.uid!;
      for (const volume of (vmi.spec.volumes ?? []).filter(isHotpluggable)) {
        if (targets.has(volume.name) || specDiskOf(vmi, volume.name) === undefined) continue;
        if (await sourceThere(launcherUID, volume.name)) {
          await nudge(vmi, volume.name, NudgeCause.Reconcile, 'plug');
          nudged++;
        }
      }
    }
    log.info({ nudged }, 'reconciled the live domains against the desired volumes');
    return nudged;
  }

  const unsubscribeDevices = events.onDevice(onDevice);
  try {
    await Promise.all(informers.map((i) => i.start()));
    if (defineDomain !== undefined) {
      for (const vmi of vmis.list((v) => runsOn(v, node))) {
        await ensureDomain(domainNameOf(vmi.metadata.namespace!, vmi.metadata.name!)).catch(
          (err: unknown) => log.warn({ err }, 'could not define a simulated domain'),
        );
      }
    }
    const machine = domainUpdaterMachine.provide({
      actors: createActors({ driver, events, confirmTimeoutMs: settings.confirmTimeoutMs }),
    });
    stage = await runStage({
      bus: deps.bus,
      stage: Stage.DomainUpdater,
      node,
      machine,
      logger: log,
      ...(deps.metrics === undefined ? {} : { metrics: deps.metrics }),
      publisher,
      concurrency: settings.concurrency,
      ...(settings.leaseTtlMs === undefined ? {} : { leaseTtlMs: settings.leaseTtlMs }),
      ...(settings.instance === undefined ? {} : { instance: settings.instance }),
      keyOf: (item) => `${item.namespace}/${item.vmi}/${item.volume}`,
      // A detach waits for the guest up to detachTimeoutMs (60 s); the device-removed event
      // finishes the unit through a nudge long before, and the waiting item is then acked at
      // once (servedWaiting), or, left waiting by another replica, at its next look within
      // seconds rather than at the deadline.
      waitingRecheckMs: DETACH_RECHECK_MS,
      servedWaiting: detachReported,
      input: (item) => ({
        key: { namespace: item.namespace, vmi: item.vmi, volume: item.volume },
        node,
        detachTimeoutMs: settings.detachTimeoutMs,
      }),
      load: (item, delivery) => observer.observe(item, delivery.signal),
    });
    await reconcile();
  } catch (err) {
    unsubscribeDevices();
    events.close();
    await stage?.stop();
    await Promise.all(informers.map((i) => i.stop()));
    if (made !== undefined) await made.driver.close();
    throw err;
  }
  const runner = stage;
  // Level-triggered repair, not only at start: a disk left in a domain that no status entry or
  // work item names any more (its entry dropped while NATS lost a node) has nothing else to
  // bring it back to the spec.
  const reconciler = setInterval(() => {
    reconcile().catch((err: unknown) => log.warn({ err }, 'periodic reconcile failed'));
  }, deps.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS);
  reconciler.unref();

  let stopped: Promise<void> | undefined;
  return {
    stage: runner,
    driver,
    ready: () => runner.bound() && informers.every((i) => i.synced),
    reconcile,
    stop() {
      stopped ??= (async () => {
        clearInterval(reconciler);
        await runner.stop();
        stopping.abort(new Error('domain-updater stopping'));
        unsubscribeDevices();
        events.close();
        await Promise.all(informers.map((i) => i.stop()));
        if (made !== undefined) await made.driver.close();
      })();
      return stopped;
    },
  };
}
