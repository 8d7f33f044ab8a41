import { describe, expect, it } from 'vitest';
import type { EventData, EventType, VolumeStatus } from '../src/index.js';
import { Stage, applyEventToVolumeStatus, buildEvent, buildVolumeStatus } from '../src/index.js';

function fact(type: EventType, data: Partial<EventData> = {}) {
  return buildEvent({
    namespace: 'ns',
    vmi: 'vm-1',
    volume: 'data',
    type,
    stage: Stage.SpecWatcher,
    id: `e-${type}`,
    data: { operationId: 'op-1', operation: 'plug', vmiUID: 'uid-vmi', ...data },
  });
}

const ready: VolumeStatus = buildVolumeStatus({
  name: 'data',
  phase: 'Ready',
  reason: 'VolumeReady',
  message: 'Successfully attach hotplugged volume data to VM',
  target: 'sda',
  attachPod: { name: 'hp-volume-abcde', uid: 'uid-pod' },
});

describe('applyEventToVolumeStatus', () => {
  it('Ready never falls back to Bound when a late bound fact arrives', () => {
    expect(applyEventToVolumeStatus(ready, fact('bound'))).toEqual({
      status: ready,
      changed: false,
    });
  });

  it('a volume in use whose pod was replaced keeps its phase and names the new pod', () => {
    const moved = applyEventToVolumeStatus(
      ready,
      fact('attached-to-node', {
        phase: 'AttachedToNode',
        attachPod: { name: 'hp-volume-fghij', uid: 'uid-new' },
      }),
    );
    expect(moved).toEqual({
      status: {
        ...ready,
        hotplugVolume: { attachPodName: 'hp-volume-fghij', attachPodUID: 'uid-new' },
      },
      changed: true,
    });
    // The same pod again, or an unplugged volume, is left as it is.
    expect(
      applyEventToVolumeStatus(
        ready,
        fact('attached-to-node', { attachPod: { name: 'hp-volume-abcde', uid: 'uid-pod' } }),
      ).changed,
    ).toBe(false);
    const unmounted = { ...ready, phase: 'UnMountedFromPod' };
    expect(
      applyEventToVolumeStatus(
        unmounted,
        fact('attached-to-node', { attachPod: { name: 'hp-volume-fghij', uid: 'uid-new' } }),
      ),
    ).toEqual({ status: unmounted, changed: false });
  });

  it('a failed fact keeps the last good phase', () => {
    const failed = fact('failed', { reason: 'HotplugFailed', message: 'EIO' });
    expect(applyEventToVolumeStatus(ready, failed)).toEqual({ status: ready, changed: false });
  });

  it('removed drops the entry, and is a no-op when there is none', () => {
    expect(applyEventToVolumeStatus(ready, fact('removed'))).toEqual({
      status: undefined,
      changed: true,
    });
    expect(applyEventToVolumeStatus(undefined, fact('removed'))).toEqual({
      status: undefined,
      changed: false,
    });
  });

  it('facts without a phase change nothing', () => {
    for (const type of ['requested', 'import-progress', 'released'] as const) {
      expect(applyEventToVolumeStatus(ready, fact(type, { progress: '1%' })).changed).toBe(false);
    }
  });

  it('a duplicate fact is not a change, whatever the key order of the stored entry', () => {
    const once = applyEventToVolumeStatus(
      undefined,
      fact('pending', { message: 'PVC x not found', reason: 'FailedPvcNotFound' }),
    );
    expect(once.changed).toBe(true);
    const reordered = Object.fromEntries(Object.entries(once.status!).reverse()) as VolumeStatus;
    const twice = applyEventToVolumeStatus(
      reordered,
      fact('pending', { message: 'PVC x not found', reason: 'FailedPvcNotFound' }),
    );
    expect(twice.changed).toBe(false);
    expect(once.status).toMatchObject({
      phase: 'Pending',
      reason: 'FailedPvcNotFound',
      message: 'PVC x not found',
      target: '',
      hotplugVolume: {},
    });
  });

  it('a volume re-added while detaching restarts from Bound with no target and no pod', () => {
    const detaching = { ...ready, phase: 'Detaching' };
    const projection = applyEventToVolumeStatus(detaching, fact('bound'));
    expect(projection.status).toEqual({
      name: 'data',
      phase: 'Bound',
      reason: 'PVCNotReady',
      message: 'PVC is in phase Bound',
      target: '',
      hotplugVolume: {},
    });
  });

  it('keeps PVC info and size it already had', () => {
    const withInfo = buildVolumeStatus({
      name: 'data',
      phase: 'MountedToPod',
      persistentVolumeClaimInfo: { claimName: 'pvc', volumeMode: 'Block' },
      size: 1024,
    });
    const next = applyEventToVolumeStatus(withInfo, fact('ready', { target: 'vdb' })).status;
    expect(next).toMatchObject({
      phase: 'Ready',
      target: 'vdb',
      persistentVolumeClaimInfo: { claimName: 'pvc', volumeMode: 'Block' },
      size: 1024,
    });
  });

  it('does not mutate the entry it is given', () => {
    const before = structuredClone(ready);
    applyEventToVolumeStatus(ready, fact('unmounted-from-pod', { operation: 'unplug' }));
    expect(ready).toEqual(before);
  });
});
