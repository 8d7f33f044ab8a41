import { describe, expect, it } from 'vitest';
import type { VolumePhase } from '../src/index.js';
import {
  EVENT_TYPES,
  PHASE_OF_EVENT,
  PHASE_TRANSITIONS,
  PLUG_PHASES,
  PhaseMessage,
  Reason,
  UNPLUG_PHASES,
  VOLUME_PHASES,
  canTransition,
  isPlugPhase,
  isUnplugPhase,
  pendingReasonFor,
  phaseOfEvent,
  renderMessage,
} from '../src/index.js';

describe('volume phases', () => {
  it('are exactly KubeVirt’s hotplug phases', () => {
    expect(VOLUME_PHASES).toEqual([
      'Pending',
      'Bound',
      'AttachedToNode',
      'MountedToPod',
      'Ready',
      'UnMountedFromPod',
      'Detaching',
    ]);
    expect([...PLUG_PHASES, ...UNPLUG_PHASES].sort()).toEqual([...VOLUME_PHASES].sort());
  });

  it('walk the plug path one step at a time, then the unplug path', () => {
    const path: VolumePhase[] = [...PLUG_PHASES, ...UNPLUG_PHASES];
    for (let i = 1; i < path.length; i += 1) {
      expect(canTransition(path[i - 1], path[i]!), `${path[i - 1]} → ${path[i]}`).toBe(true);
    }
  });

  it.each([
    ['Ready', 'Bound'],
    ['Ready', 'Pending'],
    ['Ready', 'AttachedToNode'],
    ['Ready', 'MountedToPod'],
    ['MountedToPod', 'Bound'],
    ['MountedToPod', 'AttachedToNode'],
    ['Detaching', 'UnMountedFromPod'],
    ['Detaching', 'Ready'],
    ['UnMountedFromPod', 'Ready'],
    ['UnMountedFromPod', 'MountedToPod'],
    ['Pending', 'UnMountedFromPod'],
    ['Bound', 'UnMountedFromPod'],
  ] as [VolumePhase, VolumePhase][])('forbids %s → %s', (from, to) => {
    expect(canTransition(from, to)).toBe(false);
  });

  it.each([
    ['Bound', 'Pending', 'the PVC was lost'],
    ['AttachedToNode', 'Bound', 'the attachment pod vanished before the mount'],
    ['Pending', 'Ready', 'facts arrived coalesced'],
    ['Pending', 'Detaching', 'removed before it was attached'],
    ['Detaching', 'Bound', 're-added while detaching (#16159)'],
    ['Ready', 'Ready', 'a new message in the same phase'],
  ] as [VolumePhase, VolumePhase, string][])('allows %s → %s (%s)', (from, to) => {
    expect(canTransition(from, to)).toBe(true);
  });

  it('Ready never falls back to a plug phase', () => {
    for (const to of PLUG_PHASES.filter((p) => p !== 'Ready')) {
      expect(canTransition('Ready', to)).toBe(false);
    }
  });

  it('a new entry starts in a plug phase only', () => {
    for (const p of PLUG_PHASES) expect(canTransition(undefined, p)).toBe(true);
    for (const p of UNPLUG_PHASES) expect(canTransition(undefined, p)).toBe(false);
  });

  it('rejects anything that is not a phase, in either position', () => {
    expect(canTransition('Lost' as VolumePhase, 'Bound')).toBe(false);
    expect(canTransition('Bound', 'Lost' as VolumePhase)).toBe(false);
    expect(canTransition('__proto__' as VolumePhase, 'Bound')).toBe(false);
  });

  it('the transition table only names phases and includes each phase itself', () => {
    for (const [from, tos] of Object.entries(PHASE_TRANSITIONS)) {
      expect(VOLUME_PHASES).toContain(from);
      expect(tos).toContain(from);
      for (const to of tos) expect(VOLUME_PHASES).toContain(to);
    }
  });

  it('classifies plug and unplug phases', () => {
    expect(isUnplugPhase('UnMountedFromPod')).toBe(true);
    expect(isUnplugPhase('Detaching')).toBe(true);
    expect(isUnplugPhase('Ready')).toBe(false);
    expect(isUnplugPhase(undefined)).toBe(false);
    expect(isPlugPhase('AttachedToNode')).toBe(true);
    expect(isPlugPhase('Detaching')).toBe(false);
  });
});

describe('reasons and messages', () => {
  it('use KubeVirt’s wording', () => {
    expect(PhaseMessage.attachmentPodCreated('hp-volume-x7k2p', 'data')).toBe(
      'Created hotplug attachment pod hp-volume-x7k2p, for volume data',
    );
    expect(PhaseMessage.mountedToPod('data')).toBe(
      'Volume data has been mounted in virt-launcher pod',
    );
    expect(PhaseMessage.ready('data')).toBe('Successfully attach hotplugged volume data to VM');
    expect(PhaseMessage.unmountedFromPod('data')).toBe(
      'Volume data has been unmounted from virt-launcher pod',
    );
    expect(PhaseMessage.attachmentPodDeleted('hp-volume-x7k2p', 'data')).toBe(
      'Deleted hotplug attachment pod hp-volume-x7k2p, for volume data',
    );
    expect(PhaseMessage.pvcNotFound('pvc-1')).toBe('PVC pvc-1 not found');
    expect(PhaseMessage.pvcInPhase('ClaimPending')).toBe('PVC is in phase ClaimPending');
  });

  it('a missing PVC is FailedPvcNotFound, an unbound one PVCNotReady', () => {
    expect(pendingReasonFor('pvc-1', undefined)).toEqual({
      reason: 'FailedPvcNotFound',
      message: 'PVC pvc-1 not found',
    });
    expect(pendingReasonFor('pvc-1', 'Lost')).toEqual({
      reason: 'PVCNotReady',
      message: 'PVC is in phase Lost',
    });
  });

  it('maps every event type, and each template renders to the builder’s message', () => {
    expect(Object.keys(PHASE_OF_EVENT).sort()).toEqual([...EVENT_TYPES].sort());
    const vars = { volume: 'data', pod: 'hp-volume-x7k2p', pvcPhase: 'Bound' };
    const rendered = (type: string) =>
      renderMessage(phaseOfEvent(type)?.messageTemplate ?? '', vars);
    expect(rendered('attached-to-node')).toBe(
      PhaseMessage.attachmentPodCreated('hp-volume-x7k2p', 'data'),
    );
    expect(rendered('mounted-to-pod')).toBe(PhaseMessage.mountedToPod('data'));
    expect(rendered('ready')).toBe(PhaseMessage.ready('data'));
    expect(rendered('unmounted-from-pod')).toBe(PhaseMessage.unmountedFromPod('data'));
    expect(rendered('detaching')).toBe(
      PhaseMessage.attachmentPodDeleted('hp-volume-x7k2p', 'data'),
    );
    expect(rendered('bound')).toBe('PVC is in phase Bound');
  });

  it.each([
    ['pending', 'Pending', Reason.PVCNotReady],
    ['bound', 'Bound', Reason.PVCNotReady],
    ['attached-to-node', 'AttachedToNode', Reason.SuccessfulCreate],
    ['mounted-to-pod', 'MountedToPod', Reason.VolumeMountedToPod],
    ['ready', 'Ready', Reason.VolumeReady],
    ['unmounted-from-pod', 'UnMountedFromPod', Reason.VolumeUnMountedFromPod],
    ['detaching', 'Detaching', Reason.SuccessfulDelete],
  ])('%s → phase %s, reason %s', (type, phase, reason) => {
    expect(phaseOfEvent(type)).toMatchObject({ phase, reason, kubeEventType: 'Normal' });
  });

  it('failed keeps the phase and is a Warning HotplugFailed; removed drops the entry', () => {
    expect(phaseOfEvent('failed')).toMatchObject({
      phase: undefined,
      reason: 'HotplugFailed',
      kubeEventType: 'Warning',
    });
    expect(phaseOfEvent('removed')).toMatchObject({
      reason: 'VolumeUnplugged',
      removesEntry: true,
    });
    expect(phaseOfEvent('toString')).toBeUndefined();
    expect(phaseOfEvent('nope')).toBeUndefined();
  });

  it('renderMessage leaves unknown placeholders and ignores prototype keys', () => {
    expect(renderMessage('{volume} on {node} {constructor}', { volume: 'v' })).toBe(
      'v on {node} {constructor}',
    );
  });
});
