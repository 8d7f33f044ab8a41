/**
 * Sets and ranks over KubeVirt's volume phases that the spec-watcher's diff, planner and
 * projector need. The phases, reasons and messages themselves come from `@plugline/contracts`.
 */
import { VolumePhase } from '@plugline/contracts';

/** Phases of the plug direction, in order; Pending and Bound share a rank (a PVC can be lost). */
const PLUG_RANK: Readonly<Record<string, number>> = {
  [VolumePhase.Pending]: 1,
  [VolumePhase.Bound]: 1,
  [VolumePhase.AttachedToNode]: 2,
  [VolumePhase.MountedToPod]: 3,
  [VolumePhase.Ready]: 4,
  [VolumePhase.UnMountedFromPod]: 5,
  [VolumePhase.Detaching]: 6,
};

/** Position of a phase along plug then unplug; 0 for an unknown or absent phase. */
export function phaseRank(phase: string | undefined): number {
  return phase === undefined ? 0 : (PLUG_RANK[phase] ?? 0);
}

/** Phases only a volume being unplugged is in. */
export const UNPLUG_PHASE_SET: ReadonlySet<string> = new Set([
  VolumePhase.UnMountedFromPod,
  VolumePhase.Detaching,
]);

/** Phases only a hotplugged volume can be in (a permanent volume may show `Ready`). */
export const HOTPLUG_ONLY_PHASES: ReadonlySet<string> = new Set([
  VolumePhase.Pending,
  VolumePhase.Bound,
  VolumePhase.AttachedToNode,
  VolumePhase.MountedToPod,
  VolumePhase.UnMountedFromPod,
  VolumePhase.Detaching,
]);

export { IN_USE_PHASES } from '@plugline/contracts';
