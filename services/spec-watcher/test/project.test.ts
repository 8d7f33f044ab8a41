import type { VolumeStatus } from '@plugline/contracts';
import { describe, expect, it } from 'vitest';
import {
  buildStatusPatch,
  compareOperationIds,
  diffVolumes,
  newOperationId,
  projectAll,
  projectStatus,
  statusEqual,
} from '../src/index.js';
import { progressOf } from '../src/project.js';
import { event, vmi, withHotplugPVC } from './fixtures.js';

const POD = { name: 'hp-volume-0123456789', uid: 'pod-uid-1' };
const NEW_POD = { name: 'hp-volume-abcdefabcd', uid: 'pod-uid-2' };
const plugFacts = (volume: string, op: string) => [
  event('requested', volume, op),
  event('bound', volume, op),
  event('attached-to-node', volume, op, { attachPod: POD, node: 'node-a' }),
  event('mounted-to-pod', volume, op),
  event('ready', volume, op, { target: 'sda' }),
];
const unplugFacts = (volume: string, op: string) => [
  event('unplug-requested', volume, op),
  event('detached-from-domain', volume, op),
  event('unmounted-from-pod', volume, op),
  event('detaching', volume, op, { attachPod: POD }),
  event('released', volume, op),
];

/** d1 `Ready` under op-1, then unplugged under op-2 as far as `UnMountedFromPod`. */
const unmountedAfterReady = () => {
  const ready = projectAll([], plugFacts('d1', 'op-1'));
  return projectAll(ready.next, unplugFacts('d1', 'op-2').slice(0, 3), {
    operations: ready.operations,
  });
};

describe('projectStatus', () => {
  it('renders the plug chain with KubeVirt reasons, messages, target and hotplugVolume', () => {
    const seen: Array<VolumeStatus | undefined> = [];
    let status: VolumeStatus[] = [];
    let operations = {};
    const k8s: string[] = [];
    for (const e of plugFacts('d1', 'op-1')) {
      const p = projectStatus(status, e, { operations });
      status = p.next;
      operations = p.operations;
      seen.push(status[0]);
      if (p.k8sEvent) k8s.push(`${p.k8sEvent.type}/${p.k8sEvent.reason}`);
    }
    expect(seen.map((s) => [s?.phase, s?.reason, s?.target])).toEqual([
      [undefined, undefined, ''],
      ['Bound', 'PVCNotReady', ''],
      ['AttachedToNode', 'SuccessfulCreate', ''],
      ['MountedToPod', 'VolumeMountedToPod', ''],
      ['Ready', 'VolumeReady', 'sda'],
    ]);
    expect(seen[1]?.message).toBe('PVC is in phase Bound');
    expect(seen[2]?.message).toBe(`Created hotplug attachment pod ${POD.name}, for volume d1`);
    expect(seen[2]?.hotplugVolume).toEqual({ attachPodName: POD.name, attachPodUID: POD.uid });
    expect(seen[3]?.message).toBe('Volume d1 has been mounted in virt-launcher pod');
    expect(seen[4]?.message).toBe('Successfully attach hotplugged volume d1 to VM');
    // As KubeVirt: no Event for Bound (the claim's state), one for each later phase.
    expect(k8s).toEqual([
      'Normal/SuccessfulCreate',
      'Normal/VolumeMountedToPod',
      'Normal/VolumeReady',
    ]);
  });

  it('renders the unplug chain and drops the entry when released', () => {
    const plugged = projectAll([], plugFacts('d1', 'op-1'));
    const steps = projectAll(plugged.next, unplugFacts('d1', 'op-2').slice(0, 4), {
      operations: plugged.operations,
    });
    expect(steps.next[0]).toMatchObject({
      phase: 'Detaching',
      reason: 'SuccessfulDelete',
      target: '',
      message: `Deleted hotplug attachment pod ${POD.name}, for volume d1`,
    });
    expect(steps.k8sEvents.map((e) => e.reason)).toEqual([
      'VolumeUnMountedFromPod',
      'SuccessfulDelete',
    ]);
    const released = projectStatus(steps.next, unplugFacts('d1', 'op-2')[4]!, {
      operations: steps.operations,
    });
    expect(released.next).toEqual([]);
    expect(released.k8sEvent).toEqual({
      type: 'Normal',
      reason: 'VolumeUnplugged',
      message: 'Volume d1 has been unplugged',
    });
  });

  it.each([
    [
      'pending with FailedPvcNotFound',
      event('pending', 'd1', 'op-1', {
        reason: 'FailedPvcNotFound',
        message: 'PVC claim-d1 not found',
      }),
      { phase: 'Pending', reason: 'FailedPvcNotFound', message: 'PVC claim-d1 not found' },
    ],
    [
      'pending without a reason',
      event('pending', 'd1', 'op-1'),
      { phase: 'Pending', reason: 'PVCNotReady', message: 'PVC is in phase Pending' },
    ],
    [
      'bound with claim info',
      event('bound', 'd1', 'op-1', {
        details: { persistentVolumeClaimInfo: { claimName: 'claim-d1', volumeMode: 'Block' } },
      }),
      { phase: 'Bound', persistentVolumeClaimInfo: { claimName: 'claim-d1', volumeMode: 'Block' } },
    ],
    [
      'a fact without a requested first',
      event('mounted-to-pod', 'd1', 'op-1'),
      { phase: 'MountedToPod', target: '' },
    ],
  ])('%s', (_what, e, expected) => {
    expect(projectStatus([], e, { operations: {} }).next[0]).toMatchObject(expected);
  });

  it.each(['pending', 'bound'] as const)(
    'a Ready volume never falls back on %s (#10165)',
    (type) => {
      const ready = projectAll([], plugFacts('d1', 'op-1'));
      const p = projectStatus(ready.next, event(type, 'd1', 'op-1'), {
        operations: ready.operations,
      });
      expect(p.changed).toBe(false);
      expect(p.next[0]?.phase).toBe('Ready');
      expect(p.k8sEvent).toBeUndefined();
    },
  );

  it('a replacement pod updates hotplugVolume of a Ready volume, not its phase', () => {
    const ready = projectAll([], plugFacts('d1', 'op-1'));
    const p = projectStatus(
      ready.next,
      event('attached-to-node', 'd1', 'op-1', { attachPod: NEW_POD }),
      { operations: ready.operations },
    );
    expect(p.next[0]).toMatchObject({
      phase: 'Ready',
      target: 'sda',
      hotplugVolume: { attachPodName: NEW_POD.name, attachPodUID: NEW_POD.uid },
    });
  });

  it('an AttachedToNode volume whose pod vanished falls back to Bound', () => {
    const attached = projectAll([], plugFacts('d1', 'op-1').slice(0, 3));
    expect(
      projectStatus(attached.next, event('bound', 'd1', 'op-1'), {
        operations: attached.operations,
      }).next[0]?.phase,
    ).toBe('Bound');
  });

  it('ignores events of an older operation', () => {
    const unplugging = unmountedAfterReady();
    const late = projectStatus(unplugging.next, event('ready', 'd1', 'op-1', { target: 'sdz' }), {
      operations: unplugging.operations,
    });
    expect(late.stale).toBe(true);
    expect(late.changed).toBe(false);
    expect(late.next[0]?.phase).toBe('UnMountedFromPod');
  });

  it('unplug of a volume that never got a pod drops the entry at once', () => {
    const bound = projectAll([], plugFacts('d1', 'op-1').slice(0, 2));
    expect(
      projectStatus(bound.next, event('unplug-requested', 'd1', 'op-2'), {
        operations: bound.operations,
      }).next,
    ).toEqual([]);
  });

  it('a failure keeps the phase and records a Warning HotplugFailed', () => {
    const mounted = projectAll([], plugFacts('d1', 'op-1').slice(0, 4));
    const p = projectStatus(
      mounted.next,
      event('failed', 'd1', 'op-1', { message: 'disk.img: no such file' }),
      { operations: mounted.operations },
    );
    expect(p.next[0]).toMatchObject({
      phase: 'MountedToPod',
      reason: 'HotplugFailed',
      message: 'disk.img: no such file',
    });
    expect(p.k8sEvent).toEqual({
      type: 'Warning',
      reason: 'HotplugFailed',
      message: 'disk.img: no such file',
    });
  });

  it('a repeated fact is no change and no event', () => {
    const ready = projectAll([], plugFacts('d1', 'op-1'));
    const p = projectStatus(ready.next, event('ready', 'd1', 'op-1', { target: 'sda' }), {
      operations: ready.operations,
    });
    expect(p.changed).toBe(false);
    expect(p.k8sEvent).toBeUndefined();
    expect(buildStatusPatch(ready.next, p.next)).toEqual([]);
  });

  it("a plug fact under the unplug's id does not bring back a removed entry", () => {
    const plugged = projectAll([], plugFacts('d1', 'op-1'));
    const removed = projectAll(plugged.next, unplugFacts('d1', 'op-2'), {
      operations: plugged.operations,
    });
    expect(removed.next).toEqual([]);
    // The domain-updater looked while the spec still held the volume: `ready` under the unplug.
    const late = projectStatus(removed.next, event('ready', 'd1', 'op-2', { target: 'sda' }), {
      operations: removed.operations,
    });
    expect(late).toMatchObject({ next: [], changed: false, stale: false });
    // While the entry is still there it is a fact like any other (a Ready volume stays Ready).
    const early = projectAll(
      plugged.next,
      [event('unplug-requested', 'd1', 'op-2'), event('ready', 'd1', 'op-2', { target: 'sda' })],
      { operations: plugged.operations },
    );
    expect(early.next[0]).toMatchObject({ phase: 'Ready', target: 'sda' });
  });

  it('import-progress and facts of unknown volumes change nothing', () => {
    expect(
      projectStatus([], event('import-progress', 'd1', 'op-1', { progress: '45%' }), {
        operations: {},
      }).changed,
    ).toBe(false);
    expect(
      projectStatus([], event('unmounted-from-pod', 'd1', 'op-1'), { operations: {} }).changed,
    ).toBe(false);
  });
});

describe('remove then immediately re-add (#16159)', () => {
  it.each([
    ['after UnMountedFromPod', 3],
    ['after Detaching', 4],
    ['right after unplug-requested', 1],
  ])('re-added %s ends Ready on the new pod, never stuck Detaching', (_what, unplugSteps) => {
    const ready = projectAll([], plugFacts('d1', 'op-1'));
    const unplugging = projectAll(ready.next, unplugFacts('d1', 'op-2').slice(0, unplugSteps), {
      operations: ready.operations,
    });
    // the spec has the volume again: the diff asks for a plug when the entry is on its way out
    const v = vmi(withHotplugPVC('d1'), (x) => (x.status!.volumeStatus = unplugging.next));
    const wantsPlug = diffVolumes(v).plug.map((p) => p.name);
    if (unplugSteps >= 3) expect(wantsPlug).toEqual(['d1']);
    const replug = [
      event('requested', 'd1', 'op-3'),
      event('detaching', 'd1', 'op-2', { attachPod: POD }), // a late fact of the old unplug
      event('released', 'd1', 'op-2'),
      event('bound', 'd1', 'op-3'),
      event('attached-to-node', 'd1', 'op-3', { attachPod: NEW_POD }),
      event('mounted-to-pod', 'd1', 'op-3'),
      event('ready', 'd1', 'op-3', { target: 'sdb' }),
    ];
    const end = projectAll(unplugging.next, replug, { operations: unplugging.operations });
    expect(end.next).toEqual([
      expect.objectContaining({
        name: 'd1',
        phase: 'Ready',
        target: 'sdb',
        hotplugVolume: { attachPodName: NEW_POD.name, attachPodUID: NEW_POD.uid },
      }),
    ]);
    expect(
      diffVolumes(vmi(withHotplugPVC('d1'), (x) => (x.status!.volumeStatus = end.next))),
    ).toEqual({ plug: [], unplug: [] });
  });
});

describe('a fact a node stage reported under its own nudge (bench, 2 replicas, round 2)', () => {
  // The domain-updater's periodic reconcile found the mounted disk before the plug's work item
  // reached it, attached it under its nudge's id, and reported `ready` under that id. Compared as
  // text, `reconcile-…` sorted after every issued id: the plug's own item was then "older" and
  // the nudge's id went on down the chain with the unplug, and every later request on the volume
  // was stale: no status entry for the re-add, ever.
  const nudge = 'reconcile-17a0287a-1bf6-4f29-a510-529ebb83e5b9';
  const [plugOp, unplugOp, replugOp] = [1, 2, 3].map((s) =>
    newOperationId(new Date(Date.UTC(2026, 11, 5, 6, 54, s))),
  );

  it('is not taken for a newer operation, and the re-add after it shows and ends Ready', () => {
    const mounted = projectAll([], plugFacts('d0', plugOp!).slice(0, 4));
    const underNudge = projectAll(mounted.next, [event('ready', 'd0', nudge, { target: 'sda' })], {
      operations: mounted.operations,
    });
    expect(underNudge.next).toEqual([expect.objectContaining({ phase: 'MountedToPod' })]);
    // The plug's own item reaches the domain-updater: it reports under the plug.
    const ready = projectAll(underNudge.next, [event('ready', 'd0', plugOp!, { target: 'sda' })], {
      operations: underNudge.operations,
    });
    expect(ready.next).toEqual([expect.objectContaining({ phase: 'Ready' })]);
    const removed = projectAll(ready.next, unplugFacts('d0', unplugOp!), {
      operations: ready.operations,
    });
    expect(removed.next).toEqual([]);

    const readded = projectAll(removed.next, plugFacts('d0', replugOp!), {
      operations: removed.operations,
    });
    expect(readded.next).toEqual([expect.objectContaining({ name: 'd0', phase: 'Ready' })]);
  });

  it('ranks below every issued operation, whichever stage made it up', () => {
    for (const made of [nudge, 'device-added-0c1d', 'nudge-rv-42', 'reversed-x']) {
      expect(compareOperationIds(made, plugOp!)).toBeLessThan(0);
      expect(compareOperationIds(plugOp!, made)).toBeGreaterThan(0);
    }
    expect(compareOperationIds(plugOp!, replugOp!)).toBeLessThan(0);
    expect(compareOperationIds('op-1', 'op-2')).toBeLessThan(0);
  });
});

describe('an unplug the stages did under the plug operation (the watcher was down)', () => {
  const unpluggedUnderPlug = (volume: string, op: string) =>
    unplugFacts(volume, op).filter((e) => !e.type.endsWith('.unplug-requested'));

  it('still removes the entry after the unplug the watcher issued on its return', () => {
    const ready = projectAll([], plugFacts('d1', 'op-1'));
    const end = projectAll(
      ready.next,
      [
        event('unplug-requested', 'd1', 'op-2'),
        event('ready', 'd1', 'op-1', { target: 'sdz' }), // a late plug fact stays stale
        ...unpluggedUnderPlug('d1', 'op-1'),
      ],
      { operations: ready.operations },
    );
    expect(end.next).toEqual([]);
    expect(end.k8sEvents.at(-1)?.reason).toBe('VolumeUnplugged');
    expect(end.operations.d1).toEqual({ id: 'op-2', direction: 'unplug', undoes: 'op-1' });
  });

  it('but not once a newer plug re-added the volume', () => {
    const ready = projectAll([], plugFacts('d1', 'op-1'));
    const end = projectAll(
      ready.next,
      [event('unplug-requested', 'd1', 'op-2'), event('requested', 'd1', 'op-3')],
      { operations: ready.operations },
    );
    const late = projectAll(end.next, unpluggedUnderPlug('d1', 'op-1'), {
      operations: end.operations,
    });
    expect(late.next).toEqual(end.next);
    expect(late.next[0]).toMatchObject({ phase: 'Ready', target: 'sda' });
  });
});

describe('the newest operation known from the decision book (after a restart)', () => {
  const booked = { id: 'op-3', direction: 'plug', booked: true } as const;

  it('makes the late unplug facts of an older operation stale, and still renders its own request', () => {
    const pending = projectAll([], [event('requested', 'd1', 'op-3')]);
    const late = projectAll(pending.next, [event('released', 'd1', 'op-2')], {
      operations: { d1: booked },
    });
    expect(late.next).toEqual(pending.next);

    // The booked operation's request, not projected before the restart, is no repeat.
    const rendered = projectAll([], [event('requested', 'd1', 'op-3')], {
      operations: { d1: booked },
    });
    expect(rendered.next).toEqual(pending.next);
    expect(rendered.operations.d1).toEqual({ id: 'op-3', direction: 'plug' });
    // Once seen, a repeat of it changes nothing, as for an operation seen before the restart.
    const bound = projectAll(rendered.next, [event('bound', 'd1', 'op-3')], {
      operations: rendered.operations,
    });
    const repeat = projectStatus(bound.next, event('requested', 'd1', 'op-3'), {
      operations: bound.operations,
    });
    expect(repeat.changed).toBe(false);
    expect(repeat.next[0]?.phase).toBe('Bound');
  });

  it("renders its request when it comes back after its own facts, which found an older unplug's entry", () => {
    // The entry an older unplug left (op-2, undoing op-1); the re-add's request (op-3) went to a
    // projector that crashed holding it, and the next one gets op-3's later facts first.
    const unplugging = unmountedAfterReady();
    expect(unplugging.next[0]?.phase).toBe('UnMountedFromPod');
    const early = projectAll(
      unplugging.next,
      [event('mounted-to-pod', 'd1', 'op-3'), event('ready', 'd1', 'op-3', { target: 'sdb' })],
      { operations: { d1: booked } },
    );
    // They cannot move an unplug's entry, and teach nothing: the request is still no repeat.
    expect(early.next).toEqual(unplugging.next);
    expect(early.operations.d1).toEqual(booked);
    const redelivered = projectStatus(early.next, event('requested', 'd1', 'op-3'), {
      operations: early.operations,
    });
    expect(redelivered.changed).toBe(true);
    expect(redelivered.next[0]).toMatchObject({ name: 'd1', target: '' });
    expect(redelivered.next[0]?.phase).toBeUndefined();
    // The facts after it render again (a resync round states the missed ones again).
    const attached = projectAll(
      redelivered.next,
      [event('attached-to-node', 'd1', 'op-3', { attachPod: NEW_POD, node: 'node-a' })],
      { operations: redelivered.operations },
    );
    expect(attached.next[0]?.phase).toBe('AttachedToNode');
  });

  it('likewise when the projector still knew the older unplug as the newest operation', () => {
    const unplugging = unmountedAfterReady();
    const early = projectStatus(unplugging.next, event('ready', 'd1', 'op-3', { target: 'sdb' }), {
      operations: unplugging.operations,
    });
    expect(early).toMatchObject({ changed: false, unapplied: true });
    expect(early.operations).toBe(unplugging.operations);
    const request = projectStatus(early.next, event('requested', 'd1', 'op-3'), {
      operations: early.operations,
    });
    expect(request.next[0]?.phase).toBeUndefined();
    expect(request.operations.d1).toEqual({ id: 'op-3', direction: 'plug' });
  });
});

describe('progressOf (what a redelivered event must say more of to be applied late)', () => {
  it('orders the facts of a plug, then those of an unplug; requests and failures move nothing', () => {
    const progress = (events: ReturnType<typeof event>[]) => events.map(progressOf);
    const plug = progress(plugFacts('v', 'op-1').slice(1));
    const unplug = progress(unplugFacts('v', 'op-2').slice(1));
    expect(plug).toEqual([...plug].sort((a, b) => a - b));
    expect(Math.min(...unplug)).toBeGreaterThan(Math.max(...plug));
    expect(unplug).toEqual([...unplug].sort((a, b) => a - b));
    for (const idle of [
      event('requested', 'v', 'op-1'),
      event('unplug-requested', 'v', 'op-2'),
      event('failed', 'v', 'op-1', { reason: 'MountFailed', message: 'no' }),
    ]) {
      expect(progressOf(idle)).toBeLessThan(Math.min(...plug));
    }
  });
});

describe('statusEqual and buildStatusPatch', () => {
  const a: VolumeStatus[] = [
    { name: 'a', target: '', phase: 'Bound' },
    { name: 'b', target: 'sda', phase: 'Ready' },
  ];
  it('ignores entry order and undefined members', () => {
    expect(statusEqual(a, [{ ...a[1]!, reason: undefined }, a[0]!])).toBe(true);
    expect(statusEqual(a, [a[0]!])).toBe(false);
    expect(statusEqual(undefined, [])).toBe(true);
  });
  it('guards the write with a test on the previous value and the resourceVersion', () => {
    const next = [{ ...a[0]!, phase: 'AttachedToNode' }, a[1]!];
    expect(buildStatusPatch(a, next, { resourceVersion: '42' })).toEqual([
      { op: 'test', path: '/metadata/resourceVersion', value: '42' },
      { op: 'test', path: '/status/volumeStatus', value: a },
      { op: 'replace', path: '/status/volumeStatus', value: next },
    ]);
    expect(buildStatusPatch(undefined, next)).toEqual([
      { op: 'add', path: '/status/volumeStatus', value: next },
    ]);
  });
});
