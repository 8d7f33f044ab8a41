import { describe, expect, it } from 'vitest';
import type { AttachmentVolume, Pod, PlanAction } from '../src/index.js';
import { planAttachment } from '../src/index.js';
import {
  attachmentPod,
  fsVolume,
  launcher,
  vmi,
  withHotplugPVC,
  withVolumeStatus,
} from './fixtures.js';

const kinds = (actions: PlanAction[]) => actions.map((a) => a.type);

describe('planAttachment', () => {
  it('creates one pod for the whole ready set', () => {
    const v = vmi(withHotplugPVC('a'), withHotplugPVC('b'));
    const actions = planAttachment({
      vmi: v,
      launcherPod: launcher(),
      desiredReady: [fsVolume('b'), fsVolume('a')],
      pods: [],
      volumeStatus: [],
    });
    expect(actions).toEqual([
      expect.objectContaining({ type: 'createPod', volumes: [fsVolume('a'), fsVolume('b')] }),
    ]);
  });

  it('waits while a pod of ours is Pending (coalescing)', () => {
    const v = vmi(withHotplugPVC('a'), withHotplugPVC('b'));
    const pending = attachmentPod(v, [fsVolume('a')], 'Pending');
    expect(
      kinds(
        planAttachment({
          vmi: v,
          launcherPod: launcher(),
          desiredReady: [fsVolume('a'), fsVolume('b')],
          pods: [pending],
          volumeStatus: [],
        }),
      ),
    ).toEqual(['wait']);
  });

  it('reports attached-to-node once the pod runs, and not again', () => {
    const v = vmi(withHotplugPVC('a'));
    const pod = attachmentPod(v, [fsVolume('a')], 'Running');
    const first = planAttachment({
      vmi: v,
      launcherPod: launcher(),
      desiredReady: [fsVolume('a')],
      pods: [pod],
      volumeStatus: [],
    });
    expect(first).toEqual([
      {
        type: 'attachedToNode',
        volume: 'a',
        pod: { name: pod.metadata.name, uid: pod.metadata.uid },
        node: 'node-with-a-long-name-a',
      },
    ]);
    const status = [
      {
        name: 'a',
        target: '',
        phase: 'AttachedToNode',
        hotplugVolume: { attachPodName: pod.metadata.name!, attachPodUID: pod.metadata.uid! },
      },
    ];
    expect(
      planAttachment({
        vmi: v,
        launcherPod: launcher(),
        desiredReady: [fsVolume('a')],
        pods: [pod],
        volumeStatus: status,
      }),
    ).toEqual([]);
  });

  it('reports attached-to-node again when a re-add reset the entry but its pod stayed (#16159)', () => {
    const v = vmi(withHotplugPVC('a'));
    const pod = attachmentPod(v, [fsVolume('a')], 'Running');
    const hotplugVolume = { attachPodName: pod.metadata.name!, attachPodUID: pod.metadata.uid! };
    for (const phase of [undefined, 'Bound']) {
      const actions = planAttachment({
        vmi: v,
        launcherPod: launcher(),
        desiredReady: [fsVolume('a')],
        pods: [pod],
        // spec-watcher's reset keeps the pod of the entry; the new operation's facts follow.
        volumeStatus: [{ name: 'a', target: '', hotplugVolume, ...(phase ? { phase } : {}) }],
      });
      expect(kinds(actions)).toEqual(['attachedToNode']);
    }
  });

  it('attaches through an older running pod while the pod for the whole set starts', () => {
    const v = vmi(withHotplugPVC('a'), withHotplugPVC('b'), withHotplugPVC('c'));
    const first = attachmentPod(v, [fsVolume('a'), fsVolume('b')], 'Running');
    const whole = attachmentPod(v, [fsVolume('a'), fsVolume('b'), fsVolume('c')], 'Pending');
    const plan = (volumeStatus: Parameters<typeof planAttachment>[0]['volumeStatus']) =>
      planAttachment({
        vmi: v,
        launcherPod: launcher(),
        desiredReady: [fsVolume('a'), fsVolume('b'), fsVolume('c')],
        pods: [first, whole],
        volumeStatus,
      });
    const attached = (actions: PlanAction[]) =>
      actions.flatMap((a) => (a.type === 'attachedToNode' ? [[a.volume, a.pod.name]] : []));
    expect(attached(plan([]))).toEqual([
      ['a', first.metadata.name],
      ['b', first.metadata.name],
    ]);
    // Once the whole set's pod runs, every volume moves to it; the first pod then goes.
    whole.status = { phase: 'Running', containerStatuses: [{ name: 'hotplug-disk', ready: true }] };
    const viaFirst = { attachPodName: first.metadata.name!, attachPodUID: first.metadata.uid! };
    const moved = plan([
      { name: 'a', target: 'sda', phase: 'Ready', hotplugVolume: viaFirst },
      { name: 'b', target: 'sdb', phase: 'Ready', hotplugVolume: viaFirst },
    ]);
    expect(attached(moved)).toEqual([
      ['a', whole.metadata.name],
      ['b', whole.metadata.name],
      ['c', whole.metadata.name],
    ]);
    expect(moved).toContainEqual(
      expect.objectContaining({ type: 'deletePod', reason: 'replaced' }),
    );
  });

  it('keeps the old pod until the new one runs (#10275)', () => {
    const v = vmi(withHotplugPVC('a'), withHotplugPVC('b'));
    const old = attachmentPod(v, [fsVolume('a')], 'Running');
    const next = attachmentPod(v, [fsVolume('a'), fsVolume('b')], 'Pending');
    const viaOld = { attachPodName: old.metadata.name!, attachPodUID: old.metadata.uid! };
    const actions = planAttachment({
      vmi: v,
      launcherPod: launcher(),
      desiredReady: [fsVolume('a'), fsVolume('b')],
      pods: [old, next],
      volumeStatus: [{ name: 'a', target: 'sda', phase: 'Ready', hotplugVolume: viaOld }],
    });
    expect(kinds(actions)).toEqual(['wait']);
    next.status = { phase: 'Running', containerStatuses: [{ name: 'hotplug-disk', ready: true }] };
    const after = planAttachment({
      vmi: v,
      launcherPod: launcher(),
      desiredReady: [fsVolume('a'), fsVolume('b')],
      pods: [old, next],
      volumeStatus: [],
    });
    expect(after).toContainEqual({
      type: 'deletePod',
      name: old.metadata.name,
      uid: old.metadata.uid,
      reason: 'replaced',
    });
  });

  it.each(['MountedToPod', 'Ready'])(
    'never deletes a pod while a volume only it carries is %s (#14998)',
    (phase) => {
      const v = vmi(withHotplugPVC('a'));
      const old = attachmentPod(v, [fsVolume('a'), fsVolume('gone')], 'Running');
      const next = attachmentPod(v, [fsVolume('a')], 'Running');
      const status = [{ name: 'gone', target: '', phase, hotplugVolume: {} }];
      const actions = planAttachment({
        vmi: v,
        launcherPod: launcher(),
        desiredReady: [fsVolume('a')],
        pods: [old, next],
        volumeStatus: status,
      });
      expect(actions.filter((a) => a.type === 'deletePod')).toEqual([]);
      const unmounted = [
        { name: 'gone', target: '', phase: 'UnMountedFromPod', hotplugVolume: {} },
      ];
      const later = planAttachment({
        vmi: v,
        launcherPod: launcher(),
        desiredReady: [fsVolume('a')],
        pods: [old, next],
        volumeStatus: unmounted,
      });
      expect(kinds(later)).toEqual(expect.arrayContaining(['deletePod', 'detaching']));
    },
  );

  it('releases a removed volume once no pod carries it', () => {
    const v = vmi(
      withVolumeStatus({ name: 'gone', target: '', phase: 'Detaching', hotplugVolume: {} }),
    );
    expect(
      planAttachment({
        vmi: v,
        launcherPod: launcher(),
        desiredReady: [],
        pods: [],
        volumeStatus: v.status!.volumeStatus!,
      }),
    ).toEqual([{ type: 'released', volume: 'gone' }]);
  });

  it.each([
    ['launcher gone', undefined],
    [
      'launcher terminating',
      {
        ...launcher(),
        metadata: { ...launcher().metadata, deletionTimestamp: '2026-01-01T00:00:00Z' },
      },
    ],
  ])('deletes every pod when the %s', (_what, launcherPod) => {
    const v = vmi(withHotplugPVC('a'));
    const pods = [attachmentPod(v, [fsVolume('a')], 'Running')];
    expect(
      planAttachment({
        vmi: v,
        launcherPod: launcherPod,
        desiredReady: [fsVolume('a')],
        pods,
        volumeStatus: [],
      }),
    ).toEqual([
      {
        type: 'deletePod',
        name: pods[0]!.metadata.name,
        uid: pods[0]!.metadata.uid,
        reason: 'launcherGone',
      },
    ]);
  });
});

describe('coalescing: 20 volumes added within 100 ms', () => {
  it.each([500, 2000])('produce at most 3 attachment pods (pod start latency %i ms)', (latency) => {
    const names = Array.from({ length: 20 }, (_, i) => `vol-${String(i).padStart(2, '0')}`);
    const arrivals = names.map((name, i) => ({ name, at: Math.floor((i * 100) / 19) }));
    const v = vmi();
    const pods: Array<{ pod: Pod; runningAt: number }> = [];
    let created = 0;
    // Discrete-event simulation: reconcile at every arrival and every pod start, as informer events would.
    const times = new Set<number>(arrivals.map((a) => a.at));
    for (let t = 0; t <= 20 * latency; t += 1) {
      if (!times.has(t)) continue;
      const ready: AttachmentVolume[] = arrivals
        .filter((a) => a.at <= t)
        .map((a) => fsVolume(a.name));
      for (const p of pods) {
        if (t >= p.runningAt)
          p.pod.status = {
            phase: 'Running',
            containerStatuses: [{ name: 'hotplug-disk', ready: true }],
          };
      }
      for (const action of planAttachment({
        vmi: v,
        launcherPod: launcher(),
        desiredReady: ready,
        pods: pods.map((p) => p.pod),
        volumeStatus: [],
      })) {
        if (action.type === 'createPod') {
          created += 1;
          pods.push({ pod: attachmentPod(v, action.volumes, 'Pending'), runningAt: t + latency });
          times.add(t + latency);
        }
        if (action.type === 'deletePod')
          pods.splice(
            pods.findIndex((p) => p.pod.metadata.name === action.name),
            1,
          );
      }
    }
    expect(created).toBeLessThanOrEqual(3);
    expect(pods).toHaveLength(1);
    expect(pods[0]!.pod.spec!.volumes!.length).toBe(21);
  });
});
