import { describe, expect, it } from 'vitest';
import { diffVolumes, isHotplugStatus } from '../src/index.js';
import {
  hotplugStatus,
  vmi,
  withHotplugDV,
  withHotplugPVC,
  withPermanentPVC,
  withPhase,
  withVolumeStatus,
} from './fixtures.js';

describe('diffVolumes', () => {
  it.each([
    {
      what: 'new hotplug PVC, no status',
      v: vmi(withHotplugPVC('d1'), withPhase('Running')),
      plug: ['d1'],
      unplug: [],
    },
    { what: 'new hotplug DataVolume', v: vmi(withHotplugDV('d2')), plug: ['d2'], unplug: [] },
    {
      what: 'plug in flight (Bound)',
      v: vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d1', 'Bound'))),
      plug: [],
      unplug: [],
    },
    {
      what: 'plugged (Ready)',
      v: vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d1', 'Ready'))),
      plug: [],
      unplug: [],
    },
    {
      what: 're-add while UnMountedFromPod (#16159)',
      v: vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d1', 'UnMountedFromPod'))),
      plug: ['d1'],
      unplug: [],
    },
    {
      what: 're-add while Detaching (#16159)',
      v: vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d1', 'Detaching'))),
      plug: ['d1'],
      unplug: [],
    },
    {
      what: 'removed while Ready',
      v: vmi(withVolumeStatus(hotplugStatus('d1', 'Ready'))),
      plug: [],
      unplug: ['d1'],
    },
    {
      what: 'removed while Pending, no hotplugVolume',
      v: vmi(withVolumeStatus({ name: 'd1', target: '', phase: 'Pending' })),
      plug: [],
      unplug: ['d1'],
    },
    {
      what: 'removed, already Detaching',
      v: vmi(withVolumeStatus(hotplugStatus('d1', 'Detaching'))),
      plug: [],
      unplug: ['d1'],
    },
    { what: 'permanent volume in spec', v: vmi(withPermanentPVC('data')), plug: [], unplug: [] },
    {
      what: 'permanent Ready status without spec volume',
      v: vmi(withVolumeStatus({ name: 'gone-permanent', target: 'vdc', phase: 'Ready' })),
      plug: [],
      unplug: [],
    },
    {
      what: 'mixed',
      v: vmi(
        withPermanentPVC('data'),
        withHotplugPVC('a'),
        withHotplugPVC('b'),
        withVolumeStatus(hotplugStatus('b', 'Ready')),
        withVolumeStatus(hotplugStatus('c', 'MountedToPod')),
      ),
      plug: ['a'],
      unplug: ['c'],
    },
  ])('$what', ({ v, plug, unplug }) => {
    const diff = diffVolumes(v);
    expect(diff.plug.map((x) => x.name)).toEqual(plug);
    expect(diff.unplug.map((x) => x.name)).toEqual(unplug);
  });

  it('never mutates the VMI', () => {
    const v = vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d2', 'Ready')));
    const before = structuredClone(v);
    diffVolumes(v);
    expect(v).toEqual(before);
  });

  it.each([
    [{ name: 'x', target: 'sda', phase: 'Ready' }, false],
    [{ name: 'x', target: '', phase: 'Ready', hotplugVolume: {} }, true],
    [{ name: 'x', target: '', phase: 'Bound' }, true],
    [{ name: 'x', target: '' }, false],
  ])('isHotplugStatus(%j) is %s', (status, expected) => {
    expect(isHotplugStatus(status)).toBe(expected);
  });
});
