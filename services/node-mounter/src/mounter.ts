import {
  accessSync,
  closeSync,
  constants as fsConstants,
  openSync,
  type BigIntStats,
  type Stats,
  writeFileSync,
} from 'node:fs';
import { chmod, chown, lstat, open, readFile, realpath, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { CgroupError, MountError, SourceNotFoundError, WrongFileKindError } from './errors.js';
import { bindMount, isMountRoot, makeBlockNode, unmount } from './host-calls.js';
import { mountsAt, parseMountInfo } from './mountinfo.js';
import type { MountInfoEntry } from './mountinfo.js';

/**
 * Thin adapters over the host: bind mounts, device nodes, the device cgroup. Each operation is
 * idempotent and reports whether it changed anything. Paths come already validated (see paths.ts).
 */

export const SELF_MOUNTINFO = '/proc/self/mountinfo';

/** Owner and mode given to a hotplugged disk in the launcher (KubeVirt: qemu 107:107, 0660). */
export interface Ownership {
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
}

export const QEMU_OWNERSHIP: Ownership = Object.freeze({ uid: 107, gid: 107, mode: 0o660 });

/** S_ISUID | S_ISGID: what chown(2) clears on an executable file. */
const SET_ID_BITS = 0o6000;

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Reads and parses a mount table (this process's by default). */
export async function readMountTable(path: string = SELF_MOUNTINFO): Promise<MountInfoEntry[]> {
  return parseMountInfo(await readFile(path, 'utf8'));
}

/** The mounts stacked on `path` (resolved through symlinks); empty when it is no mountpoint or absent. */
export async function mountsOn(
  path: string,
  mountInfoPath: string = SELF_MOUNTINFO,
): Promise<readonly MountInfoEntry[]> {
  let real: string;
  try {
    real = await realpath(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw err;
  }
  return mountsAt(await readMountTable(mountInfoPath), real);
}

/** Flags to open a mount target only to ask which mount it is on: never follow, never block. */
const PROBE_FILE_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
const PROBE_DIR_FLAGS = fsConstants.O_RDONLY | fsConstants.O_DIRECTORY;
const MNT_ID_LINE = /^mnt_id:\s*(\d+)$/m;

/** The id of the mount `path` is reached through (`/proc/self/fdinfo`); undefined when absent. */
async function mountIdOf(path: string, flags: number): Promise<number | undefined> {
  let handle;
  try {
    handle = await open(path, flags);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const info = await readFile(`/proc/self/fdinfo/${handle.fd}`, 'utf8');
    const id = MNT_ID_LINE.exec(info)?.[1];
    if (id === undefined) throw new MountError('fdinfo', info, `no mnt_id for ${path} in fdinfo`);
    return Number(id);
  } finally {
    await handle.close();
  }
}

/**
 * True when something is mounted on the file `path`. O(1), unlike a look through the mount table,
 * which holds a line per volume of every VMI on the node (10,000 volumes: a 1.5 MB table to read
 * and parse per check). Asked of statx(2) first: one call, where the file's and its folder's
 * mount ids cost seven trips through the thread pool (0.68 ms of CPU a check against 0.05 ms,
 * and a plug and its unplug make three checks).
 */
export async function isMountedOn(path: string): Promise<boolean> {
  return (await isMountRoot(path)) ?? (await isMountedOnByMountIds(path));
}

/** {@link isMountedOn} where statx cannot tell: the file is reached through another mount than its folder. */
export async function isMountedOnByMountIds(path: string): Promise<boolean> {
  const [own, folder] = await Promise.all([
    mountIdOf(path, PROBE_FILE_FLAGS),
    mountIdOf(dirname(path), PROBE_DIR_FLAGS),
  ]);
  return own !== undefined && folder !== undefined && own !== folder;
}

export interface MountFilesystemResult {
  /** A bind mount was made by this call. */
  readonly changed: boolean;
  /** The target was already a mountpoint of something other than `source` (left alone). */
  readonly sourceMismatch: boolean;
}

/**
 * Creates `target` as an empty file when absent; refuses a target that is not a regular file. The
 * create is made in this thread: the launcher's hotplug folder is on the node's own disk, and
 * `O_EXCL` makes a file of ours or fails (a symlink there is not followed). Only a target that is
 * there already is looked at on the thread pool, as something may be mounted on it.
 */
async function touchTarget(target: string): Promise<void> {
  try {
    closeSync(openSync(target, 'wx', 0o660));
    return;
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST') throw err;
  }
  const st = await lstat(target);
  if (!st.isFile()) throw new WrongFileKindError(target, 'a regular file');
}

async function statSource(source: string, bigint: true): Promise<BigIntStats>;
async function statSource(source: string, bigint: false): Promise<Stats>;
async function statSource(source: string, bigint: boolean): Promise<Stats | BigIntStats> {
  try {
    return await stat(source, { bigint });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') throw new SourceNotFoundError(source, { cause: err });
    throw err;
  }
}

/**
 * Bind-mounts the file `source` onto `target` (created empty when absent). A no-op when `target`
 * is already a mountpoint; `sourceMismatch` tells when that mount is of another file.
 */
export async function mountFilesystem(
  source: string,
  target: string,
): Promise<MountFilesystemResult> {
  const src = await statSource(source, false);
  if (!src.isFile()) throw new WrongFileKindError(source, 'a regular file');
  await touchTarget(target);
  if (await isMountedOn(target)) {
    const tgt = await stat(target);
    return { changed: false, sourceMismatch: tgt.dev !== src.dev || tgt.ino !== src.ino };
  }
  bindMount(source, target);
  return { changed: true, sourceMismatch: false };
}

export interface UnmountFilesystemResult {
  /** How many stacked mounts were removed from the target. */
  readonly unmounted: number;
  /** The target file was removed by this call. */
  readonly unlinked: boolean;
}

/** Bounds the loop over stacked mounts, in case something keeps mounting onto the target. */
const MAX_STACKED_MOUNTS = 16;

/**
 * Unmounts every mount stacked on `target` (no lazy unmount: EBUSY means the disk is still in use
 * and is reported as MountError for a retry), then removes the file. Tolerant of both already done.
 */
export async function unmountFilesystem(target: string): Promise<UnmountFilesystemResult> {
  const st = await lstatOrUndefined(target);
  if (st === undefined) return { unmounted: 0, unlinked: false };
  if (st.isDirectory()) throw new WrongFileKindError(target, 'a file');
  let unmounted = 0;
  if (!st.isSymbolicLink()) {
    while (await isMountedOn(target)) {
      if (unmounted >= MAX_STACKED_MOUNTS) {
        throw new MountError('umount', '', `${target} still mounted after ${unmounted} unmounts`);
      }
      await unmount(target);
      unmounted += 1;
    }
  }
  return { unmounted, unlinked: await unlinkIfPresent(target) };
}

async function unlinkIfPresent(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Linux `dev_t` → major/minor (glibc's `gnu_dev_major`/`gnu_dev_minor`). */
export function splitDeviceNumber(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

export interface DeviceNumber {
  readonly major: number;
  readonly minor: number;
}

/** major:minor of a block device; SourceNotFoundError when absent, WrongFileKindError when not a block device. */
export async function blockDeviceNumber(path: string): Promise<DeviceNumber> {
  const st = await statSource(path, true);
  if (!st.isBlockDevice()) throw new WrongFileKindError(path, 'a block device');
  return splitDeviceNumber(st.rdev);
}

export interface BlockNodeResult extends DeviceNumber {
  /** A device node was created (or replaced) by this call. */
  readonly changed: boolean;
}

/** Sets owner and mode (both idempotent). */
export async function applyOwnership(path: string, ownership: Ownership): Promise<void> {
  if ((ownership.mode & SET_ID_BITS) !== 0) {
    // chown clears them (on an executable file): the mode goes after it.
    await chown(path, ownership.uid, ownership.gid);
    await chmod(path, ownership.mode);
    return;
  }
  // A mode without them comes out the same in either order: both at once.
  await Promise.all([chown(path, ownership.uid, ownership.gid), chmod(path, ownership.mode)]);
}

/**
 * Creates `target` as a block device node with the major:minor `dev` (of the block device the
 * caller found with {@link blockDeviceNumber}), then sets owner and mode. Same node already there →
 * no new node; another node or file → replaced.
 */
export async function createBlockNode(
  dev: DeviceNumber,
  target: string,
  ownership: Ownership = QEMU_OWNERSHIP,
): Promise<BlockNodeResult> {
  const existing = await lstatOrUndefined(target);
  let changed = true;
  if (existing !== undefined) {
    if (existing.isDirectory()) throw new WrongFileKindError(target, 'a device node');
    const current = existing.isBlockDevice() ? splitDeviceNumber(BigInt(existing.rdev)) : undefined;
    if (current?.major === dev.major && current.minor === dev.minor) changed = false;
    else await unlink(target);
  }
  if (changed) {
    makeBlockNode(target, ownership.mode, dev.major, dev.minor);
  }
  await applyOwnership(target, ownership);
  return { major: dev.major, minor: dev.minor, changed };
}

export interface RemoveBlockNodeResult {
  readonly removed: boolean;
  /** The node's major:minor when it was a block device node (for the cgroup deny). */
  readonly device: DeviceNumber | undefined;
}

/** Removes the device node `target`; tolerant of it being gone already. */
export async function removeBlockNode(target: string): Promise<RemoveBlockNodeResult> {
  const st = await lstatOrUndefined(target);
  if (st === undefined) return { removed: false, device: undefined };
  if (st.isDirectory()) throw new WrongFileKindError(target, 'a device node');
  const device = st.isBlockDevice() ? splitDeviceNumber(BigInt(st.rdev)) : undefined;
  return { removed: await unlinkIfPresent(target), device };
}

// ---- device cgroup ----

export const CgroupVersion = { V1: 'v1', V2: 'v2' } as const;
export type CgroupVersion = (typeof CgroupVersion)[keyof typeof CgroupVersion];

export const CGROUP_V2_UNSUPPORTED =
  'cgroup v2 has no devices controller file: device access is governed by eBPF programs attached to the cgroup, which the node-mounter does not manage (out of scope)';

export type CgroupResult =
  | {
      readonly kind: 'applied';
      readonly version: 'v1';
      readonly file: string;
      readonly rule: string;
    }
  | { readonly kind: 'unsupported'; readonly version: 'v2'; readonly reason: string };

/** The rule KubeVirt writes for a hotplugged block volume. */
export function deviceRule(major: number, minor: number): string {
  return `b ${major}:${minor} rwm`;
}

function exists(path: string): boolean {
  try {
    accessSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes a rule into a v1 devices cgroup. The cgroup's files are the kernel's, answered at once,
 * so they are written in this thread rather than on the thread pool.
 */
function writeDeviceRule(
  cgroupDir: string,
  file: 'devices.allow' | 'devices.deny',
  device: DeviceNumber,
): CgroupResult {
  const path = join(cgroupDir, file);
  const rule = deviceRule(device.major, device.minor);
  if (exists(path)) {
    try {
      writeFileSync(path, rule);
    } catch (err) {
      throw new CgroupError(cgroupDir, `writing ${JSON.stringify(rule)} to ${file} failed`, {
        cause: err,
      });
    }
    return { kind: 'applied', version: 'v1', file: path, rule };
  }
  if (exists(join(cgroupDir, 'cgroup.controllers'))) {
    return { kind: 'unsupported', version: 'v2', reason: CGROUP_V2_UNSUPPORTED };
  }
  throw new CgroupError(cgroupDir, 'neither a cgroup v1 devices cgroup nor a cgroup v2 directory');
}

/** Allows `b maj:min rwm` in the launcher's device cgroup (v1 `devices.allow`; v2 → unsupported). */
export function allowDevice(cgroupDir: string, major: number, minor: number): CgroupResult {
  return writeDeviceRule(cgroupDir, 'devices.allow', { major, minor });
}

/** Denies `b maj:min rwm` in the launcher's device cgroup (v1 `devices.deny`; v2 → unsupported). */
export function denyDevice(cgroupDir: string, major: number, minor: number): CgroupResult {
  return writeDeviceRule(cgroupDir, 'devices.deny', { major, minor });
}

/** The rules of a v1 devices cgroup (`devices.list`), e.g. `['b 7:3 rwm']`. */
export async function readDeviceRules(cgroupDir: string): Promise<string[]> {
  const text = await readFile(join(cgroupDir, 'devices.list'), 'utf8');
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
}
