import type { Volume, VolumeStatus, VirtualMachineInstance } from '@plugline/contracts';
import { isHotpluggable } from '@plugline/contracts';
import { HOTPLUG_ONLY_PHASES, UNPLUG_PHASE_SET } from './phase-sets.js';

/** What the spec asks of the hotplug volumes that the status does not yet reflect. */
export interface VolumeDiff {
  /** Hotpluggable spec volumes with no status entry, or whose entry is on its way out (a re-add). */
  plug: Volume[];
  /** Hotplug status entries whose volume has left the spec. */
  unplug: VolumeStatus[];
}

/**
 * A status entry belongs to a hotplugged volume when it has `hotplugVolume`, or is in a phase only
 * hotplugged volumes reach. Any other entry is a permanent volume's and is never touched.
 */
export function isHotplugStatus(status: VolumeStatus): boolean {
  return (
    status.hotplugVolume !== undefined ||
    (status.phase !== undefined && HOTPLUG_ONLY_PHASES.has(status.phase))
  );
}

/** The spec's hotpluggable volumes. */
export function hotplugVolumesOf(vmi: VirtualMachineInstance): Volume[] {
  return (vmi.spec.volumes ?? []).filter(isHotpluggable);
}

/**
 * Diffs a VMI's hotpluggable spec volumes against `status.volumeStatus`. Pure and level-based:
 * the same VMI always gives the same answer.
 */
export function diffVolumes(vmi: VirtualMachineInstance): VolumeDiff {
  const statuses = vmi.status?.volumeStatus ?? [];
  const statusByName = new Map(statuses.map((s) => [s.name, s]));
  const specNames = new Set((vmi.spec.volumes ?? []).map((v) => v.name));
  const plug = hotplugVolumesOf(vmi).filter((volume) => {
    const status = statusByName.get(volume.name);
    return (
      status === undefined || (status.phase !== undefined && UNPLUG_PHASE_SET.has(status.phase))
    );
  });
  const unplug = statuses.filter((s) => !specNames.has(s.name) && isHotplugStatus(s));
  return { plug, unplug };
}
