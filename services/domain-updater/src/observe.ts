import {
  claimNameOf,
  DiskBus,
  KubevirtLabel,
  LAUNCHER_LABEL_VALUE,
  PersistentVolumeMode,
  PluglineError,
  VirtualMachineInstancePhase,
  VolumePhase,
  type Disk,
  type VirtualMachineInstance,
  type WorkItem,
} from '@plugline/contracts';
import {
  aliasOf,
  allocateTargets,
  DeviceEventType,
  domainNameOf,
  hotplugSourcePath,
  isHotplugBus,
  LAUNCHER_HOTPLUG_DIR,
  prepareLibvirtDisk,
  probeDirectIO,
  type DirectIOProbe,
  type DomainDisk,
  type DomainDriver,
} from '@plugline/hypervisor';
import { currentVmi, type Informer, type KubeClient } from '@plugline/kube';
import type { DeviceEventLog } from './adapters.js';
import { DiskSourceDir } from './config.js';
import type { Observation, Problem } from './observation.js';
import { checkedHotplugSource, hotplugHostDir } from './paths.js';

/** A pod as the launcher lookup reads it. */
export interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    deletionTimestamp?: string | Date;
  };
  spec?: { nodeName?: string };
  status?: { phase?: string };
}

/** A PVC as the volume-mode lookup reads it. */
export interface PvcLike {
  metadata?: { name?: string; namespace?: string };
  spec?: { volumeMode?: string };
}

/**
 * Pure: the VMI's launcher pod on `node` (the running one first), if any. With `namespace`, only
 * a pod in the VMI's namespace counts: a pod elsewhere carrying its labels is not its launcher.
 */
export function findLauncher(
  pods: readonly PodLike[],
  vmiUID: string,
  node: string,
  namespace?: string,
): PodLike | undefined {
  const candidates = pods.filter(
    (p) =>
      p.metadata?.labels?.[KubevirtLabel.App] === LAUNCHER_LABEL_VALUE &&
      p.metadata.labels[KubevirtLabel.CreatedBy] === vmiUID &&
      (namespace === undefined || p.metadata.namespace === namespace) &&
      p.spec?.nodeName === node &&
      p.metadata.deletionTimestamp === undefined &&
      p.metadata.uid !== undefined,
  );
  return candidates.find((p) => p.status?.phase === 'Running') ?? candidates[0];
}

/**
 * The VMI's launcher pod on `node` from the pod cache (see {@link findLauncher}); `createdBy`
 * finds the cached pods that name the VMI as their creator (see {@link createdByKeys}).
 */
export function launcherFromCache(
  createdBy: LaunchersOf,
  vmiUID: string,
  node: string,
  namespace?: string,
): PodLike | undefined {
  return findLauncher(createdBy(vmiUID), vmiUID, node, namespace);
}

/** The cached pods created by the VMI with this uid (an index of the pod cache). */
export type LaunchersOf = (vmiUID: string) => readonly PodLike[];

/**
 * The keys the pod cache is indexed by: the uid of the VMI that created the pod. A VMI's launcher
 * is found by key on every work item, not by a look through every launcher pod of the node.
 */
export function createdByKeys(pod: PodLike): string[] {
  const uid = pod.metadata?.labels?.[KubevirtLabel.CreatedBy];
  return uid === undefined ? [] : [uid];
}

/** Pure: whether the VMI runs on `node`. */
export function runsOn(vmi: VirtualMachineInstance, node: string): boolean {
  return (
    vmi.status?.nodeName === node &&
    vmi.status.phase === VirtualMachineInstancePhase.Running &&
    vmi.metadata.deletionTimestamp === undefined
  );
}

/** Pure: the spec disk of a volume when both the volume and its disk are in the spec. */
export function specDiskOf(vmi: VirtualMachineInstance, volume: string): Disk | undefined {
  const inVolumes = (vmi.spec.volumes ?? []).some((v) => v.name === volume);
  if (!inVolumes) return undefined;
  return (vmi.spec.domain.devices.disks ?? []).find((d) => d.name === volume);
}

/** Pure: the bus a disk asks for (scsi unless told). */
export function busOf(disk: Disk): string {
  return disk.lun?.bus ?? disk.disk?.bus ?? DiskBus.Scsi;
}

/** Pure: the target the status entry of `volume` names while it is `Ready`. */
export function readyTargetOf(vmi: VirtualMachineInstance, volume: string): string | undefined {
  const entry = vmi.status?.volumeStatus?.find((s) => s.name === volume);
  return entry?.phase === VolumePhase.Ready && entry.target ? entry.target : undefined;
}

/**
 * Pure: the target of a volume about to be attached. The volume keeps its `volumeStatus` target
 * unless another live disk holds it; otherwise the lowest free name of its bus, skipping every
 * target held by a status entry, a live disk, or a reservation of another volume.
 */
export function chooseTarget(
  vmi: VirtualMachineInstance,
  volume: string,
  bus: 'scsi' | 'virtio',
  liveDisks: readonly DomainDisk[],
  reservedByOthers: readonly string[],
): string {
  const occupied = [...liveDisks.map((d) => d.target), ...reservedByOthers];
  const existing = (vmi.status?.volumeStatus ?? [])
    .map((s) => ({ name: s.name, target: s.target ?? '' }))
    .filter((s) => s.name !== volume || !occupied.includes(s.target));
  const chosen = allocateTargets(existing, [{ name: volume, bus }], occupied).get(volume);
  if (chosen === undefined) throw new Error(`no target for ${volume}`);
  return chosen;
}

function problem(err: unknown): Problem {
  if (err instanceof PluglineError) return { reason: err.reason, message: err.message };
  return { reason: 'Unknown', message: err instanceof Error ? err.message : String(err) };
}

const isSpecProblem = (err: unknown): boolean =>
  err instanceof PluglineError &&
  [
    'InvalidDiskSpec',
    'InvalidName',
    'PathEscape',
    'WrongFileKind',
    'InvalidTarget',
    'TargetsExhausted',
  ].includes(err.reason);

/** Targets handed out but not yet visible in the domain XML, per domain (in-process only). */
export class TargetReservations {
  readonly #byDomain = new Map<string, Map<string, { target: string; until: number }>>();
  constructor(private readonly ttlMs = 30_000) {}

  reserve(domain: string, volume: string, target: string, now = Date.now()): void {
    let m = this.#byDomain.get(domain);
    if (m === undefined) {
      m = new Map<string, { target: string; until: number }>();
      this.#byDomain.set(domain, m);
    }
    m.set(volume, { target, until: now + this.ttlMs });
  }

  release(domain: string, volume: string): void {
    this.#byDomain.get(domain)?.delete(volume);
  }

  heldByOthers(domain: string, volume: string, now = Date.now()): string[] {
    const m = this.#byDomain.get(domain);
    if (m === undefined) return [];
    const held: string[] = [];
    for (const [name, r] of m) {
      if (r.until <= now) m.delete(name);
      else if (name !== volume) held.push(r.target);
    }
    return held;
  }
}

export interface ObserverDeps {
  node: string;
  kubeletRoot: string;
  diskSourceDir: DiskSourceDir;
  vmis: Pick<Informer<VirtualMachineInstance>, 'get'>;
  /** Asked when the cache may lag behind the item (see `currentVmi`). */
  api: Pick<KubeClient, 'getVmi'>;
  /** The launcher pods of a VMI, by its uid (see {@link createdByKeys}). */
  launchersOf: LaunchersOf;
  pvcs: Pick<Informer<PvcLike>, 'get'>;
  driver: DomainDriver;
  /** Defines the domain when missing (the simulated hypervisor stands in for virt-launcher). */
  ensureDomain?: (domain: string) => Promise<void>;
  probe?: DirectIOProbe;
  reservations?: TargetReservations;
  /** The device events this process saw (when each disk was last removed). */
  deviceEvents?: Pick<DeviceEventLog, 'lastSeen'>;
}

/**
 * Re-reads the truth for one work item: the VMI (informer), the live domain's disks, and for a
 * volume to plug, the launcher's hotplug folder, the PVC's volume mode and the converted disk.
 */
export function createObserver(deps: ObserverDeps) {
  const reservations = deps.reservations ?? new TargetReservations();
  const probe = deps.probe ?? probeDirectIO;

  async function observe(item: WorkItem, signal?: AbortSignal): Promise<Observation> {
    let vmi: VirtualMachineInstance | undefined;
    try {
      vmi = await currentVmi({ cache: deps.vmis, api: deps.api }, item);
    } catch (err) {
      return { kind: 'unavailable', ...problem(err) };
    }
    if (vmi === undefined) return { kind: 'gone', why: 'the VMI does not exist' };
    if (vmi.metadata.uid !== item.vmiUID) {
      return { kind: 'gone', why: `the VMI is another incarnation (uid ${vmi.metadata.uid})` };
    }
    if (!runsOn(vmi, deps.node))
      return { kind: 'gone', why: `the VMI is not running on ${deps.node}` };
    const domain = domainNameOf(item.namespace, item.vmi);
    const alias = aliasOf(item.volume);
    // Before the listing: a removal seen now happened before the disks were read.
    const removedAt = deps.deviceEvents?.lastSeen(DeviceEventType.Removed, domain, alias);
    let disks: DomainDisk[];
    try {
      await deps.ensureDomain?.(domain);
      disks = await deps.driver.listDisks(domain, signal === undefined ? {} : { signal });
    } catch (err) {
      return { kind: 'unavailable', ...problem(err) };
    }
    const live = disks.find((d) => d.alias === alias);
    const disk = specDiskOf(vmi, item.volume);
    const base = {
      kind: 'observed' as const,
      domain,
      vmiUID: vmi.metadata.uid,
      desired: disk === undefined ? ('unplug' as const) : ('plug' as const),
      present: live === undefined ? null : { target: live.target },
      ...(removedAt === undefined ? {} : { removedAt }),
      sourceReady: live !== undefined,
      plan: null,
      planError: null,
    };
    if (disk === undefined || live !== undefined) return base;
    return { ...base, ...(await planAttach(vmi, item.volume, disk, domain, disks)) };
  }

  async function planAttach(
    vmi: VirtualMachineInstance,
    volume: string,
    disk: Disk,
    domain: string,
    disks: DomainDisk[],
  ): Promise<
    Pick<Extract<Observation, { kind: 'observed' }>, 'sourceReady' | 'plan' | 'planError'>
  > {
    const notReady = { sourceReady: false, plan: null, planError: null };
    const launcher = launcherFromCache(
      deps.launchersOf,
      vmi.metadata.uid!,
      deps.node,
      vmi.metadata.namespace,
    );
    if (launcher === undefined) return notReady;
    const launcherUID = launcher.metadata!.uid!;
    try {
      // Validates the UID (from the API server, still never trusted as a path segment).
      const hostDir = hotplugHostDir(deps.kubeletRoot, launcherUID);
      const volumeMode = await volumeModeOf(vmi, volume, launcherUID);
      if (volumeMode === undefined) return notReady;
      const bus = busOf(disk);
      if (!isHotplugBus(bus)) {
        return {
          sourceReady: true,
          plan: null,
          planError: {
            reason: 'InvalidDiskSpec',
            message: `disk ${volume}: bus ${JSON.stringify(bus)} cannot be hotplugged`,
          },
        };
      }
      const hostSource = hotplugSourcePath(hostDir, volume, volumeMode);
      const target = chooseTarget(
        vmi,
        volume,
        bus,
        disks,
        reservations.heldByOthers(domain, volume),
      );
      // Held before the next await: two volumes planned together must not both take it (the
      // loser's attach failed with DuplicateTarget and came back after a retry's delay).
      reservations.reserve(domain, volume, target);
      const status = vmi.status?.volumeStatus?.find((s) => s.name === volume);
      const preallocated = status?.persistentVolumeClaimInfo?.preallocated;
      const prepared = await prepareLibvirtDisk(
        {
          volumeName: volume,
          disk,
          volumeMode,
          target,
          hotplugDir:
            deps.diskSourceDir === DiskSourceDir.Launcher ? LAUNCHER_HOTPLUG_DIR : hostDir,
          ...(preallocated === undefined ? {} : { preallocated }),
        },
        { probe: () => probe(hostSource) },
      );
      return {
        sourceReady: true,
        plan: { diskXml: prepared.xml, target, sourcePath: prepared.sourcePath, bus },
        planError: null,
      };
    } catch (err) {
      reservations.release(domain, volume);
      if (isSpecProblem(err)) return { sourceReady: true, plan: null, planError: problem(err) };
      if (err instanceof PluglineError && err.reason === 'SourceMissing') return notReady;
      throw err;
    }
  }

  /**
   * The PVC's volume mode, when its source is in the hotplug folder: from the PVC, else the
   * status's PVC info, else whichever source node-mounter made. Undefined while there is none.
   * A source that is not what node-mounter makes (a symlink, the wrong kind) is refused.
   */
  async function volumeModeOf(
    vmi: VirtualMachineInstance,
    volume: string,
    launcherUID: string,
  ): Promise<PersistentVolumeMode | undefined> {
    const specVolume = (vmi.spec.volumes ?? []).find((v) => v.name === volume);
    const claim = specVolume === undefined ? undefined : claimNameOf(specVolume);
    const pvc =
      claim === undefined ? undefined : deps.pvcs.get(vmi.metadata.namespace ?? '', claim);
    const status = vmi.status?.volumeStatus?.find((s) => s.name === volume);
    const known = (pvc?.spec?.volumeMode ?? status?.persistentVolumeClaimInfo?.volumeMode) as
      PersistentVolumeMode | undefined;
    const modes: PersistentVolumeMode[] =
      known === undefined
        ? [PersistentVolumeMode.Filesystem, PersistentVolumeMode.Block]
        : [known === PersistentVolumeMode.Block ? known : PersistentVolumeMode.Filesystem];
    for (const mode of modes) {
      if ((await checkedHotplugSource(deps.kubeletRoot, launcherUID, volume, mode)) !== undefined)
        return mode;
    }
    return undefined;
  }

  return { observe };
}

export type Observer = ReturnType<typeof createObserver>;
