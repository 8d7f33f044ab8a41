import {
  EventType,
  newOperationId,
  RESYNC_CAUSE,
  type VirtualMachineInstance,
  type VolumeStatus,
  type WorkItem,
} from '@plugline/contracts';
import { createActor, fromPromise } from 'xstate';
import { describe, expect, it } from 'vitest';
import {
  createOrchestratorMachine,
  decide,
  initialState,
  defaults,
  orchestratorDisposition,
  parseConfig,
  statusChangeNudges,
  recordWork,
  Rest,
  type Decision,
  type Effect,
  type Observation,
  type Pod,
  type UnitState,
  type VmiRef,
  volumesOfPod,
} from '../src/index.js';
import {
  attachmentPod,
  fsVolume,
  NS,
  observed,
  vmi,
  withHotplugPVC,
  withVolumeStatus,
} from './fixtures.js';

const OPTIONS = { coalesceMs: 50, fallbackMs: 5000, waitForFirstConsumerClasses: [] };
const T0 = 1_000_000;

function item(volume: string, fields: Partial<WorkItem> = {}): WorkItem {
  const v = vmi();
  return {
    v: 1,
    stage: 'attachment-orchestrator',
    namespace: NS,
    vmi: v.metadata.name!,
    vmiUID: v.metadata.uid!,
    volume,
    operationId: `op-${volume}`,
    operation: 'plug',
    cause: EventType.Requested,
    issuedAt: new Date(T0).toISOString(),
    ...fields,
  };
}

function state(...items: WorkItem[]): UnitState {
  const v = vmi();
  return items.reduce(
    recordWork,
    initialState({ namespace: NS, name: v.metadata.name!, uid: v.metadata.uid! }),
  );
}

const factTypes = (d: Decision) =>
  d.emit.flatMap((e) => (e.type === 'plugline.fact' ? [`${e.fact.volume}:${e.fact.type}`] : []));
const effectKinds = (d: Decision) => d.effects.map((e) => `${e.kind}`);

/**
 * Volume `a` plugged (`00mx0000a1-plug`), then unplugged (`00mx0000b2-unplug`, node-mounter's
 * work): released here, its pod gone, while the status still shows its entry going.
 */
function releasedWhileDetaching(): { unplug: WorkItem; released: Decision } {
  const plugged = state(item('a', { operationId: '00mx0000a1-plug' }));
  const unplug = item('a', {
    operation: 'unplug',
    operationId: '00mx0000b2-unplug',
    cause: EventType.UnmountedFromPod,
    issuedAt: new Date(T0 + 1).toISOString(),
  });
  const detaching = vmi(
    withVolumeStatus({ name: 'a', target: '', phase: 'Detaching', hotplugVolume: {} }),
  );
  const released = decide(recordWork(plugged, unplug), observed(detaching, ['a']), T0 + 1, OPTIONS);
  return { unplug, released };
}

describe('decide', () => {
  it('gathers changes for coalesceMs, then creates one pod for all of them', () => {
    const obs = observed(vmi(withHotplugPVC('a'), withHotplugPVC('b')), ['a', 'b']);
    const first = decide(state(item('a'), item('b')), obs, T0, OPTIONS);
    expect(first).toMatchObject({ rest: Rest.Coalescing, wakeAt: T0 + 50, effects: [] });
    expect(factTypes(first)).toEqual(['a:bound', 'b:bound']);
    const second = decide(first.state, obs, T0 + 50, OPTIONS);
    expect(effectKinds(second)).toEqual(['createPod']);
    const pod = (second.effects[0] as Extract<Effect, { kind: 'createPod' }>).pod;
    expect(pod.spec?.volumes?.map((x) => x.name)).toEqual(['hotplug-disks', 'a', 'b']);
    expect(second.rest).toBe(Rest.AwaitingPods);
    expect(factTypes(second)).toEqual([]); // no repeats
  });

  it('creates the pod on the first change when none of ours is starting (no fixed window)', () => {
    const obs = observed(vmi(withHotplugPVC('a')), ['a']);
    const adaptive = { fallbackMs: 5000, waitForFirstConsumerClasses: [] };
    for (const options of [adaptive, { ...adaptive, coalesceMs: defaults().coalesceMs }]) {
      const d = decide(state(item('a')), obs, T0, options);
      expect(effectKinds(d)).toEqual(['createPod']);
      expect(d.rest).toBe(Rest.AwaitingPods);
      expect(d.state.changeSince).toBeUndefined();
    }
  });

  it('gathers the volumes requested while our pod starts into one next pod', () => {
    const one = vmi(withHotplugPVC('a'));
    const many = vmi(withHotplugPVC('a'), withHotplugPVC('b'), withHotplugPVC('c'));
    const seen = (v: VirtualMachineInstance, pods: Pod[] = []) =>
      observed(v, ['a', 'b', 'c'], { pods });
    const adaptive = { ...OPTIONS, coalesceMs: 0 };
    const first = decide(state(item('a')), seen(one), T0, adaptive);
    const created = (first.effects[0] as Extract<Effect, { kind: 'createPod' }>).pod;
    // b and c arrive before the informer shows the new pod, then while it is Pending: no pod.
    let s = recordWork(recordWork(first.state, item('b')), item('c'));
    const unseen = decide(s, seen(many), T0 + 1, adaptive);
    expect(unseen.effects).toEqual([]);
    const starting = attachmentPod(one, [fsVolume('a')], 'Pending', 'uid-a');
    const pending = decide(unseen.state, seen(many, [starting]), T0 + 2, adaptive);
    expect(pending).toMatchObject({ effects: [], rest: Rest.AwaitingPods });
    expect(starting.metadata.name).toBe(created.metadata.name);
    // It runs: one pod for all three, the first stays until then.
    s = pending.state;
    const runningA = attachmentPod(one, [fsVolume('a')], 'Running', 'uid-a');
    const next = decide(s, seen(many, [runningA]), T0 + 3, adaptive);
    expect(effectKinds(next)).toEqual(['createPod']);
    const pod = (next.effects[0] as Extract<Effect, { kind: 'createPod' }>).pod;
    expect(pod.spec?.volumes?.map((x) => x.name)).toEqual(['hotplug-disks', 'a', 'b', 'c']);
  });

  it('plans the next pod at once when the one it created left the cache before it saw it', () => {
    const one = vmi(withHotplugPVC('a'));
    const two = vmi(withHotplugPVC('a'), withHotplugPVC('b'));
    const adaptive = { ...OPTIONS, coalesceMs: 0 };
    const first = decide(state(item('a')), observed(one, ['a', 'b']), T0, adaptive);
    const created = (first.effects[0] as Extract<Effect, { kind: 'createPod' }>).pod.metadata.name;
    expect(created).toMatch(/^hp-volume-/);
    const s = recordWork(first.state, item('b'));
    const seen = (podsGone: Record<string, number>) => observed(two, ['a', 'b'], { podsGone });
    // Not in the cache yet: no other pod meanwhile.
    expect(decide(s, seen({}), T0 + 1, adaptive).effects).toEqual([]);
    // Created and deleted before a handling saw it (the deleting handling's snapshot write was
    // lost, so this one reads the state from before it): the next pod is planned at once.
    expect(effectKinds(decide(s, seen({ [created!]: T0 + 1 }), T0 + 2, adaptive))).toEqual([
      'createPod',
    ]);
    // A pod of that name gone before this one was created says nothing about it.
    expect(decide(s, seen({ [created!]: T0 - 1 }), T0 + 2, adaptive).effects).toEqual([]);
  });

  it('publishes attached-to-node and the node-mount work once the pod runs', () => {
    const v = vmi(withHotplugPVC('a'));
    const pod = attachmentPod(v, [fsVolume('a')], 'Running');
    const obs = observed(v, ['a'], { pods: [pod] });
    const d = decide(state(item('a')), obs, T0, OPTIONS);
    expect(d.rest).toBe(Rest.Steady);
    // `bound` first: the pod was made before the request arrived (and ran before it was handled).
    expect(factTypes(d)).toEqual(['a:bound', 'a:attached-to-node']);
    expect(d.emit.map((e) => e.type)).toEqual(['plugline.fact', 'plugline.fact', 'plugline.work']);
    expect(d.emit[2]).toMatchObject({
      work: { stage: 'node-mounter', node: pod.spec!.nodeName, operationId: 'op-a' },
    });
    expect(decide(d.state, obs, T0 + 1, OPTIONS).emit).toEqual([]);
  });

  it('reports attached-to-node and the node-mount work again when a resync finds no status entry', () => {
    // Attached and announced; then the status entry is lost (no entry at all): a nudge stays
    // silent (the fact was published), a spec-watcher resync of the plug gets it reported again.
    const v = vmi(withHotplugPVC('a'));
    const pod = attachmentPod(v, [fsVolume('a')], 'Running');
    const obs = observed(v, ['a'], { pods: [pod] });
    const announced = decide(state(item('a')), obs, T0, OPTIONS).state;
    const nudge = item('a', { cause: 'informer-pod', operationId: 'nudge' });
    expect(decide(recordWork(announced, nudge), obs, T0 + 1, OPTIONS).emit).toEqual([]);
    const resync = item('a', { cause: RESYNC_CAUSE });
    const again = decide(recordWork(announced, resync), obs, T0 + 2, OPTIONS, 'a');
    expect(factTypes(again)).toEqual(['a:attached-to-node']);
    expect(again.emit.at(-1)).toMatchObject({
      type: 'plugline.work',
      work: { stage: 'node-mounter', operationId: 'op-a', volume: 'a' },
    });
    // Once the status shows it attached through that pod, a resync has nothing to say.
    const shown = vmi(
      withHotplugPVC('a'),
      withVolumeStatus({
        name: 'a',
        target: '',
        phase: 'AttachedToNode',
        hotplugVolume: { attachPodName: pod.metadata.name!, attachPodUID: pod.metadata.uid! },
      }),
    );
    const steady = observed(shown, ['a'], { pods: [pod] });
    expect(decide(again.state, steady, T0 + 3, OPTIONS, 'a').emit).toEqual([]);
  });

  it('reports detaching and released again when a resync round finds the entry of a volume it released', () => {
    const { unplug, released } = releasedWhileDetaching();
    expect(factTypes(released)).toEqual(['a:detaching', 'a:released']);
    // The entry is written back (a restore): node-mounter's work in a resync round reaches here.
    const restored = vmi(
      withVolumeStatus({
        name: 'a',
        target: '',
        phase: 'UnMountedFromPod',
        hotplugVolume: { attachPodName: 'hp-gone', attachPodUID: 'uid-gone' },
      }),
    );
    const obs = observed(restored, ['a']);
    const inRound = { ...unplug, resync: new Date(T0 + 2).toISOString() };
    // A plain repeat says nothing again; the round names the volume, and both facts go out.
    expect(decide(recordWork(released.state, unplug), obs, T0 + 2, OPTIONS).emit).toEqual([]);
    const again = decide(recordWork(released.state, inRound), obs, T0 + 2, OPTIONS, 'a');
    expect(factTypes(again)).toEqual(['a:detaching', 'a:released']);
    expect(again.emit[1]).toMatchObject({ fact: { data: { operationId: '00mx0000b2-unplug' } } });
  });

  it('names the new pod for a volume in use whose pod was replaced: phase kept, no node-mounter work', () => {
    const v = vmi(
      withHotplugPVC('a'),
      withHotplugPVC('b'),
      withVolumeStatus({
        name: 'a',
        target: 'sda',
        phase: 'Ready',
        hotplugVolume: { attachPodName: 'hp-old', attachPodUID: 'uid-a' },
      }),
    );
    const onlyA = attachmentPod(v, [fsVolume('a')], 'Running', 'uid-a');
    const both = attachmentPod(v, [fsVolume('a'), fsVolume('b')], 'Running', 'uid-ab');
    const d = decide(
      state(item('a'), item('b')),
      observed(v, ['a', 'b'], { pods: [onlyA, both] }),
      T0,
      OPTIONS,
    );
    const announced = d.emit.flatMap((e) =>
      e.type === 'plugline.fact' && e.fact.type === EventType.AttachedToNode ? [e.fact] : [],
    );
    expect(announced.map((f) => [f.volume, f.data.attachPod?.uid])).toEqual([
      ['a', 'uid-ab'],
      ['b', 'uid-ab'],
    ]);
    const work = d.emit.flatMap((e) => (e.type === 'plugline.work' ? [e.work.volume] : []));
    expect(work).toEqual(['b']);
  });

  it('sends a re-add down the chain although its entry still shows the old plug Ready', () => {
    // Announced under its plug; removed and put back so fast that the entry never left the
    // old plug's `Ready`: the new plug's node work goes out (node-mounter and domain-updater
    // confirm the disk and its target under it), not only its announcement.
    const v = vmi(withHotplugPVC('a'));
    const pod = attachmentPod(v, [fsVolume('a')], 'Running');
    const first = decide(
      state(item('a', { operationId: 'op-1' })),
      observed(v, ['a'], { pods: [pod] }),
      T0,
      OPTIONS,
    );
    const ready = vmi(
      withHotplugPVC('a'),
      withVolumeStatus({
        name: 'a',
        target: 'sda',
        phase: 'Ready',
        hotplugVolume: { attachPodName: pod.metadata.name!, attachPodUID: pod.metadata.uid! },
      }),
    );
    const readded = [
      item('a', { operationId: 'op-2', operation: 'unplug', cause: EventType.UnplugRequested }),
      item('a', { operationId: 'op-3' }),
    ].reduce(recordWork, first.state);
    const d = decide(readded, observed(ready, ['a'], { pods: [pod] }), T0 + 1, OPTIONS);
    // The new plug's steps from the start: bound, then attached with its node work.
    expect(factTypes(d)).toEqual(['a:bound', 'a:attached-to-node']);
    expect(d.emit.at(-1)).toMatchObject({
      type: 'plugline.work',
      work: { stage: 'node-mounter', operationId: 'op-3', volume: 'a' },
    });
    // Once sent, a nudge adds nothing.
    expect(decide(d.state, observed(ready, ['a'], { pods: [pod] }), T0 + 2, OPTIONS).emit).toEqual(
      [],
    );
  });

  it('keeps a removed volume on its pod until node-mounter unmounted it', () => {
    const v = vmi(
      withHotplugPVC('a'),
      withVolumeStatus({ name: 'b', target: 'sda', phase: 'Ready', hotplugVolume: {} }),
    );
    const both = attachmentPod(v, [fsVolume('a'), fsVolume('b')], 'Running', 'uid-ab');
    const onlyA = attachmentPod(v, [fsVolume('a')], 'Running', 'uid-a');
    const obs = observed(v, ['a'], { pods: [both, onlyA] });
    const unplug = item('b', { operation: 'unplug', operationId: 'op-unplug', cause: 'resync' });
    const held = decide(state(item('a'), unplug), obs, T0, OPTIONS);
    expect(held.effects).toEqual([]);
    expect(held.rest).toBe(Rest.AwaitingUnmount);
    // The status says UnMountedFromPod late; the work item says so first.
    const unmounted = recordWork(held.state, { ...unplug, cause: EventType.UnmountedFromPod });
    const go = decide(unmounted, obs, T0 + 1, OPTIONS);
    expect(go.effects).toEqual([
      {
        kind: 'deletePod',
        namespace: NS,
        name: both.metadata.name,
        uid: 'uid-ab',
        reason: 'replaced',
      },
    ]);
    expect(factTypes(go)).toEqual(['b:detaching']);
  });

  it("lets a removed volume's pod go when an older operation's unmount report arrives after the unplug's own", () => {
    // The kill soak: removed before its mount, node-mounter reported the unmount under the plug's
    // id too, and a redelivery brought that report after the unplug's.
    const v = vmi(withHotplugPVC('a'));
    const both = attachmentPod(v, [fsVolume('a'), fsVolume('b')], 'Running', 'uid-ab');
    const onlyA = attachmentPod(v, [fsVolume('a')], 'Running', 'uid-a');
    const obs = observed(v, ['a'], { pods: [both, onlyA] });
    const plug = item('b', { operationId: '00mx0000a1-plug' });
    // The plug had announced the volume on its pod: an announcement holds a removed volume.
    const withB = vmi(withHotplugPVC('a'), withHotplugPVC('b'));
    const plugged = decide(
      state(item('a'), plug),
      observed(withB, ['a', 'b'], { pods: [both, onlyA] }),
      T0,
      OPTIONS,
    ).state;
    expect(plugged.published.b?.[EventType.AttachedToNode]).toContain('uid-ab');
    const unmountedAs = (operationId: string, at: number) =>
      item('b', {
        operation: 'unplug',
        operationId,
        cause: EventType.UnmountedFromPod,
        issuedAt: new Date(at).toISOString(),
      });
    const unplug = unmountedAs('00mx0000b2-unplug', T0 + 2);
    const underThePlug = unmountedAs('00mx0000a1-plug', T0 + 1);
    // The plug's own item handled after the unplug's (a kill soak, 2026-12-07): its report is the
    // later one sent, and must not pass for the volume's unplug (the pod was held for good).
    const underThePlugSentLater = unmountedAs('00mx0000a1-plug', T0 + 3);
    for (const order of [
      [unplug, underThePlug],
      [underThePlug, unplug],
      [unplug, underThePlugSentLater],
    ]) {
      const s = order.reduce(recordWork, plugged);
      expect(s.ops.b?.unmounted).toBe('00mx0000b2-unplug');
      expect(s.ops.b?.unplug?.operationId).toBe('00mx0000b2-unplug');
      const go = decide(s, obs, T0 + 3, OPTIONS);
      expect(go.effects).toMatchObject([{ kind: 'deletePod', uid: 'uid-ab' }]);
    }
  });

  it('keeps the request of a volume added again before the VMI cache shows it back in the spec', () => {
    // Seen in the guest chain test: removevolume ends (pod gone, entry dropped), addvolume at once.
    const gone = vmi();
    const back = vmi(withHotplugPVC('a'));
    // Released while the status still shows its entry going: the unit keeps its operations.
    const { released } = releasedWhileDetaching();
    expect(released.state.ops.a?.unplug?.operationId).toBe('00mx0000b2-unplug');
    const again = item('a', {
      operationId: '00mx0000c3-plug',
      issuedAt: new Date(T0 + 2).toISOString(),
    });
    // The request is handled while the cache still holds the VMI without the volume.
    const early = decide(recordWork(released.state, again), observed(gone, ['a']), T0 + 2, OPTIONS);
    expect(early.emit).toEqual([]);
    // The cache catches up (an informer nudge): the re-added volume's own operation goes on.
    const caughtUp = decide(early.state, observed(back, ['a']), T0 + 3, {
      ...OPTIONS,
      coalesceMs: 0,
    });
    expect(factTypes(caughtUp)).toEqual(['a:bound']);
    expect(caughtUp.emit[0]).toMatchObject({ fact: { data: { operationId: '00mx0000c3-plug' } } });
    expect(effectKinds(caughtUp)).toEqual(['createPod']);
  });

  it('says nothing under the old plug when the spec shows a re-added volume before its request (two replicas)', () => {
    // Seen in the bench's scale-out rounds: an informer nudge on one replica planned the re-add
    // under the previous plug's id while the other replica held the request; node-mounter
    // mounted under that id and the domain-updater, past the unplug, would not attach for it.
    const [plugOp, unplugOp, replugOp] = [1, 2, 3].map((s) => newOperationId(new Date(T0 + s)));
    const back = vmi(withHotplugPVC('a'));
    const unplug = item('a', {
      operation: 'unplug',
      operationId: unplugOp!,
      cause: EventType.UnmountedFromPod,
      issuedAt: new Date(T0 + 2).toISOString(),
    });
    const released = recordWork(state(item('a', { operationId: plugOp! })), unplug);
    const early = decide(released, observed(back, ['a']), T0 + 3, { ...OPTIONS, coalesceMs: 0 });
    expect(early.emit).toEqual([]);
    const request = item('a', { operationId: replugOp!, issuedAt: new Date(T0 + 3).toISOString() });
    const own = decide(recordWork(early.state, request), observed(back, ['a']), T0 + 4, {
      ...OPTIONS,
      coalesceMs: 0,
    });
    expect(factTypes(own)).toEqual(['a:bound']);
    expect(own.emit[0]).toMatchObject({ fact: { data: { operationId: replugOp } } });
  });

  it('sends the unplug down the node stages when only its announcement holds the pod (entry dropped as never attached)', () => {
    // `b` was announced on its pod, but the unplug was decided while its entry still said Bound:
    // the status dropped the entry and the spec-watcher sent the unplug here. node-mounter, given
    // the plug's work after the volume left the spec, had unplugged it under the plug's id; the
    // newer unplug then waited for an `unmounted-from-pod` of its own that no stage would send.
    // Only the node stages can free the pod: the unplug goes to them, once.
    const plugged = vmi(withHotplugPVC('b'));
    const pod = attachmentPod(plugged, [fsVolume('b')], 'Running', 'uid-b');
    let announced = decide(
      state(item('b')),
      observed(plugged, ['b'], { pods: [pod] }),
      T0,
      OPTIONS,
    ).state;
    const obs = observed(vmi(), [], { pods: [pod] });
    const unmountedUnderPlug = item('b', {
      operation: 'unplug',
      cause: EventType.UnmountedFromPod,
    });
    const unplug = item('b', {
      operation: 'unplug',
      operationId: 'op-unplug',
      cause: EventType.UnplugRequested,
      issuedAt: new Date(T0 + 1).toISOString(),
    });
    announced = recordWork(announced, unmountedUnderPlug);
    const held = decide(recordWork(announced, unplug), obs, T0 + 1, OPTIONS);
    expect(held.effects).toEqual([]);
    expect(held).toMatchObject({ rest: Rest.AwaitingNodeStages, wakeAt: T0 + 1 + 15_000 });
    expect(held.emit).toHaveLength(1);
    expect(held.emit[0]).toMatchObject({
      type: 'plugline.work',
      work: {
        stage: 'domain-updater',
        node: pod.spec!.nodeName,
        volume: 'b',
        operation: 'unplug',
        operationId: 'op-unplug',
      },
    });
    expect(decide(held.state, obs, T0 + 2, OPTIONS).emit).toEqual([]);
    const unmounted = recordWork(held.state, { ...unplug, cause: EventType.UnmountedFromPod });
    expect(decide(unmounted, obs, T0 + 3, OPTIONS).effects).toEqual([
      { kind: 'deletePod', namespace: NS, name: pod.metadata.name, uid: 'uid-b', reason: 'unused' },
    ]);
  });

  it('asks the node stages under the plug when a removal of an announced volume never reached it, and again until they answer', () => {
    // A kill soak (2026-12-07): the removal went down the node stages (its entry said the
    // launcher used the volume), a transient re-add turned their chain into a mount, and a
    // restarted node-mounter undid the mount at start, telling no one. The entry was gone: the
    // unit, with no unplug for the volume, held both pods for good.
    const plugged = vmi(withHotplugPVC('b'));
    const pod = attachmentPod(plugged, [fsVolume('b')], 'Running', 'uid-b');
    const [plugOp] = [1].map((s) => newOperationId(new Date(T0 + s)));
    const announced = decide(
      state(item('b', { operationId: plugOp! })),
      observed(plugged, ['b'], { pods: [pod] }),
      T0,
      OPTIONS,
    ).state;
    const obs = observed(vmi(), [], { pods: [pod] });
    const nudge = item('b', { cause: 'informer-vmi', operationId: 'nudge-1' });
    const asked = decide(recordWork(announced, nudge), obs, T0 + 1, OPTIONS);
    expect(asked.effects).toEqual([]);
    expect(asked).toMatchObject({ rest: Rest.AwaitingNodeStages, wakeAt: T0 + 1 + 15_000 });
    const unplugWork = {
      type: 'plugline.work',
      work: {
        stage: 'domain-updater',
        node: pod.spec!.nodeName,
        volume: 'b',
        operation: 'unplug',
        operationId: plugOp,
        cause: EventType.UnplugRequested,
      },
    };
    // A resync round: a stage that reported this operation detached or unmounted says so again.
    expect(asked.emit).toMatchObject([
      { ...unplugWork, work: { ...unplugWork.work, resync: new Date(T0 + 1).toISOString() } },
    ]);
    // No answer: not again before the deadline, again at it.
    expect(decide(asked.state, obs, T0 + 14_000, OPTIONS).emit).toEqual([]);
    const again = decide(asked.state, obs, T0 + 1 + 15_000, OPTIONS);
    expect(again.emit).toMatchObject([unplugWork]);
    expect(again.wakeAt).toBe(T0 + 1 + 30_000);
    // The answer, under the plug's id: the pod goes, and nothing is asked any more.
    const answer = item('b', {
      operation: 'unplug',
      operationId: plugOp!,
      cause: EventType.UnmountedFromPod,
    });
    const freed = decide(recordWork(again.state, answer), obs, T0 + 15_002, OPTIONS);
    expect(freed.effects).toMatchObject([{ kind: 'deletePod', uid: 'uid-b' }]);
    expect(freed.emit.filter((e) => e.type === 'plugline.work')).toEqual([]);
  });

  it('does not hold a pod for a volume announced only on a pod long gone (its entry dropped)', () => {
    // `b` was announced on an earlier pod, then re-added and removed before it got a phase: the
    // status dropped its entry, and a later pod still carries it beside the removed `a`.
    const v = vmi(withHotplugPVC('c'));
    const gone = attachmentPod(v, [fsVolume('b')], 'Running', 'uid-gone');
    const announced = decide(
      state(item('b')),
      observed(vmi(withHotplugPVC('b')), ['b'], { pods: [gone] }),
      T0,
      OPTIONS,
    ).state;
    const stale = attachmentPod(v, [fsVolume('a'), fsVolume('b')], 'Running', 'uid-ab');
    const onlyC = attachmentPod(v, [fsVolume('c')], 'Running', 'uid-c');
    const d = decide(
      recordWork(announced, item('c')),
      observed(v, ['c'], { pods: [stale, onlyC] }),
      T0 + 1,
      OPTIONS,
    );
    expect(d.effects).toContainEqual(
      expect.objectContaining({ kind: 'deletePod', name: stale.metadata.name, uid: 'uid-ab' }),
    );
    // Announced on a pod that still exists, the same volume is held until it is unmounted.
    const held = decide(
      recordWork(announced, item('c')),
      observed(v, ['c'], { pods: [stale, onlyC, gone] }),
      T0 + 1,
      OPTIONS,
    );
    expect(held.effects.filter((e) => e.kind === 'deletePod')).toHaveLength(0);
  });

  it('is nudged by every status change that can give it more to do (the others only take actions away)', () => {
    // Every status entry a volume may show (none, each phase, with and without its pod named),
    // for the volume in the spec (`a`) and one that left it (`b`), on a running pod carrying both
    // (or `b` on none), before and after the unit announced them: a change statusChangeNudges
    // lets pass without a nudge must not add an effect or a fact the old status would not have had.
    const phases = ['', 'Pending', 'Bound', 'AttachedToNode', 'MountedToPod', 'Ready'];
    const allPhases = [...phases, 'UnMountedFromPod', 'Detaching'];
    const pods = [undefined, {}, { attachPodName: 'hp-volume-ab', attachPodUID: 'uid-ab' }];
    const entries = (name: string): (VolumeStatus | undefined)[] => [
      undefined,
      ...allPhases.flatMap((phase) =>
        pods.map((hotplugVolume): VolumeStatus => ({
          name,
          target: '',
          phase,
          ...(hotplugVolume === undefined ? {} : { hotplugVolume }),
        })),
      ),
    ];
    const spec = vmi(withHotplugPVC('a'));
    const both = attachmentPod(spec, [fsVolume('a'), fsVolume('b')], 'Running', 'uid-ab');
    const onlyA = attachmentPod(spec, [fsVolume('a')], 'Running', 'uid-a');
    const unplug = item('b', { operation: 'unplug', operationId: 'op-b', cause: 'resync' });
    const fresh = state(item('a'), unplug);
    const announced = decide(
      fresh,
      observed(vmi(withHotplugPVC('a'), withHotplugPVC('b')), ['a', 'b'], { pods: [both] }),
      T0,
      OPTIONS,
    ).state;
    const actions = (
      prior: UnitState,
      pod: Pod,
      statuses: (VolumeStatus | undefined)[],
    ): string[] => {
      const v = vmi(
        withHotplugPVC('a'),
        ...statuses.flatMap((e) => (e === undefined ? [] : [withVolumeStatus(e)])),
      );
      const d = decide(prior, observed(v, ['a'], { pods: [pod] }), T0 + 1, OPTIONS);
      // What is done, not how a message words it: effects whole, facts and work by kind.
      return [
        ...d.effects.map((e) => JSON.stringify(e)),
        ...d.emit.map((e) =>
          e.type === 'plugline.fact'
            ? `fact ${e.fact.volume} ${e.fact.type}`
            : `work ${e.work.stage} ${e.work.volume} ${e.work.operation} ${e.work.operationId}`,
        ),
      ];
    };
    const cases = [fresh, announced].flatMap((prior) =>
      (['a', 'b'] as const).flatMap((volume) =>
        [undefined, { name: volume === 'a' ? 'b' : 'a', target: 'sdb', phase: 'Ready' }].flatMap(
          (other) => [both, onlyA].map((pod) => ({ prior, volume, other, pod })),
        ),
      ),
    );
    let quiet = 0;
    let nudged = 0;
    const wrong: string[] = [];
    for (const { prior, volume, other, pod } of cases) {
      const where = { inSpec: volume === 'a', onPod: volumesOfPod(pod).includes(volume) };
      for (const before of entries(volume)) {
        const had = new Set(actions(prior, pod, [before, other]));
        for (const after of entries(volume)) {
          if (statusChangeNudges(before, after, where)) {
            nudged++;
            continue;
          }
          quiet++;
          const gained = actions(prior, pod, [after, other]).filter((x) => !had.has(x));
          if (gained.length > 0)
            wrong.push(JSON.stringify({ volume, before, after, other, gained }));
        }
      }
    }
    expect(wrong.slice(0, 5)).toEqual([]);
    // Both kinds occur: the plug's forward steps pass quietly, the unplug's and resets nudge.
    expect(quiet).toBeGreaterThan(100);
    expect(nudged).toBeGreaterThan(100);
    expect(
      statusChangeNudges(
        { name: 'a', target: '', phase: 'Bound' },
        { name: 'a', target: '', phase: 'Ready' },
        { inSpec: true, onPod: true },
      ),
    ).toBe(false);
    expect(
      statusChangeNudges(
        { name: 'b', target: 'sda', phase: 'Ready' },
        { name: 'b', target: '', phase: 'UnMountedFromPod' },
        { inSpec: false, onPod: true },
      ),
    ).toBe(true);
  });

  it('reports a missing claim once, as KubeVirt words it', () => {
    const v = vmi(withHotplugPVC('a'));
    const obs = observed(v, []);
    const d = decide(state(item('a')), obs, T0, OPTIONS);
    expect(d.rest).toBe(Rest.AwaitingVolumes);
    expect(d.emit[0]).toMatchObject({
      fact: {
        type: 'pending',
        data: { reason: 'FailedPvcNotFound', message: 'PVC claim-a not found', phase: 'Pending' },
      },
    });
    expect(decide(d.state, obs, T0 + 10, OPTIONS).emit).toEqual([]);
  });

  it('deletes every attachment pod when the launcher is gone', () => {
    const v = vmi(withHotplugPVC('a'));
    const pod = attachmentPod(v, [fsVolume('a')], 'Running');
    const obs = observed(v, ['a'], { launcher: undefined, pods: [pod] });
    expect(decide(state(item('a')), obs, T0, OPTIONS).effects).toMatchObject([
      { kind: 'deletePod', reason: 'launcherGone' },
    ]);
  });
});

describe('orchestrator machine', () => {
  const run = async (obs: Observation, work: WorkItem, applied: Effect[][] = []) => {
    const machine = createOrchestratorMachine(OPTIONS).provide({
      actors: {
        observe: fromPromise<Observation, { vmi: VmiRef }>(() => Promise.resolve(obs)),
        applyEffects: fromPromise<void, { effects: Effect[] }>(({ input }) => {
          applied.push(input.effects);
          return Promise.resolve();
        }),
      },
    });
    const actor = createActor(machine, {
      input: { vmi: { namespace: NS, name: work.vmi, uid: work.vmiUID } },
    });
    const emitted: string[] = [];
    actor.on('*', (e) => emitted.push(e.type));
    actor.start();
    actor.send({ type: 'work', item: work, attempt: 1, receivedAt: T0 + 100 });
    await new Promise<void>((resolve) => {
      const sub = actor.subscribe((s) => {
        if (
          Object.keys(s.children).length === 0 &&
          !['observing', 'applying'].includes(String(s.value))
        ) {
          sub.unsubscribe();
          resolve();
        }
      });
    });
    const snapshot = actor.getSnapshot();
    actor.stop();
    return { snapshot, emitted };
  };

  it('observes, applies the effects, then emits and rests; nudges are acked unless coalescing', async () => {
    const obs = observed(vmi(withHotplugPVC('a')), ['a']);
    const { snapshot, emitted } = await run(obs, item('a'));
    expect(snapshot.value).toBe('coalescing');
    expect(emitted).toEqual(['plugline.fact']);
    expect(orchestratorDisposition(snapshot, T0 + 100)).toEqual({ kind: 'waiting', delayMs: 50 });
    const nudge = await run(obs, item('a', { cause: 'informer-pvc', operationId: 'nudge-1' }));
    expect(orchestratorDisposition(nudge.snapshot, T0 + 100)).toEqual({
      kind: 'waiting',
      delayMs: 50,
    });

    const pvcGone = { ...obs, pvcs: {} };
    const waiting = await run(
      pvcGone,
      item('a', { cause: 'informer-pvc', operationId: 'nudge-2' }),
    );
    expect(waiting.snapshot.value).toBe('awaitingVolumes');
    expect(orchestratorDisposition(waiting.snapshot, T0 + 100)).toEqual({ kind: 'done' });
  });

  it('goes to retrying when an effect fails', async () => {
    const v = vmi(withHotplugPVC('a'));
    const machine = createOrchestratorMachine({ ...OPTIONS, coalesceMs: 0 }).provide({
      actors: {
        observe: fromPromise<Observation, { vmi: VmiRef }>(() =>
          Promise.resolve(observed(v, ['a'])),
        ),
        applyEffects: fromPromise<void, { effects: Effect[] }>(() =>
          Promise.reject(new Error('apiserver down')),
        ),
      },
    });
    const actor = createActor(machine, {
      input: { vmi: { namespace: NS, name: v.metadata.name!, uid: v.metadata.uid! } },
    });
    actor.start();
    actor.send({ type: 'work', item: item('a'), attempt: 1, receivedAt: T0 });
    await new Promise<void>((resolve) => {
      const sub = actor.subscribe((s) => {
        if (s.value === 'retrying') {
          sub.unsubscribe();
          resolve();
        }
      });
    });
    const s = actor.getSnapshot();
    expect(s.context.failure).toEqual({ reason: 'ReconcileFailed', message: 'apiserver down' });
    expect(orchestratorDisposition(s, T0)).toEqual({
      kind: 'retry',
      delayMs: 1000,
      failure: { reason: 'ReconcileFailed', message: 'apiserver down' },
    });
    actor.stop();
  });
});

describe('parseConfig', () => {
  it('reads the common variables and the orchestrator ones', () => {
    const c = parseConfig({
      NATS_URL: 'nats://127.0.0.1:4333, nats://127.0.0.1:4334',
      KUBECONFIG: '/tmp/kubeconfig',
      PLUGLINE_ATTACH_IMAGE: 'registry/hotplug:1',
      PLUGLINE_COALESCE_MS: '75',
    });
    expect(c).toMatchObject({
      natsUrls: ['nats://127.0.0.1:4333', 'nats://127.0.0.1:4334'],
      kubeconfig: '/tmp/kubeconfig',
      attachImage: 'registry/hotplug:1',
      coalesceMs: 75,
      concurrency: 32,
      ackWaitMs: 30_000,
      healthHost: '127.0.0.1',
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('waits no fixed window by default', () => {
    expect(parseConfig({ NATS_URL: 'nats://x:1', KUBECONFIG: '/k' }).coalesceMs).toBe(0);
  });

  it.each([
    [{ KUBECONFIG: '/k' }, /NATS_URL/],
    [{ NATS_URL: 'nats://x:1' }, /KUBECONFIG/],
    [
      { NATS_URL: 'nats://x:1', KUBECONFIG: '/k', PLUGLINE_COALESCE_MS: 'soon' },
      /PLUGLINE_COALESCE_MS/,
    ],
    [{ NATS_URL: 'nats://x:1', KUBECONFIG: '/k', LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
  ])('fails fast naming the variable (%o)', (env, message) => {
    expect(() => parseConfig(env)).toThrow(message);
  });
});
