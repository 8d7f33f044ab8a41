import type {
  Disk,
  Volume,
  VirtualMachine,
  VirtualMachineInstance,
  VolumeStatus,
} from '@plugline/contracts';
import { claimNameOf, isHotpluggable } from '@plugline/contracts';
import type { JsonPatchOp } from './patch.js';
import { jsonEqual } from './patch.js';

/** Which hotplug volumes the VM template asks to add to or remove from its running VMI. */
export interface TemplateChanges {
  /** In the template, not in the VMI: added with their disks. */
  add: string[];
  /** Hotpluggable in the VMI, absent from the template or changed there: removed with their disks. */
  remove: string[];
  /** In the template but held back: a changed volume whose old self is still being unplugged. */
  deferred: string[];
}

const UPDATE_VOLUMES_STRATEGY_MIGRATION = 'Migration';

function byName<T extends { name: string }>(items: readonly T[] | undefined): Map<string, T> {
  return new Map((items ?? []).map((item) => [item.name, item]));
}

function volumeAndDiskEqual(
  a: { volume: Volume; disk: Disk | undefined },
  b: { volume: Volume; disk: Disk | undefined },
): boolean {
  return jsonEqual(a.volume, b.volume) && jsonEqual(a.disk, b.disk);
}

/** A volume still in the VMI's status from an earlier life; a re-add of the same claim may go ahead. */
function heldBack(volume: Volume, status: VolumeStatus | undefined): boolean {
  if (status === undefined) return false;
  const claim = status.persistentVolumeClaimInfo?.claimName;
  return claim !== undefined && claim !== claimNameOf(volume);
}

/**
 * KubeVirt's declarative hotplug (`pkg/storage/hotplug/hotplug.go`): compares the hotpluggable
 * volumes of `vm.spec.template` with the running VMI. A changed volume is removed first and added
 * again once its old status entry is gone. Nothing changes under `updateVolumesStrategy: Migration`
 * or for a VMI being deleted. Permanent volumes are never touched.
 */
export function templateVolumeChanges(
  vm: VirtualMachine,
  vmi: VirtualMachineInstance,
): TemplateChanges {
  const changes: TemplateChanges = { add: [], remove: [], deferred: [] };
  if (vm.spec.updateVolumesStrategy === UPDATE_VOLUMES_STRATEGY_MIGRATION) return changes;
  if (vmi.metadata.deletionTimestamp !== undefined) return changes;
  const template = vm.spec.template.spec;
  const tplVolumes = byName(template.volumes);
  const tplDisks = byName(template.domain.devices.disks);
  const vmiVolumes = byName(vmi.spec.volumes);
  const vmiDisks = byName(vmi.spec.domain.devices.disks);
  const statuses = byName(vmi.status?.volumeStatus);

  for (const volume of vmiVolumes.values()) {
    if (!isHotpluggable(volume)) continue;
    const wanted = tplVolumes.get(volume.name);
    const same =
      wanted !== undefined &&
      volumeAndDiskEqual(
        { volume: wanted, disk: tplDisks.get(volume.name) },
        { volume, disk: vmiDisks.get(volume.name) },
      );
    if (!same) changes.remove.push(volume.name);
  }
  for (const volume of tplVolumes.values()) {
    if (!isHotpluggable(volume) || vmiVolumes.has(volume.name)) continue;
    if (!tplDisks.has(volume.name)) continue; // a hotplug volume needs its disk (webhook rule)
    if (heldBack(volume, statuses.get(volume.name))) changes.deferred.push(volume.name);
    else changes.add.push(volume.name);
  }
  return changes;
}

/**
 * The JSON patch that applies the template's hotplug changes to the VMI: `test` ops on the
 * volumes and disks as read (a concurrent change makes the patch fail and the caller re-reads),
 * then the new lists. Empty when there is nothing to do.
 */
export function diffTemplateToVmi(vm: VirtualMachine, vmi: VirtualMachineInstance): JsonPatchOp[] {
  const changes = templateVolumeChanges(vm, vmi);
  if (changes.add.length === 0 && changes.remove.length === 0) return [];
  const template = vm.spec.template.spec;
  const tplVolumes = byName(template.volumes);
  const tplDisks = byName(template.domain.devices.disks);
  const removed = new Set(changes.remove);
  const oldVolumes = vmi.spec.volumes;
  const oldDisks = vmi.spec.domain.devices.disks;
  const volumes = (oldVolumes ?? []).filter((v) => !removed.has(v.name));
  const disks = (oldDisks ?? []).filter((d) => !removed.has(d.name));
  for (const name of changes.add) {
    volumes.push(structuredClone(tplVolumes.get(name) as Volume));
    disks.push(structuredClone(tplDisks.get(name) as Disk));
  }
  return [
    ...guard('/spec/volumes', oldVolumes),
    ...guard('/spec/domain/devices/disks', oldDisks),
    write('/spec/volumes', oldVolumes, volumes),
    write('/spec/domain/devices/disks', oldDisks, disks),
  ];
}

/** A `test` on the list as read; an absent list cannot be tested in RFC 6902, so it gets none. */
function guard(path: string, old: unknown[] | undefined): JsonPatchOp[] {
  return old === undefined ? [] : [{ op: 'test', path, value: old }];
}

function write(path: string, old: unknown[] | undefined, value: unknown[]): JsonPatchOp {
  return old === undefined ? { op: 'add', path, value } : { op: 'replace', path, value };
}
