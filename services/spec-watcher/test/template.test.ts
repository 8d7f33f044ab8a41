import { describe, expect, it } from 'vitest';
import { diffTemplateToVmi, templateVolumeChanges } from '../src/index.js';
import {
  hotplugStatus,
  vm,
  vmi,
  withHotplugPVC,
  withPermanentPVC,
  withVolumeStatus,
} from './fixtures.js';

/** Applies the subset of RFC 6902 the patch uses, failing on a `test` mismatch. */
function apply<T>(doc: T, ops: ReturnType<typeof diffTemplateToVmi>): T {
  const out = structuredClone(doc) as Record<string, unknown>;
  for (const op of ops) {
    const keys = op.path.split('/').slice(1);
    const last = keys.pop()!;
    let parent = out;
    for (const k of keys) parent = parent[k] as Record<string, unknown>;
    if (op.op === 'test') {
      if (JSON.stringify(parent[last]) !== JSON.stringify(op.value))
        throw new Error(`test failed at ${op.path}`);
    } else if (op.op === 'remove') delete parent[last];
    else parent[last] = op.value;
  }
  return out as T;
}

describe('declarative hotplug: diffTemplateToVmi', () => {
  it('adds a hotplug volume and its disk from the template, guarded by test ops', () => {
    const running = vmi(withPermanentPVC('data'));
    const machine = vm(vmi(withPermanentPVC('data'), withHotplugPVC('d1')));
    const ops = diffTemplateToVmi(machine, running);
    expect(ops.slice(0, 2)).toEqual([
      { op: 'test', path: '/spec/volumes', value: running.spec.volumes },
      { op: 'test', path: '/spec/domain/devices/disks', value: running.spec.domain.devices.disks },
    ]);
    const next = apply(running, ops);
    expect(next.spec.volumes?.map((v) => v.name)).toEqual(['rootdisk', 'data', 'd1']);
    expect(next.spec.domain.devices.disks?.map((d) => d.name)).toEqual(['rootdisk', 'data', 'd1']);
    expect(templateVolumeChanges(machine, running)).toEqual({
      add: ['d1'],
      remove: [],
      deferred: [],
    });
  });

  it('removes a hotplug volume absent from the template and leaves permanent ones alone', () => {
    const running = vmi(withPermanentPVC('data'), withHotplugPVC('d1'), withHotplugPVC('d2'));
    const machine = vm(vmi(withHotplugPVC('d2')));
    const next = apply(running, diffTemplateToVmi(machine, running));
    expect(next.spec.volumes?.map((v) => v.name)).toEqual(['rootdisk', 'data', 'd2']);
    expect(next.spec.domain.devices.disks?.map((d) => d.name)).toEqual(['rootdisk', 'data', 'd2']);
  });

  it('removes a changed volume first and re-adds it once its old status entry is gone', () => {
    const running = vmi(
      withHotplugPVC('d1', 'old-claim'),
      withVolumeStatus(
        hotplugStatus('d1', 'Ready', { persistentVolumeClaimInfo: { claimName: 'old-claim' } }),
      ),
    );
    const machine = vm(vmi(withHotplugPVC('d1', 'new-claim')));
    expect(templateVolumeChanges(machine, running)).toEqual({
      add: [],
      remove: ['d1'],
      deferred: [],
    });
    const afterRemove = apply(running, diffTemplateToVmi(machine, running));
    expect(afterRemove.spec.volumes?.map((v) => v.name)).toEqual(['rootdisk']);
    // still unplugging the old claim: held back
    expect(templateVolumeChanges(machine, afterRemove)).toEqual({
      add: [],
      remove: [],
      deferred: ['d1'],
    });
    expect(diffTemplateToVmi(machine, afterRemove)).toEqual([]);
    // status entry gone: re-added with the new claim
    afterRemove.status!.volumeStatus = afterRemove.status!.volumeStatus!.filter(
      (s) => s.name !== 'd1',
    );
    const readded = apply(afterRemove, diffTemplateToVmi(machine, afterRemove));
    expect(
      readded.spec.volumes?.find((v) => v.name === 'd1')?.persistentVolumeClaim?.claimName,
    ).toBe('new-claim');
  });

  it('re-adds the same claim while the old entry is still unplugging (#16159)', () => {
    const running = vmi(
      withVolumeStatus(
        hotplugStatus('d1', 'Detaching', { persistentVolumeClaimInfo: { claimName: 'claim-d1' } }),
      ),
    );
    expect(templateVolumeChanges(vm(vmi(withHotplugPVC('d1'))), running).add).toEqual(['d1']);
  });

  it.each([
    {
      what: 'in sync',
      tpl: vmi(withHotplugPVC('d1')),
      running: vmi(withHotplugPVC('d1')),
      extra: {},
    },
    {
      what: 'updateVolumesStrategy Migration',
      tpl: vmi(withHotplugPVC('d1')),
      running: vmi(),
      extra: { updateVolumesStrategy: 'Migration' },
    },
    {
      what: 'template volume without a disk',
      tpl: vmi((v) =>
        v.spec.volumes!.push({
          name: 'nodisk',
          persistentVolumeClaim: { claimName: 'c', hotpluggable: true },
        }),
      ),
      running: vmi(),
      extra: {},
    },
    {
      what: 'VMI being deleted',
      tpl: vmi(withHotplugPVC('d1')),
      running: vmi((v) => (v.metadata.deletionTimestamp = '2026-01-01T00:00:00Z')),
      extra: {},
    },
  ])('no patch when $what', ({ tpl, running, extra }) => {
    expect(diffTemplateToVmi(vm(tpl, extra), running)).toEqual([]);
  });

  it('uses add without a test when the VMI has no volume list', () => {
    const running = vmi((v) => {
      delete v.spec.volumes;
      delete v.spec.domain.devices.disks;
    });
    const ops = diffTemplateToVmi(vm(vmi(withHotplugPVC('d1'))), running);
    expect(ops.map((o) => o.op)).toEqual(['add', 'add']);
  });

  it('a concurrent change makes the guarded patch fail', () => {
    const running = vmi();
    const ops = diffTemplateToVmi(vm(vmi(withHotplugPVC('d1'))), running);
    const changed = vmi(withHotplugPVC('other'));
    expect(() => apply(changed, ops)).toThrow(/test failed/);
  });
});
