import { DiskBus, HypervisorError } from '@plugline/contracts';

/**
 * Disk target names (`sda`, `vdb`, `sdaa`, ...) and their allocation.
 *
 * Names follow the Linux sequence: index 0 → `a`, 25 → `z`, 26 → `aa`, 701 → `zz`, 702 → `aaa`,
 * up to three letters (18 278 names per prefix).
 */

export const TargetPrefix = { [DiskBus.Scsi]: 'sd', [DiskBus.Virtio]: 'vd' } as const;
export type HotplugBus = keyof typeof TargetPrefix;

/** The highest index a target can have (`zzz`). */
export const MAX_TARGET_INDEX = 26 + 26 * 26 + 26 * 26 * 26 - 1;

const TARGET_PATTERN = /^(sd|vd|hd|xvd)([a-z]{1,3})$/;

export function isHotplugBus(bus: string): bus is HotplugBus {
  return bus === DiskBus.Scsi || bus === DiskBus.Virtio;
}

/** The target prefix of a hotplug bus: `sd` for scsi, `vd` for virtio. */
export function targetPrefix(bus: HotplugBus): string {
  return TargetPrefix[bus];
}

/** `targetName('sd', 0)` = `sda`; `targetName('vd', 26)` = `vdaa`. */
export function targetName(prefix: string, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index > MAX_TARGET_INDEX) {
    throw new HypervisorError('TargetsExhausted', `no target name for index ${index}`);
  }
  let letters = '';
  let n = index + 1;
  while (n > 0) {
    const rem = (n - 1) % 26;
    letters = String.fromCharCode(97 + rem) + letters;
    n = Math.floor((n - 1) / 26);
  }
  return `${prefix}${letters}`;
}

/** Splits a target into prefix and index (`sdb` → `{prefix: 'sd', index: 1}`), or undefined. */
export function parseTarget(target: string): { prefix: string; index: number } | undefined {
  const match = TARGET_PATTERN.exec(target);
  if (match === null) return undefined;
  let index = 0;
  for (const ch of match[2]!) index = index * 26 + (ch.charCodeAt(0) - 96);
  return { prefix: match[1]!, index: index - 1 };
}

/** The index of a target (the SCSI unit of `sdX`); throws for a malformed name. */
export function targetIndex(target: string): number {
  const parsed = parseTarget(target);
  if (parsed === undefined) {
    throw new HypervisorError('InvalidTarget', `${JSON.stringify(target)} is not a disk target`);
  }
  return parsed.index;
}

export interface ExistingTarget {
  /** Volume name. */
  name: string;
  /** Its target from `volumeStatus` (`""` while it has none). */
  target: string;
}

export interface WantedTarget {
  name: string;
  bus: HotplugBus;
}

/**
 * Chooses a target for every wanted volume. Pure and deterministic:
 *
 * 1. A volume keeps the target it already has in `existing` (from `volumeStatus`) when that target
 *    has the prefix of its bus and no earlier wanted volume kept it first.
 * 2. Every other wanted volume, in the order of `wanted`, gets the lowest free name of its prefix.
 *    A name is taken while any `existing` entry still holds it (a volume being unplugged keeps its
 *    letter until its status entry is gone), while the live domain has it (`occupied`, which
 *    includes disks that are not hotplugged), or once it was handed out in this call.
 *
 * So a freed letter is reused predictably: once no status entry and no live disk holds it, it is
 * the next one given out if it is the lowest free one.
 */
export function allocateTargets(
  existing: readonly ExistingTarget[],
  wanted: readonly WantedTarget[],
  occupied: readonly string[],
): Map<string, string> {
  const previous = new Map<string, string>();
  for (const entry of existing) {
    if (entry.target !== '' && !previous.has(entry.name)) previous.set(entry.name, entry.target);
  }
  const taken = new Set<string>([...occupied, ...previous.values()]);
  const result = new Map<string, string>();
  const kept = new Set<string>();
  const fresh: WantedTarget[] = [];
  for (const volume of wanted) {
    if (result.has(volume.name)) continue;
    const target = previous.get(volume.name);
    const prefixOk =
      target !== undefined && parseTarget(target)?.prefix === targetPrefix(volume.bus);
    if (target !== undefined && prefixOk && !kept.has(target)) {
      result.set(volume.name, target);
      kept.add(target);
    } else {
      fresh.push(volume);
    }
  }
  const next: Record<string, number> = {};
  for (const volume of fresh) {
    if (result.has(volume.name)) continue;
    const prefix = targetPrefix(volume.bus);
    let index = next[prefix] ?? 0;
    while (taken.has(targetName(prefix, index))) index += 1;
    const target = targetName(prefix, index);
    taken.add(target);
    next[prefix] = index + 1;
    result.set(volume.name, target);
  }
  return result;
}
