import { lstat, realpath } from 'node:fs/promises';
import { isAbsolute, join, relative, sep } from 'node:path';

import { assertName, InvalidNameError, PathEscapeError } from '@plugline/contracts';

/**
 * Paths in the kubelet layout. Every path the node-mounter touches is computed here, only from
 * validated names, and checked to stay inside the kubelet root — lexically (pure) and after
 * resolving symlinks (I/O).
 */

/** How the volume reaches the launcher: a file bind-mounted onto `<vol>.img`, or a device node `<vol>`. */
export const VolumeMode = {
  Filesystem: 'Filesystem',
  Block: 'Block',
} as const;
export type VolumeMode = (typeof VolumeMode)[keyof typeof VolumeMode];

/** Fixed path components of the kubelet layout (never user input). */
export const KubeletLayout = {
  pods: 'pods',
  plugins: 'plugins',
  volumes: 'volumes',
  volumeDevices: 'volumeDevices',
  emptyDir: 'kubernetes.io~empty-dir',
  csi: 'kubernetes.io~csi',
  hotplugDisks: 'hotplug-disks',
  mount: 'mount',
  diskImage: 'disk.img',
} as const;

/** A pod UID (or VMI UID): UUID-ish, lowercase alphanumerics and '-'. */
const UID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Linux NAME_MAX: longer segments fail with ENAMETOOLONG half-way through an operation. */
export const MAX_SEGMENT_BYTES = 255;

/**
 * Refuses a single path segment that could move a joined path anywhere else: empty, `.`, `..`,
 * absolute, containing a separator or NUL (PathEscapeError); longer than NAME_MAX
 * (InvalidNameError), refused before any I/O rather than failing half-way.
 */
export function assertPlainSegment(root: string, segment: string): string {
  if (
    segment.length === 0 ||
    segment === '.' ||
    segment === '..' ||
    isAbsolute(segment) ||
    segment.includes('/') ||
    segment.includes('\\') ||
    segment.includes('\0')
  ) {
    throw new PathEscapeError(segment, root);
  }
  if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) {
    throw new InvalidNameError(
      'path segment',
      segment,
      'segment',
      `path segment of ${Buffer.byteLength(segment)} bytes: at most ${MAX_SEGMENT_BYTES}`,
    );
  }
  return segment;
}

/** Validates a pod or VMI UID used as a path segment: traversal → PathEscapeError, else pattern → InvalidNameError. */
export function assertUid(root: string, field: string, value: string): string {
  assertPlainSegment(root, value);
  if (!UID_PATTERN.test(value)) {
    throw new InvalidNameError(
      field,
      value,
      'uid',
      `${field} ${JSON.stringify(value)}: a UID must consist of lower case alphanumeric characters or '-' (at most 63), starting with an alphanumeric character`,
    );
  }
  return value;
}

/** Validates a DNS-1123 label used as a path segment (PV name, volume name). */
export function assertLabelSegment(root: string, field: string, value: string): string {
  assertPlainSegment(root, value);
  return assertName(field, value, 'label');
}

/** True when `path` is `root` or below it, lexically (both absolute and normalised by `join`). */
export function isLexicallyInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Pure part of {@link resolveInsideRoot}: validates every segment as plain (no separator, no `.`
 * or `..`, not absolute) and joins them under `root`. The kubelet root must be absolute.
 */
export function joinInsideRoot(root: string, ...segments: readonly string[]): string {
  if (!isAbsolute(root)) throw new PathEscapeError(root, root);
  for (const segment of segments) assertPlainSegment(root, segment);
  const joined = join(root, ...segments);
  if (!isLexicallyInside(join(root), joined)) throw new PathEscapeError(joined, root);
  return joined;
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/**
 * `path` with symlinks resolved along its longest existing prefix (the last components may not
 * exist yet). PathEscapeError (relative to `root`) on a dangling symlink on the way.
 */
async function resolveExisting(root: string, path: string): Promise<string> {
  let existing = path;
  let rest = '';
  for (;;) {
    try {
      await lstat(existing);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      const parent = join(existing, '..');
      if (parent === existing) throw new PathEscapeError(path, root, { cause: err });
      rest = rest === '' ? relative(parent, existing) : join(relative(parent, existing), rest);
      existing = parent;
      continue;
    }
    try {
      const real = await realpath(existing);
      return rest === '' ? real : join(real, rest);
    } catch (err) {
      // Still there: a dangling symlink, and whatever it points at is not inside the root now.
      // Gone since the lstat (a pod's folder torn down meanwhile): walk up from it again.
      if (!isNotFound(err) || (await exists(existing))) {
        throw new PathEscapeError(path, root, { cause: err });
      }
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/**
 * I/O part of {@link resolveInsideRoot}: resolves symlinks along `path` (the longest existing
 * prefix — the last components may not exist yet) and refuses with PathEscapeError when the real
 * path leaves the real root. Returns `path` unchanged on success.
 */
export async function assertRealPathInsideRoot(root: string, path: string): Promise<string> {
  // Both at once: each is a trip through libuv's thread pool, and this runs on every plug.
  const [realRoot, resolved] = await Promise.all([realpath(root), resolveExisting(root, path)]);
  if (!isLexicallyInside(realRoot, resolved)) {
    throw new PathEscapeError(path, root);
  }
  return path;
}

/** Pure: a pod's folder, `<root>/pods/<uid>`. */
export function podDirPath(root: string, podUID: string): string {
  assertUid(root, 'podUID', podUID);
  return joinInsideRoot(root, KubeletLayout.pods, podUID);
}

/** Pure: where a CSI driver publishes volumes for pods (a real kubelet's block volumes link there). */
export function pluginsDirPath(root: string): string {
  return joinInsideRoot(root, KubeletLayout.plugins);
}

/**
 * Refuses with PathEscapeError (naming the pod's folder) a `path` whose real path is not inside
 * the pod's own folder — another pod's folder is inside the kubelet root too, and a symlink there
 * would hand over another pod's disk. `sharedPlugins` also admits the kubelet's plugins folder,
 * where a real kubelet's `volumeDevices/<driver>/<pv>` symlinks point (never another pod's).
 */
export async function assertRealPathInsidePod(
  root: string,
  podUID: string,
  path: string,
  sharedPlugins = false,
): Promise<string> {
  const podDir = podDirPath(root, podUID);
  const [realRoot, resolved] = await Promise.all([realpath(root), resolveExisting(root, path)]);
  const inPod = isLexicallyInside(join(realRoot, KubeletLayout.pods, podUID), resolved);
  const inPlugins =
    sharedPlugins && isLexicallyInside(join(realRoot, KubeletLayout.plugins), resolved);
  if (!inPod && !inPlugins) throw new PathEscapeError(path, podDir);
  return path;
}

/** Validates and joins `segments` under `root`, then refuses anything whose real path leaves it. */
export async function resolveInsideRoot(
  root: string,
  ...segments: readonly string[]
): Promise<string> {
  return assertRealPathInsideRoot(root, joinInsideRoot(root, ...segments));
}

/** Pure: the launcher pod's hotplug folder, `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/hotplug-disks`. */
export function launcherHotplugDirPath(root: string, launcherUID: string): string {
  assertUid(root, 'launcherPodUID', launcherUID);
  return joinInsideRoot(
    root,
    KubeletLayout.pods,
    launcherUID,
    KubeletLayout.volumes,
    KubeletLayout.emptyDir,
    KubeletLayout.hotplugDisks,
  );
}

/** Pure: a filesystem PVC's image inside the attachment pod, `.../volumes/kubernetes.io~csi/<pv>/mount/disk.img`. */
export function attachmentFilesystemSourcePath(
  root: string,
  podUID: string,
  pvName: string,
): string {
  assertUid(root, 'attachmentPodUID', podUID);
  assertLabelSegment(root, 'pvName', pvName);
  return joinInsideRoot(
    root,
    KubeletLayout.pods,
    podUID,
    KubeletLayout.volumes,
    KubeletLayout.csi,
    pvName,
    KubeletLayout.mount,
    KubeletLayout.diskImage,
  );
}

/** Pure: a block PVC's device node inside the attachment pod, `.../volumeDevices/kubernetes.io~csi/<pv>`. */
export function attachmentBlockSourcePath(root: string, podUID: string, pvName: string): string {
  assertUid(root, 'attachmentPodUID', podUID);
  assertLabelSegment(root, 'pvName', pvName);
  return joinInsideRoot(
    root,
    KubeletLayout.pods,
    podUID,
    KubeletLayout.volumeDevices,
    KubeletLayout.csi,
    pvName,
  );
}

/** Pure: the file name a volume gets in the hotplug folder: `<vol>.img` (filesystem) or `<vol>` (block). */
export function targetName(volume: string, mode: VolumeMode): string {
  return mode === VolumeMode.Filesystem ? `${volume}.img` : volume;
}

/** Pure: the target inside a hotplug folder. */
export function targetPathIn(hotplugDir: string, volume: string, mode: VolumeMode): string {
  assertLabelSegment(hotplugDir, 'volume', volume);
  return joinInsideRoot(hotplugDir, targetName(volume, mode));
}

/** The launcher's hotplug folder, checked to really be in the launcher pod's own folder. */
export async function launcherHotplugDir(root: string, launcherUID: string): Promise<string> {
  return assertRealPathInsidePod(root, launcherUID, launcherHotplugDirPath(root, launcherUID));
}

/**
 * The attachment pod's `disk.img`, checked to really be the attachment pod's: inside its own
 * folder, not through a symlink out of the root or into another pod's folder.
 */
export async function attachmentFilesystemSource(
  root: string,
  podUID: string,
  pvName: string,
): Promise<string> {
  return assertRealPathInsidePod(
    root,
    podUID,
    attachmentFilesystemSourcePath(root, podUID, pvName),
  );
}

/**
 * The attachment pod's block device node, checked to really be the attachment pod's: inside its
 * own folder (or the kubelet's CSI plugins folder), never another pod's device node or /dev.
 */
export async function attachmentBlockSource(
  root: string,
  podUID: string,
  pvName: string,
): Promise<string> {
  return assertRealPathInsidePod(
    root,
    podUID,
    attachmentBlockSourcePath(root, podUID, pvName),
    true,
  );
}

/**
 * The target in a hotplug folder, checked against symlink escape relative to `root` (pass the
 * kubelet root so a hotplug folder that is itself a symlink out of it is refused).
 */
export async function targetPath(
  hotplugDir: string,
  volume: string,
  mode: VolumeMode,
  root: string = hotplugDir,
): Promise<string> {
  return assertRealPathInsideRoot(root, targetPathIn(hotplugDir, volume, mode));
}
