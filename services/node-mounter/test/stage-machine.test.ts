import { describe, expect, it } from 'vitest';
import { createActor, waitFor } from 'xstate';

import type { StageEmitted } from '@plugline/bus';
import { EventType, PathEscapeError, Stage } from '@plugline/contracts';
import type { WorkItem } from '@plugline/contracts';

import {
  DecisionKind,
  mounterStageActors,
  mounterStageMachine,
  MountError,
  retryDelay,
  SourceNotFoundError,
  waitDelay,
} from '../src/index.js';
import type { Decision, MounterWorkEvent, PlugResult, UnplugResult } from '../src/index.js';

/** Pure: the stage machine with stub effects — states, tags, context deadlines, emitted outbox. */

const item: WorkItem = {
  v: 1,
  stage: Stage.NodeMounter,
  node: 'node-a',
  namespace: 'ns-a',
  vmi: 'vm-a',
  vmiUID: 'uid-vmi-a',
  volume: 'data',
  operationId: 'op-7',
  operation: 'plug',
  cause: EventType.AttachedToNode,
  issuedAt: new Date(0).toISOString(),
};

const plugDecision: Decision = {
  kind: DecisionKind.Plug,
  request: {
    vmiUID: 'uid-vmi-a',
    launcherUID: 'uid-launcher',
    attachPodUID: 'uid-attach',
    volume: 'data',
    pvName: 'pvc-1',
    mode: 'Block',
  },
  attachPod: { name: 'hp-volume-x', uid: 'uid-attach' },
  launcherPod: 'virt-launcher-a',
};

const unplugDecision: Decision = {
  kind: DecisionKind.Unplug,
  request: { vmiUID: 'uid-vmi-a', volume: 'data' },
  why: 'NotInSpec',
};

const plugged: PlugResult = {
  fact: {
    type: EventType.MountedToPod,
    vmiUID: 'uid-vmi-a',
    volume: 'data',
    mode: 'Block',
    source: '/k/src',
    target: '/k/dst',
    changed: true,
    sourceMismatch: false,
    device: { major: 7, minor: 3 },
  },
  cgroup: 'allowed',
  durationMs: 4,
};

const unplugged: UnplugResult = {
  fact: {
    type: EventType.UnmountedFromPod,
    vmiUID: 'uid-vmi-a',
    volume: 'data',
    mode: 'Block',
    changed: true,
    unmounted: 0,
    removed: true,
  },
  cgroup: 'denied',
  durationMs: 2,
};

function run(
  decision: Decision,
  effects: { plug?: () => Promise<PlugResult>; unplug?: () => Promise<UnplugResult> } = {},
) {
  const machine = mounterStageMachine.provide({
    actors: mounterStageActors({
      plug: effects.plug ?? (() => Promise.resolve(plugged)),
      unplug: effects.unplug ?? (() => Promise.resolve(unplugged)),
    }),
  });
  const actor = createActor(machine);
  const emitted: StageEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  actor.start();
  const event: MounterWorkEvent = {
    type: 'work',
    item,
    attempt: 1,
    receivedAt: 1_000,
    observed: decision,
  };
  actor.send(event);
  return { actor, emitted };
}

const settled = (s: { children: Record<string, unknown> }) => Object.keys(s.children).length === 0;

describe('mounterStageMachine', () => {
  it('plug: mounted, emits mounted-to-pod then domain-updater work on the node', async () => {
    const { actor, emitted } = run(plugDecision);
    const snap = await waitFor(actor, (s) => s.matches('mounted'));
    expect(emitted.map((e) => e.type)).toEqual(['plugline.fact', 'plugline.work']);
    const [factE, workE] = emitted as [
      Extract<StageEmitted, { type: 'plugline.fact' }>,
      Extract<StageEmitted, { type: 'plugline.work' }>,
    ];
    expect(factE.fact).toMatchObject({
      type: EventType.MountedToPod,
      volume: 'data',
      data: {
        node: 'node-a',
        operation: 'plug',
        attachPod: { name: 'hp-volume-x', uid: 'uid-attach' },
        details: {
          mode: 'Block',
          cgroup: 'allowed',
          device: '7:3',
          launcherPod: 'virt-launcher-a',
        },
      },
    });
    expect(workE.work).toMatchObject({
      stage: Stage.DomainUpdater,
      node: 'node-a',
      operation: 'plug',
      cause: EventType.MountedToPod,
      operationId: 'op-7',
    });
    // The persisted snapshot is plain JSON.
    const persisted = actor.getPersistedSnapshot();
    expect(JSON.parse(JSON.stringify(persisted))).toEqual(persisted);
    expect(snap.hasTag('waiting') || snap.hasTag('retry') || snap.hasTag('failed')).toBe(false);
  });

  it('unplug: unmounted, emits unmounted-from-pod then orchestrator work without a node', async () => {
    const { actor, emitted } = run(unplugDecision);
    await waitFor(actor, (s) => s.matches('unmounted'));
    const work = emitted.find((e) => e.type === 'plugline.work');
    expect(work).toMatchObject({
      work: {
        stage: Stage.AttachmentOrchestrator,
        operation: 'unplug',
        cause: 'unmounted-from-pod',
      },
    });
    expect((work as { work: { node?: string } }).work.node).toBeUndefined();
  });

  it('a transient effect error rests in retrying with a backoff deadline, emitting nothing', async () => {
    const { actor, emitted } = run(plugDecision, {
      plug: () => Promise.reject(new MountError('mount', 'busy', 'mount failed')),
    });
    const snap = await waitFor(actor, (s) => s.matches('retrying') && settled(s));
    expect(snap.hasTag('retry')).toBe(true);
    expect(snap.context.wakeAt).toBe(1_000 + 500);
    expect(snap.context.failures).toBe(1);
    expect(emitted).toEqual([]);
  });

  it("a plug whose attachment pod's disk is gone looks again as soon as a wait would, then backs off like one", async () => {
    // The orchestrator deleted the pod the volume was attached through (the pod for the whole
    // set runs now): the next look finds that pod, not the 500 ms backoff of a failure.
    const gone = () => Promise.reject(new SourceNotFoundError('/k/pods/uid-attach/disk.img'));
    const { actor, emitted } = run(plugDecision, { plug: gone });
    const first = await waitFor(actor, (s) => s.matches('retrying') && settled(s));
    expect(first.hasTag('retry')).toBe(true);
    expect(first.context.wakeAt).toBe(1_000 + 50);
    expect(first.context.failure).toMatchObject({ reason: 'NotFound' });
    expect(emitted).toEqual([]);

    // Still gone at the next looks: the deadline doubles, as a wait's does, up to 5 s.
    actor.send({ type: 'work', item, attempt: 2, receivedAt: 2_000, observed: plugDecision });
    const second = await waitFor(actor, (s) => s.context.failures === 2 && settled(s));
    expect(second.context.wakeAt).toBe(2_000 + 100);
    expect(retryDelay(20, new SourceNotFoundError('/k/x'))).toBe(5_000);
    expect(retryDelay(1, new MountError('mount', 'busy', 'mount failed'))).toBe(500);
  });

  it('a terminal effect error (path escape) fails with its reason', async () => {
    const { actor } = run(unplugDecision, {
      unplug: () => Promise.reject(new PathEscapeError('/etc', '/k')),
    });
    const snap = await waitFor(actor, (s) => s.matches('failed'));
    expect(snap.hasTag('failed')).toBe(true);
    expect(snap.context.failure).toMatchObject({ reason: 'PathEscape' });
  });

  it('refuse fails at once; wait rests with a growing deadline; skip rests untagged', () => {
    const refused = run({ kind: DecisionKind.Refuse, reason: 'PathEscape', message: 'no' }).actor;
    expect(refused.getSnapshot().hasTag('failed')).toBe(true);
    expect(refused.getSnapshot().context.failure).toEqual({ reason: 'PathEscape', message: 'no' });

    const waiting = run({ kind: DecisionKind.Wait, reason: 'PVCNotReady', message: 'm' }).actor;
    expect(waiting.getSnapshot().hasTag('waiting')).toBe(true);
    expect(waiting.getSnapshot().context.wakeAt).toBe(1_000 + waitDelay(0));
    waiting.send({
      type: 'work',
      item,
      attempt: 2,
      receivedAt: 2_000,
      observed: { kind: DecisionKind.Wait, reason: 'PVCNotReady', message: 'm' },
    });
    expect(waiting.getSnapshot().context.wakeAt).toBe(2_000 + waitDelay(1));
    expect(waitDelay(1)).toBeGreaterThan(waitDelay(0));

    const skipped = run({
      kind: DecisionKind.Skip,
      reason: 'DomainMayHoldDisk',
      message: 'm',
    }).actor;
    expect(skipped.getSnapshot().matches('skipped')).toBe(true);
    expect(skipped.getSnapshot().tags.size).toBe(0);
  });

  it('a restored snapshot takes the next decision (unplug after mounted)', async () => {
    const first = run(plugDecision).actor;
    await waitFor(first, (s) => s.matches('mounted'));
    const restored = createActor(
      mounterStageMachine.provide({
        actors: mounterStageActors({
          plug: () => Promise.reject(new Error('not expected')),
          unplug: () => Promise.resolve(unplugged),
        }),
      }),
      { snapshot: first.getPersistedSnapshot() },
    );
    restored.start();
    restored.send({ type: 'work', item, attempt: 1, receivedAt: 5, observed: unplugDecision });
    await waitFor(restored, (s) => s.matches('unmounted'));
  });
});
