import { realpath, stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';

import { EventType, NotFoundError, PathEscapeError } from '@plugline/contracts';

import { ForeignVolumeError, SourceNotFoundError } from './errors.js';

import {
  checkpointedVmiUids,
  loadCheckpoint,
  parseCheckpointEntry,
  reconcileAtStart,
  ReconcileActionType,
  saveCheckpoint,
  withEntry,
  withoutVolume,
} from './checkpoint.js';
import type { CheckpointEntry, LoadedCheckpoint, ReconcileAction } from './checkpoint.js';
import {
  allowDevice,
  applyOwnership,
  blockDeviceNumber,
  createBlockNode,
  denyDevice,
  mountFilesystem,
  QEMU_OWNERSHIP,
  isMountedOn,
  removeBlockNode,
  unmountFilesystem,
} from './mounter.js';
import type { CgroupResult, DeviceNumber, Ownership } from './mounter.js';
import {
  assertLabelSegment,
  assertRealPathInsidePod,
  assertRealPathInsideRoot,
  assertUid,
  attachmentBlockSource,
  attachmentBlockSourcePath,
  attachmentFilesystemSource,
  attachmentFilesystemSourcePath,
  isLexicallyInside,
  launcherHotplugDir,
  launcherHotplugDirPath,
  targetPath,
  targetPathIn,
  VolumeMode,
} from './paths.js';

/**
 * Awaits independent reads together and answers as if they had been made one after another: the
 * first failure in the list's order is thrown (so the error a caller sees does not depend on
 * which finished first).
 */
async function inOrder<T extends readonly unknown[]>(
  reads: readonly [...{ [K in keyof T]: Promise<T[K]> }],
): Promise<T> {
  const settled = await Promise.allSettled(reads as readonly Promise<unknown>[]);
  for (const result of settled) if (result.status === 'rejected') throw result.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

/**
 * The node-mounter's node-side logic: plug, unplug and reconcile-at-start, each idempotent and
 * each returning the facts it established (for `mounted-to-pod` / `unmounted-from-pod`).
 */

export interface NodeMounterOptions {
  /** The kubelet root (`/var/lib/kubelet`; kube-sim's kubelet root in tests). */
  readonly kubeletRoot: string;
  /** Where per-VMI checkpoints live (`<stateDir>/<vmiUID>.json`). */
  readonly stateDir: string;
  /** Owner and mode of the disk in the launcher; default qemu 107:107, 0660. */
  readonly ownership?: Ownership;
  /**
   * The launcher pod's device cgroup directory (v1 devices cgroup, or a v2 cgroup directory).
   * Absent, or returning undefined → block volumes get no cgroup rule (reported as `skipped`).
   */
  readonly cgroupDirFor?: (launcherUID: string) => string | undefined | Promise<string | undefined>;
}

export interface PlugRequest {
  /** The VMI's namespace: recorded, so that only a request for the same namespace undoes it. */
  readonly namespace?: string;
  readonly vmiUID: string;
  readonly launcherUID: string;
  readonly attachPodUID: string;
  readonly volume: string;
  readonly pvName: string;
  readonly mode: VolumeMode;
}

export interface UnplugRequest {
  /** Refuses (ForeignVolumeError) a checkpointed volume recorded for another namespace. */
  readonly namespace?: string;
  readonly vmiUID: string;
  readonly volume: string;
  /** Lets unplug clean a target the checkpoint does not know (with `mode`). */
  readonly launcherUID?: string;
  readonly mode?: VolumeMode;
}

export interface LocatedVolume {
  readonly source: string;
  readonly target: string;
}

export type CgroupOutcome = CgroupResult | { readonly kind: 'skipped'; readonly reason: string };

export interface MountedFact {
  readonly type: typeof EventType.MountedToPod;
  readonly vmiUID: string;
  readonly volume: string;
  readonly mode: VolumeMode;
  readonly source: string;
  readonly target: string;
  /** Something was created by this call (false: it was all there already). */
  readonly changed: boolean;
  /** Filesystem: the target was already mounted from another file and was left alone. */
  readonly sourceMismatch: boolean;
  /** Block: the device number of the node. */
  readonly device?: DeviceNumber;
  /** Block: what happened in the launcher's device cgroup. */
  readonly cgroup?: CgroupOutcome;
}

export interface UnmountedFact {
  readonly type: typeof EventType.UnmountedFromPod;
  readonly vmiUID: string;
  readonly volume: string;
  readonly mode?: VolumeMode;
  readonly target?: string;
  /** Something was undone by this call (false: it was gone already). */
  readonly changed: boolean;
  /** Filesystem: mounts removed from the target. */
  readonly unmounted: number;
  /** The target file or device node was removed. */
  readonly removed: boolean;
  readonly cgroup?: CgroupOutcome;
}

export interface ReconcileOutcome {
  readonly action: ReconcileAction['type'];
  readonly vmiUID: string;
  readonly volume: string;
  readonly target: string;
  readonly error?: Error;
}

export interface ReconcileReport {
  readonly outcomes: readonly ReconcileOutcome[];
  readonly facts: readonly UnmountedFact[];
  /** Checkpoints that were corrupt (treated as empty or partly read). */
  readonly problems: readonly { readonly vmiUID: string; readonly problem: string }[];
  /** Actions found but left alone, declined by `confirm`. */
  readonly deferred: number;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Runs one task per key at a time, in call order. */
class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(task, task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }
}

type CheckpointChange = (entries: readonly CheckpointEntry[]) => readonly CheckpointEntry[];

/**
 * Reads and changes the VMI checkpoints, one batch at a time per VMI: the changes that arrive
 * while a write runs are applied together in the next one (every change in arrival order, one
 * synced write). 75 volumes plugged at once into one VMI cost a few writes, not 75 in a row.
 *
 * What it last wrote of a VMI's checkpoint is what the file holds (a node's one node-mounter is
 * the only writer of its state folder), so a plug or unplug reads that instead of the file: the
 * file is read once per VMI and process, or again after a failed write.
 */
class CheckpointUpdates {
  readonly #waiting = new Map<
    string,
    { change: CheckpointChange; resolve: () => void; reject: (err: unknown) => void }[]
  >();
  readonly #writing = new Set<string>();
  /** Per VMI with entries: the entries this process last wrote. */
  readonly #written = new Map<string, readonly CheckpointEntry[]>();

  constructor(private readonly stateDir: string) {}

  /** The VMI's entries: as last written here, else as the file holds them. */
  async read(vmiUID: string): Promise<LoadedCheckpoint> {
    const written = this.#written.get(vmiUID);
    if (written !== undefined) return { vmiUID, entries: written };
    return loadCheckpoint(this.stateDir, vmiUID);
  }

  /** Resolves once a write holding the change is on disk. */
  update(vmiUID: string, change: CheckpointChange): Promise<void> {
    return new Promise((resolve, reject) => {
      const queue = this.#waiting.get(vmiUID) ?? [];
      queue.push({ change, resolve, reject });
      this.#waiting.set(vmiUID, queue);
      if (!this.#writing.has(vmiUID)) void this.#drain(vmiUID);
    });
  }

  async #drain(vmiUID: string): Promise<void> {
    this.#writing.add(vmiUID);
    try {
      for (let batch = this.#waiting.get(vmiUID); batch !== undefined;) {
        this.#waiting.delete(vmiUID);
        try {
          const loaded = await this.read(vmiUID);
          const entries = batch.reduce<readonly CheckpointEntry[]>(
            (current, { change }) => change(current),
            loaded.entries,
          );
          // Until the write is done, the file may hold either; it is read again if it fails.
          this.#written.delete(vmiUID);
          await saveCheckpoint(this.stateDir, vmiUID, entries);
          // Kept as a read of the file gives them (field order included: the reconcile compares
          // records as JSON); one that would not read back is not kept.
          const asRead = entries.map(parseCheckpointEntry);
          if (entries.length > 0 && asRead.every((e) => e !== undefined)) {
            this.#written.set(vmiUID, asRead);
          }
          for (const waiter of batch) waiter.resolve();
        } catch (err) {
          for (const waiter of batch) waiter.reject(err);
        }
        batch = this.#waiting.get(vmiUID);
      }
    } finally {
      this.#writing.delete(vmiUID);
    }
  }
}

/** The entries' targets something is mounted on (block entries are device nodes, never mounts). */
async function mountedTargets(entries: readonly CheckpointEntry[]): Promise<Set<string>> {
  const mounted = new Set<string>();
  for (const entry of entries) {
    if (entry.mode !== VolumeMode.Block && (await isMountedOn(entry.target))) {
      mounted.add(entry.target);
    }
  }
  return mounted;
}

export class NodeMounter {
  private readonly ownership: Ownership;
  /**
   * One effect at a time per volume (`<vmiUID>/<volume>`); the volumes of one VMI mount in
   * parallel, and only their checkpoint writes are serialised (see {@link CheckpointUpdates}).
   */
  private readonly locks = new KeyedMutex();
  private readonly checkpoints: CheckpointUpdates;
  private realRootPromise: Promise<string> | undefined;

  constructor(private readonly options: NodeMounterOptions) {
    this.ownership = options.ownership ?? QEMU_OWNERSHIP;
    this.checkpoints = new CheckpointUpdates(options.stateDir);
  }

  private volumeLock<T>(vmiUID: string, volume: string, task: () => Promise<T>): Promise<T> {
    return this.locks.run(`${vmiUID}/${volume}`, task);
  }

  /** The kubelet root with symlinks resolved; every stored path is below it. */
  private realRoot(): Promise<string> {
    this.realRootPromise ??= realpath(this.options.kubeletRoot);
    return this.realRootPromise;
  }

  private async cgroupDir(launcherUID: string | undefined): Promise<string | undefined> {
    if (launcherUID === undefined || this.options.cgroupDirFor === undefined) return undefined;
    return this.options.cgroupDirFor(launcherUID);
  }

  /**
   * Finds the volume in the attachment pod and its place in the launcher's hotplug folder. Reads
   * only. NotFoundError while the launcher folder or the source is not there (yet).
   */
  async locate(request: PlugRequest): Promise<LocatedVolume> {
    const root = await this.realRoot();
    assertUid(root, 'vmiUID', request.vmiUID);
    assertLabelSegment(root, 'volume', request.volume);
    // The checks are independent reads, each a trip through libuv's thread pool: made together,
    // they cost a fraction of the time made one after another (5–8 ms a plug on a busy node).
    // Their errors are still reported in this order: a path that leaves its pod before one that
    // is missing.
    const hotplugDirPath = launcherHotplugDirPath(root, request.launcherUID);
    const sourcePath =
      request.mode === VolumeMode.Filesystem
        ? attachmentFilesystemSourcePath(root, request.attachPodUID, request.pvName)
        : attachmentBlockSourcePath(root, request.attachPodUID, request.pvName);
    const [hotplugDir, source, target, isDir, sourceExists] = await inOrder([
      launcherHotplugDir(root, request.launcherUID),
      request.mode === VolumeMode.Filesystem
        ? attachmentFilesystemSource(root, request.attachPodUID, request.pvName)
        : attachmentBlockSource(root, request.attachPodUID, request.pvName),
      // Inside the launcher pod's folder implies inside the root: one check covers both.
      assertRealPathInsidePod(
        root,
        request.launcherUID,
        targetPathIn(hotplugDirPath, request.volume, request.mode),
      ),
      isDirectory(hotplugDirPath),
      pathExists(sourcePath),
    ]);
    if (!isDir) throw new NotFoundError(`launcher hotplug folder ${hotplugDir} does not exist`);
    if (!sourceExists) throw new SourceNotFoundError(source);
    return { source, target };
  }

  /**
   * Exposes a volume `locate` found earlier in the launcher; checks its paths again under the
   * volume's lock (the layout may have changed since), records it in the checkpoint first.
   */
  async mountLocated(request: PlugRequest, located: LocatedVolume): Promise<MountedFact> {
    return this.volumeLock(request.vmiUID, request.volume, async () => {
      const root = await this.realRoot();
      const [, , loaded, cgroupDir] = await inOrder([
        assertRealPathInsidePod(
          root,
          request.attachPodUID,
          located.source,
          request.mode === VolumeMode.Block,
        ),
        assertRealPathInsidePod(root, request.launcherUID, located.target),
        this.checkpoints.read(request.vmiUID),
        this.blockCgroupDir(request),
      ]);
      return this.mountChecked(request, located, loaded, cgroupDir);
    });
  }

  /**
   * Plug: locate, then mount (filesystem) or mknod + cgroup allow (block). Idempotent. The paths
   * are checked once, under the volume's lock, right before they are used.
   */
  async plug(request: PlugRequest): Promise<MountedFact> {
    return this.volumeLock(request.vmiUID, request.volume, async () => {
      const [located, loaded, cgroupDir] = await inOrder([
        this.locate(request),
        this.checkpoints.read(request.vmiUID),
        this.blockCgroupDir(request),
      ]);
      return this.mountChecked(request, located, loaded, cgroupDir);
    });
  }

  private async blockCgroupDir(request: PlugRequest): Promise<string | undefined> {
    return request.mode === VolumeMode.Block ? this.cgroupDir(request.launcherUID) : undefined;
  }

  /** Mounts a volume whose paths were just checked, under its lock; the checkpoint first. */
  private async mountChecked(
    request: PlugRequest,
    located: LocatedVolume,
    loaded: LoadedCheckpoint,
    cgroupDir: string | undefined,
  ): Promise<MountedFact> {
    const previous = loaded.entries.find((e) => e.volume === request.volume);
    // Before anything is undone or replaced: a request of another namespace touches nothing.
    if (previous !== undefined) this.assertSameNamespace(request, previous);
    if (
      previous !== undefined &&
      (previous.target !== located.target || previous.mode !== request.mode)
    ) {
      await this.undo(previous);
    }
    // A block volume's record names its device number from the start, and the node is made with
    // that number: the one synced write before the node covers what its unplug denies.
    const rdev =
      request.mode === VolumeMode.Block ? await blockDeviceNumber(located.source) : undefined;
    const intent: CheckpointEntry = {
      ...(request.namespace === undefined ? {} : { namespace: request.namespace }),
      volume: request.volume,
      mode: request.mode,
      target: located.target,
      source: located.source,
      ...(rdev === undefined ? {} : { rdev }),
      ...(cgroupDir === undefined ? {} : { cgroupDir }),
    };
    await this.checkpoints.update(request.vmiUID, (entries) => withEntry(entries, intent));
    const base = {
      type: EventType.MountedToPod,
      vmiUID: request.vmiUID,
      volume: request.volume,
      mode: request.mode,
      source: located.source,
      target: located.target,
    } as const;
    if (rdev === undefined) {
      // A filesystem volume: its disk file is bind-mounted.
      const result = await mountFilesystem(located.source, located.target);
      await applyOwnership(located.target, this.ownership);
      return { ...base, changed: result.changed, sourceMismatch: result.sourceMismatch };
    }
    const { changed } = await createBlockNode(rdev, located.target, this.ownership);
    const cgroup: CgroupOutcome =
      cgroupDir === undefined
        ? { kind: 'skipped', reason: 'no device cgroup known for the launcher' }
        : allowDevice(cgroupDir, rdev.major, rdev.minor);
    return { ...base, changed, sourceMismatch: false, device: rdev, cgroup };
  }

  /**
   * Unplug — call only once the domain has released the disk. Undoes what the checkpoint records
   * for the volume (or, unknown to it, the target computed from `launcherUID` + `mode`), then
   * forgets it. Idempotent.
   */
  async unplug(request: UnplugRequest): Promise<UnmountedFact> {
    const root = await this.realRoot();
    assertUid(root, 'vmiUID', request.vmiUID);
    assertLabelSegment(root, 'volume', request.volume);
    return this.volumeLock(request.vmiUID, request.volume, async () => {
      const loaded = await this.checkpoints.read(request.vmiUID);
      const recorded = loaded.entries.find((e) => e.volume === request.volume);
      if (recorded !== undefined) this.assertSameNamespace(request, recorded);
      const entry = recorded ?? (await this.guessEntry(request));
      if (entry === undefined) {
        return {
          type: EventType.UnmountedFromPod,
          vmiUID: request.vmiUID,
          volume: request.volume,
          changed: false,
          unmounted: 0,
          removed: false,
        };
      }
      const fact = await this.undoFact(request.vmiUID, entry);
      await this.checkpoints.update(request.vmiUID, (entries) =>
        withoutVolume(entries, request.volume),
      );
      return fact;
    });
  }

  /**
   * VMI UIDs are unique cluster-wide, so a request naming a VMI UID whose volume was recorded for
   * another namespace was not made for that VMI: refused, the volume is left alone.
   */
  private assertSameNamespace(
    request: { readonly namespace?: string; readonly vmiUID: string },
    entry: CheckpointEntry,
  ): void {
    if (
      request.namespace !== undefined &&
      entry.namespace !== undefined &&
      request.namespace !== entry.namespace
    ) {
      throw new ForeignVolumeError(
        request.vmiUID,
        entry.volume,
        entry.namespace,
        request.namespace,
      );
    }
  }

  private async guessEntry(request: UnplugRequest): Promise<CheckpointEntry | undefined> {
    if (request.launcherUID === undefined || request.mode === undefined) return undefined;
    const root = await this.realRoot();
    const hotplugDir = await launcherHotplugDir(root, request.launcherUID);
    const target = await targetPath(hotplugDir, request.volume, request.mode, root);
    const cgroupDir = await this.cgroupDir(request.launcherUID);
    return {
      volume: request.volume,
      mode: request.mode,
      target,
      source: '',
      ...(cgroupDir === undefined ? {} : { cgroupDir }),
    };
  }

  /** Refuses a checkpointed target outside the kubelet root (a tampered or stale checkpoint). */
  private async checkStoredTarget(entry: CheckpointEntry): Promise<void> {
    const root = await this.realRoot();
    if (!isAbsolute(entry.target) || !isLexicallyInside(root, entry.target)) {
      throw new PathEscapeError(entry.target, root);
    }
    await assertRealPathInsideRoot(root, entry.target);
  }

  private async undo(
    entry: CheckpointEntry,
  ): Promise<Omit<UnmountedFact, 'type' | 'vmiUID' | 'volume'>> {
    await this.checkStoredTarget(entry);
    const where = { mode: entry.mode, target: entry.target };
    if (entry.mode === VolumeMode.Filesystem) {
      const result = await unmountFilesystem(entry.target);
      return {
        ...where,
        changed: result.unmounted > 0 || result.unlinked,
        unmounted: result.unmounted,
        removed: result.unlinked,
      };
    }
    // Block, in KubeVirt's order: unlink, then cgroup deny.
    const result = await removeBlockNode(entry.target);
    const device = result.device ?? entry.rdev;
    let cgroup: CgroupOutcome | undefined;
    if (entry.cgroupDir !== undefined && device !== undefined) {
      cgroup = denyDevice(entry.cgroupDir, device.major, device.minor);
    } else {
      cgroup = { kind: 'skipped', reason: 'no device cgroup or device number recorded' };
    }
    return { ...where, changed: result.removed, unmounted: 0, removed: result.removed, cgroup };
  }

  private async undoFact(vmiUID: string, entry: CheckpointEntry): Promise<UnmountedFact> {
    return {
      type: EventType.UnmountedFromPod,
      vmiUID,
      volume: entry.volume,
      ...(await this.undo(entry)),
    };
  }

  /**
   * At start (and whenever asked): compares every checkpoint with the mount table and undoes what
   * no spec wants. `wanted` maps a VMI UID to the volumes that must stay — in the spec, or still
   * held by the domain; a VMI not in the map wants nothing. Failed undos stay checkpointed.
   * `confirm`, when given, is asked about each action first; an action it declines is left alone.
   */
  async reconcile(
    wanted: ReadonlyMap<string, Iterable<string>>,
    options: { confirm?: (action: ReconcileAction) => boolean } = {},
  ): Promise<ReconcileReport> {
    const wantedSets = new Map(
      [...wanted].map(([vmi, volumes]) => [vmi, new Set(volumes)] as const),
    );
    const outcomes: ReconcileOutcome[] = [];
    const facts: UnmountedFact[] = [];
    const problems: { vmiUID: string; problem: string }[] = [];
    let deferred = 0;
    for (const vmiUID of await checkpointedVmiUids(this.options.stateDir)) {
      const loaded = await loadCheckpoint(this.options.stateDir, vmiUID);
      if (loaded.problem !== undefined) problems.push({ vmiUID, problem: loaded.problem });
      const actions = reconcileAtStart({
        checkpoint: new Map([[vmiUID, loaded.entries]]),
        mountPoints: await mountedTargets(loaded.entries),
        wanted: wantedSets,
      });
      /** The records undone or forgotten, as JSON: an entry is its whole record. */
      const done = new Set<string>();
      for (const action of actions) {
        if (options.confirm !== undefined && !options.confirm(action)) {
          deferred += 1;
          continue;
        }
        const record = JSON.stringify(action.entry);
        const outcome = {
          action: action.type,
          vmiUID,
          volume: action.entry.volume,
          target: action.entry.target,
        };
        await this.volumeLock(vmiUID, action.entry.volume, async () => {
          // A plug or unplug of this volume may have run since the checkpoint was read.
          const now = await loadCheckpoint(this.options.stateDir, vmiUID);
          if (!now.entries.some((e) => JSON.stringify(e) === record)) return;
          try {
            if (action.type !== ReconcileActionType.Forget)
              facts.push(await this.undoFact(vmiUID, action.entry));
            done.add(record);
            outcomes.push(outcome);
          } catch (err) {
            outcomes.push({ ...outcome, error: err as Error });
          }
        });
      }
      if (done.size > 0 || loaded.problem !== undefined) {
        await this.checkpoints.update(vmiUID, (entries) =>
          entries.filter((e) => !done.has(JSON.stringify(e))),
        );
      }
    }
    return { outcomes, facts, problems, deferred };
  }
}
