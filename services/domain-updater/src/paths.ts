import { lstat, realpath } from 'node:fs/promises';
import { isAbsolute, join, relative, sep } from 'node:path';

import {
  HOTPLUG_DISKS_VOLUME,
  InvalidNameError,
  PathEscapeError,
  PersistentVolumeMode,
  TerminalError,
} from '@plugline/contracts';
import { hotplugSourcePath } from '@plugline/hypervisor';

/**
 * The host paths the domain-updater hands to the hypervisor: built only from a validated launcher
 * pod UID, and checked on disk to be what node-mounter makes there (a bind-mounted file or a
 * device node in the launcher pod's own folder), never a symlink to somewhere else.
 */

/** A pod UID: lowercase alphanumerics and '-', as the API server hands them out. */
const UID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** The hotplug source is of the wrong kind (a directory, a FIFO, a file where a device belongs). */
export class WrongSourceKindError extends TerminalError {
  override name = 'WrongSourceKindError';
  constructor(
    readonly path: string,
    readonly expected: string,
    options?: ErrorOptions,
  ) {
    super('WrongFileKind', `hotplug source ${path} is not ${expected}`, options);
  }
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/**
 * A launcher pod UID as a path segment: traversal (`..`, separators, NUL, empty) →
 * PathEscapeError; anything else not UID-shaped (upper case, overlong) → InvalidNameError.
 */
export function assertPodUID(root: string, uid: string): string {
  if (uid === '' || uid === '.' || uid === '..' || /[/\\\0]/.test(uid)) {
    throw new PathEscapeError(uid, root);
  }
  if (!UID_PATTERN.test(uid)) {
    throw new InvalidNameError(
      'launcherPodUID',
      uid,
      'uid',
      `launcherPodUID ${JSON.stringify(uid)}: a UID must consist of lower case alphanumeric characters or '-' (at most 63), starting with an alphanumeric character`,
    );
  }
  return uid;
}

/** Pure: a launcher pod's folder, `<root>/pods/<uid>` (root absolute, UID validated). */
export function launcherPodDir(kubeletRoot: string, launcherUID: string): string {
  if (!isAbsolute(kubeletRoot)) throw new PathEscapeError(kubeletRoot, kubeletRoot);
  return join(kubeletRoot, 'pods', assertPodUID(kubeletRoot, launcherUID));
}

/** Pure: the host path of a launcher pod's `hotplug-disks` emptyDir. */
export function hotplugHostDir(kubeletRoot: string, launcherUID: string): string {
  return join(
    launcherPodDir(kubeletRoot, launcherUID),
    'volumes',
    'kubernetes.io~empty-dir',
    HOTPLUG_DISKS_VOLUME,
  );
}

/**
 * The volume's source in the launcher's hotplug folder once node-mounter has made it, else
 * undefined. Refuses with PathEscapeError a hotplug folder whose real path is not in the launcher
 * pod's own folder and a source that is a symlink (node-mounter never makes one: a symlink there
 * would hand the domain whatever it points at), and with WrongSourceKindError a source that is
 * not a regular file (filesystem volume) or a block device (block volume).
 */
export async function checkedHotplugSource(
  kubeletRoot: string,
  launcherUID: string,
  volume: string,
  mode: PersistentVolumeMode,
): Promise<string | undefined> {
  const podDir = launcherPodDir(kubeletRoot, launcherUID);
  const dir = hotplugHostDir(kubeletRoot, launcherUID);
  const source = hotplugSourcePath(dir, volume, mode);
  // The three reads at once (each a trip through libuv's thread pool, on every attach), judged
  // in the order they would have been made one after another.
  const [dirRead, rootRead, sourceRead] = await Promise.allSettled([
    realpath(dir),
    realpath(kubeletRoot),
    lstat(source),
  ]);
  if (dirRead.status === 'rejected') {
    if (isNotFound(dirRead.reason)) return undefined;
    throw dirRead.reason;
  }
  if (rootRead.status === 'rejected') throw rootRead.reason;
  const realPodDir = join(rootRead.value, 'pods', launcherUID);
  if (!isInside(realPodDir, dirRead.value)) throw new PathEscapeError(dir, podDir);
  if (sourceRead.status === 'rejected') {
    if (isNotFound(sourceRead.reason)) return undefined;
    throw sourceRead.reason;
  }
  const st = sourceRead.value;
  if (st.isSymbolicLink()) throw new PathEscapeError(source, dir);
  const block = mode === PersistentVolumeMode.Block;
  if (block ? !st.isBlockDevice() : !st.isFile()) {
    throw new WrongSourceKindError(source, block ? 'a block device' : 'a regular file');
  }
  return source;
}
