/**
 * Pure parser for `/proc/<pid>/mountinfo` (proc(5)):
 * `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
 */

export interface MountInfoEntry {
  readonly mountId: number;
  readonly parentId: number;
  /** `major:minor` of the filesystem the mount comes from. */
  readonly major: number;
  readonly minor: number;
  /** Path inside that filesystem that is mounted (for a bind mount of a file: the file). */
  readonly root: string;
  /** Where it is mounted, relative to the reading process's root. */
  readonly mountPoint: string;
  readonly mountOptions: string;
  readonly optionalFields: readonly string[];
  readonly fsType: string;
  readonly source: string;
  readonly superOptions: string;
}

/** Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(parseInt(octal, 8)),
  );
}

/** Parses one line; undefined when it is not a well-formed mountinfo line. */
export function parseMountInfoLine(line: string): MountInfoEntry | undefined {
  const fields = line.trim().split(' ');
  const dash = fields.indexOf('-');
  if (dash < 6 || fields.length < dash + 4) return undefined;
  const [mountId, parentId, devNo, root, mountPoint, mountOptions] = fields;
  const dev = /^(\d+):(\d+)$/.exec(devNo ?? '');
  if (dev === null || mountId === undefined || parentId === undefined) return undefined;
  return {
    mountId: Number(mountId),
    parentId: Number(parentId),
    major: Number(dev[1]),
    minor: Number(dev[2]),
    root: unescapeMountField(root ?? ''),
    mountPoint: unescapeMountField(mountPoint ?? ''),
    mountOptions: mountOptions ?? '',
    optionalFields: fields.slice(6, dash),
    fsType: fields[dash + 1] ?? '',
    source: unescapeMountField(fields[dash + 2] ?? ''),
    superOptions: fields[dash + 3] ?? '',
  };
}

/** Parses a whole mountinfo file, skipping malformed lines. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const entry = parseMountInfoLine(line);
    if (entry !== undefined) entries.push(entry);
  }
  return entries;
}

/** The mounts stacked on `mountPoint` (an absolute, symlink-free path), oldest first. */
export function mountsAt(
  table: readonly MountInfoEntry[],
  mountPoint: string,
): readonly MountInfoEntry[] {
  return table.filter((entry) => entry.mountPoint === mountPoint);
}
