import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsync,
  mkdirSync,
  openSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';

import { assertUid, VolumeMode } from './paths.js';

/**
 * What the node-mounter made on this node, per VMI, in `<stateDir>/<vmiUID>.json` — so a restarted
 * mounter knows what to clean up (KubeVirt: `hotplug-volume-mount-state`). An entry is written
 * before the mount is made and removed after it is undone, so a crash in between leaves an entry
 * for something that may or may not exist; every undo is idempotent.
 */

export interface CheckpointEntry {
  /** The VMI's namespace (absent in entries written before it was recorded). */
  readonly namespace?: string;
  readonly volume: string;
  readonly mode: VolumeMode;
  /** Absolute path of `<vol>.img` / `<vol>` in the launcher's hotplug folder (real kubelet root). */
  readonly target: string;
  /** Absolute path of the attachment pod's `disk.img` / device node. */
  readonly source: string;
  /** Block volumes: the device number given to the node and allowed in the cgroup. */
  readonly rdev?: { readonly major: number; readonly minor: number };
  /** Block volumes: the launcher's device cgroup the rule was written to. */
  readonly cgroupDir?: string;
}

const CHECKPOINT_VERSION = 1;
const SUFFIX = '.json';

export function checkpointPath(stateDir: string, vmiUID: string): string {
  assertUid(stateDir, 'vmiUID', vmiUID);
  return join(stateDir, `${vmiUID}${SUFFIX}`);
}

function isDeviceNumber(value: unknown): value is { major: number; minor: number } {
  const v = value as { major?: unknown; minor?: unknown } | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    Number.isInteger(v.major) &&
    Number.isInteger(v.minor) &&
    (v.major as number) >= 0 &&
    (v.minor as number) >= 0
  );
}

/** Pure: an entry as parsed from JSON, or undefined when its shape is wrong. */
export function parseCheckpointEntry(value: unknown): CheckpointEntry | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (
    typeof v.volume !== 'string' ||
    typeof v.target !== 'string' ||
    typeof v.source !== 'string'
  ) {
    return undefined;
  }
  if (v.mode !== VolumeMode.Filesystem && v.mode !== VolumeMode.Block) return undefined;
  if (v.rdev !== undefined && !isDeviceNumber(v.rdev)) return undefined;
  if (v.cgroupDir !== undefined && typeof v.cgroupDir !== 'string') return undefined;
  if (v.namespace !== undefined && typeof v.namespace !== 'string') return undefined;
  return {
    ...(v.namespace === undefined ? {} : { namespace: v.namespace }),
    volume: v.volume,
    mode: v.mode,
    target: v.target,
    source: v.source,
    ...(v.rdev === undefined ? {} : { rdev: { major: v.rdev.major, minor: v.rdev.minor } }),
    ...(v.cgroupDir === undefined ? {} : { cgroupDir: v.cgroupDir }),
  };
}

export interface LoadedCheckpoint {
  readonly vmiUID: string;
  readonly entries: readonly CheckpointEntry[];
  /** Set when the file was unreadable or corrupt (then treated as empty, or partly). */
  readonly problem?: string;
}

/** Pure: parses a checkpoint file's text; corrupt → no entries plus the problem. */
export function parseCheckpoint(vmiUID: string, text: string): LoadedCheckpoint {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { vmiUID, entries: [], problem: `invalid JSON: ${(err as Error).message}` };
  }
  const d = doc as { version?: unknown; vmiUID?: unknown; entries?: unknown } | null;
  if (
    typeof d !== 'object' ||
    d === null ||
    d.version !== CHECKPOINT_VERSION ||
    !Array.isArray(d.entries)
  ) {
    return { vmiUID, entries: [], problem: `not a version ${CHECKPOINT_VERSION} checkpoint` };
  }
  if (d.vmiUID !== vmiUID) {
    return { vmiUID, entries: [], problem: `checkpoint names VMI ${JSON.stringify(d.vmiUID)}` };
  }
  const entries: CheckpointEntry[] = [];
  let dropped = 0;
  for (const raw of d.entries as unknown[]) {
    const entry = parseCheckpointEntry(raw);
    if (entry === undefined) dropped += 1;
    else entries.push(entry);
  }
  return dropped === 0
    ? { vmiUID, entries }
    : { vmiUID, entries, problem: `${dropped} malformed entries dropped` };
}

/** Loads one VMI's checkpoint; absent → empty; corrupt → empty with `problem`. */
export async function loadCheckpoint(stateDir: string, vmiUID: string): Promise<LoadedCheckpoint> {
  let text: string;
  try {
    text = await readFile(checkpointPath(stateDir, vmiUID), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { vmiUID, entries: [] };
    return { vmiUID, entries: [], problem: `unreadable: ${(err as Error).message}` };
  }
  return parseCheckpoint(vmiUID, text);
}

/**
 * Replaces one VMI's checkpoint atomically (temp file, fsync, rename). No entries → the file is
 * removed.
 *
 * The state folder is the node's own disk, so the calls that only change its metadata (open,
 * write into the page cache, close, rename) are made in this thread: each takes microseconds,
 * where a trip through libuv's thread pool costs 0.1–0.3 ms, and a plug made five of them one
 * after another. The fsync waits for the disk, which may be busy with every VM's writes, so it
 * runs on the thread pool and the event loop goes on meanwhile.
 */
export async function saveCheckpoint(
  stateDir: string,
  vmiUID: string,
  entries: readonly CheckpointEntry[],
): Promise<void> {
  const path = checkpointPath(stateDir, vmiUID);
  if (entries.length === 0) {
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    return;
  }
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openCreating(stateDir, tmp);
  try {
    const text = `${JSON.stringify({ version: CHECKPOINT_VERSION, vmiUID, entries }, null, 2)}\n`;
    writeFileSync(fd, text);
    await fsyncOnPool(fd);
  } catch (err) {
    closeSync(fd);
    unlinkIfThere(tmp);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    unlinkIfThere(tmp);
    throw err;
  }
}

/** fsync(2) on libuv's thread pool. */
function fsyncOnPool(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (err) => (err === null ? resolve() : reject(err)));
  });
}

/** Removes a temp file a failed write left; its failure is not the one to report. */
function unlinkIfThere(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Gone already, or the folder went away: the start's sweep removes what stays.
  }
}

/** The names in the state dir; none when it does not exist yet (a node's first start). */
async function stateDirNames(stateDir: string): Promise<string[]> {
  try {
    return await readdir(stateDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** `<vmiUID>.json.tmp-<pid>-<hex>`: a checkpoint being written by the process `pid`. */
const TEMP_FILE = /^[0-9a-f-]+\.json\.tmp-(\d+)-[0-9a-f]+$/;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, another user's.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temp files of checkpoint writes that a killed process left (its write never
 * reached the rename, so the checkpoint beside it is the last whole one). Each kill in the middle
 * of a write left one behind for good. A temp file of a live process is its write in flight.
 * Returns the names removed.
 */
export async function removeAbandonedTempFiles(stateDir: string): Promise<string[]> {
  const names = await stateDirNames(stateDir);
  const removed: string[] = [];
  for (const name of names) {
    const pid = TEMP_FILE.exec(name)?.[1];
    if (pid === undefined || processAlive(Number(pid))) continue;
    try {
      await unlink(join(stateDir, name));
      removed.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return removed;
}

/**
 * Creates `file` in `dir` and opens it for writing, making `dir` first only when it is missing (a
 * node's first write).
 */
function openCreating(dir: string, file: string): number {
  try {
    return openSync(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return openSync(file, 'wx', 0o600);
}

/** The VMI UIDs with a checkpoint in the state dir (not temp files or names that are no UID). */
export async function checkpointedVmiUids(stateDir: string): Promise<string[]> {
  const names = await stateDirNames(stateDir);
  const uids: string[] = [];
  for (const name of names.sort()) {
    if (!name.endsWith(SUFFIX)) continue;
    const vmiUID = name.slice(0, -SUFFIX.length);
    try {
      assertUid(stateDir, 'vmiUID', vmiUID);
    } catch {
      continue;
    }
    uids.push(vmiUID);
  }
  return uids;
}

/** Loads every checkpoint in the state dir (see {@link checkpointedVmiUids}). */
export async function loadAllCheckpoints(stateDir: string): Promise<LoadedCheckpoint[]> {
  const loaded: LoadedCheckpoint[] = [];
  for (const vmiUID of await checkpointedVmiUids(stateDir)) {
    loaded.push(await loadCheckpoint(stateDir, vmiUID));
  }
  return loaded;
}

/** Pure: the entry list with `entry` added or replacing the one of the same volume. */
export function withEntry(
  entries: readonly CheckpointEntry[],
  entry: CheckpointEntry,
): CheckpointEntry[] {
  return [...entries.filter((e) => e.volume !== entry.volume), entry];
}

/** Pure: the entry list without `volume`. */
export function withoutVolume(
  entries: readonly CheckpointEntry[],
  volume: string,
): CheckpointEntry[] {
  return entries.filter((e) => e.volume !== volume);
}

// ---- reconcile at start ----

export const ReconcileActionType = {
  /** A filesystem target no spec wants is mounted: unmount, unlink, forget. */
  Unmount: 'unmount',
  /** A filesystem target no spec wants is not mounted: unlink (if still there), forget. */
  Unlink: 'unlink',
  /** A block node no spec wants: unlink, cgroup deny, forget. */
  RemoveBlockNode: 'removeBlockNode',
  /** A record that no longer describes anything (a wanted volume whose mount is gone, a duplicate): forget. */
  Forget: 'forget',
} as const;
export type ReconcileActionType = (typeof ReconcileActionType)[keyof typeof ReconcileActionType];

export interface ReconcileAction {
  readonly type: ReconcileActionType;
  readonly vmiUID: string;
  readonly entry: CheckpointEntry;
}

export interface ReconcileInput {
  /** vmiUID → checkpointed entries. */
  readonly checkpoint: ReadonlyMap<string, readonly CheckpointEntry[]>;
  /** The entries' targets that are mountpoints now (as this process sees them). */
  readonly mountPoints: ReadonlySet<string>;
  /**
   * vmiUID → volumes that must stay: in the spec, or still held by the domain. A VMI absent from
   * the map wants nothing.
   */
  readonly wanted: ReadonlyMap<string, ReadonlySet<string>>;
}

function actionFor(
  vmiUID: string,
  entry: CheckpointEntry,
  wanted: boolean,
  mounted: boolean,
): ReconcileAction | undefined {
  if (entry.mode === VolumeMode.Block) {
    return wanted ? undefined : { type: ReconcileActionType.RemoveBlockNode, vmiUID, entry };
  }
  if (!wanted) {
    return {
      type: mounted ? ReconcileActionType.Unmount : ReconcileActionType.Unlink,
      vmiUID,
      entry,
    };
  }
  return mounted ? undefined : { type: ReconcileActionType.Forget, vmiUID, entry };
}

/**
 * Pure: the actions that bring the node back to what the specs want after a restart — undo what
 * no spec wants, forget records that describe nothing. Deterministic order (VMI, then entry).
 */
export function reconcileAtStart(input: ReconcileInput): ReconcileAction[] {
  const { mountPoints } = input;
  const actions: ReconcileAction[] = [];
  for (const vmiUID of [...input.checkpoint.keys()].sort()) {
    const entries = input.checkpoint.get(vmiUID) ?? [];
    const wantedVolumes = input.wanted.get(vmiUID);
    const lastIndex = new Map(entries.map((e, i) => [e.volume, i] as const));
    entries.forEach((entry, index) => {
      if (lastIndex.get(entry.volume) !== index) {
        actions.push({ type: ReconcileActionType.Forget, vmiUID, entry });
        return;
      }
      const action = actionFor(
        vmiUID,
        entry,
        wantedVolumes?.has(entry.volume) ?? false,
        mountPoints.has(entry.target),
      );
      if (action !== undefined) actions.push(action);
    });
  }
  return actions;
}
