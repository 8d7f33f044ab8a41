import type { StageEmitted } from '@plugline/bus';
import type { OperationKind } from '@plugline/contracts';
import { createActor, type Actor } from 'xstate';
import { describe, expect, it } from 'vitest';
import type { DecideEvent, DecisionContext, VolumeView } from '../src/index.js';
import {
  bookedOperation,
  decisionMachine,
  ENTRY_REMOVED_CAUSE,
  ENTRY_RETURNED_CAUSE,
  RESYNC_CAUSE,
  REVERSED_CAUSE,
  reversedNudgeId,
  SPEC_CAUSE,
  viewOf,
} from '../src/index.js';
import { hotplugStatus, vmi, withHotplugPVC, withVolumeStatus } from './fixtures.js';
import { coverage, type CoverageSnapshot as Snap } from '@plugline/testkit';

const DIRECTIONS: (OperationKind | undefined)[] = ['plug', 'unplug', undefined];
const UIDS: (string | undefined)[] = ['uid-a', 'uid-b', undefined];
const PHASES: (string | undefined)[] = [undefined, 'AttachedToNode', 'Ready', 'UnMountedFromPod'];
const NODES: (string | undefined)[] = ['node-1', undefined];
const CAUSES = [SPEC_CAUSE, RESYNC_CAUSE, ENTRY_REMOVED_CAUSE, ENTRY_RETURNED_CAUSE];

function view(
  direction: OperationKind | undefined,
  vmiUID: string | undefined,
  phase: string | undefined,
  node: string | undefined,
): VolumeView {
  return {
    namespace: 'ns',
    vmi: 'vm',
    volume: 'd1',
    vmiUID,
    direction,
    phase,
    node,
    generation: 4,
  };
}

/**
 * Sends the actor a decision on a spec change of uid-a's volume (on node-1), issuing operation
 * `id` if it issues one; `phase` is what the status shows.
 */
function specDecisions(actor: Actor<typeof decisionMachine>) {
  return (direction: OperationKind, id: string, phase?: string): void =>
    actor.send({
      type: 'decide',
      view: view(direction, 'uid-a', phase, 'node-1'),
      cause: SPEC_CAUSE,
      nudgeId: `rv-${id}`,
      newOperationId: id,
      receivedAt: 0,
    });
}

const events = (): DecideEvent[] =>
  DIRECTIONS.flatMap((direction) =>
    UIDS.flatMap((uid) =>
      PHASES.flatMap((phase) =>
        NODES.flatMap((node) =>
          CAUSES.map((cause) => ({
            type: 'decide' as const,
            view: view(direction, uid, phase, node),
            cause,
            nudgeId: 'rv-1',
            newOperationId: 'op-new',
            receivedAt: 0,
          })),
        ),
      ),
    ),
  );

const serializeState = (s: Snap) => JSON.stringify([s.value, (s.context as DecisionContext).book]);

/** What one decision should emit, from the book before it and the event. */
function expected(before: DecisionContext['book'], e: DecideEvent): string[] {
  const { view: v } = e;
  if (v.direction === undefined || v.vmiUID === undefined) return [];
  const same = before?.operation === v.direction && before.vmiUID === v.vmiUID;
  // The same operation's work goes out again on a resync, or when its volume's entry was dropped
  // (a plug) or written back (an unplug).
  const resent =
    e.cause === RESYNC_CAUSE ||
    (e.cause === ENTRY_REMOVED_CAUSE && v.direction === 'plug') ||
    (e.cause === ENTRY_RETURNED_CAUSE && v.direction === 'unplug');
  if (same && !resent) return [];
  const op = same ? before.operationId : e.newOperationId;
  const out: string[] = [];
  if (!same) out.push(`fact:${v.direction === 'plug' ? 'requested' : 'unplug-requested'}:${op}`);
  let stage: string | undefined;
  // A re-add while this VMI's unplug was the book goes down the whole chain: the status may
  // still show where the volume was before the unplug.
  const afterUnplug = !same && before?.operation === 'unplug' && before.vmiUID === v.vmiUID;
  if (v.direction === 'plug') {
    stage =
      v.phase === 'Ready' && !afterUnplug
        ? undefined
        : v.phase === 'AttachedToNode' && !afterUnplug
          ? 'node-mounter'
          : 'attachment-orchestrator';
  } else {
    // Backwards from the domain, whatever the phase says.
    stage = 'domain-updater';
  }
  if (stage === 'node-mounter' || stage === 'domain-updater') {
    if (v.node === undefined) stage = 'attachment-orchestrator';
  }
  if (stage !== undefined) {
    const cause = same ? 'resync' : out[0]!.split(':')[1];
    const node = stage === 'attachment-orchestrator' ? '_' : v.node;
    out.push(`work:${stage}:${node}:${op}:${cause}`);
  }
  return out;
}

function render(emitted: StageEmitted): string {
  if (emitted.type === 'plugline.fact') {
    return `fact:${emitted.fact.type}:${emitted.fact.data.operationId}`;
  }
  const w = emitted.work;
  return `work:${w.stage}:${w.node ?? '_'}:${w.operationId}:${w.cause}`;
}

describe('decisionMachine over every path (@xstate/graph)', () => {
  const cov = coverage(decisionMachine, { events, serializeState });

  it('reaches every state and takes every transition', () => {
    expect(cov.unreachedStates).toEqual([]);
    expect(cov.untakenTransitions).toEqual([]);
    expect(cov.edges.length).toBeGreaterThan(500);
  });

  it('on every edge: issues at most one operation, re-sends work only on resync or a dropped or returned entry, routes by phase', () => {
    for (const edge of cov.edges) {
      const actor = createActor(decisionMachine).start();
      for (const [i, step] of edge.steps.entries()) {
        const before = actor.getSnapshot().context.book;
        const seen: string[] = [];
        const sub = actor.on('*', (e) => seen.push(render(e)));
        actor.send(step.event);
        sub.unsubscribe();
        if (i === edge.steps.length - 1) expect(seen).toEqual(expected(before, step.event));
        const book = actor.getSnapshot().context.book;
        const v = step.event.view;
        if (v.direction === undefined || v.vmiUID === undefined) expect(book).toBeUndefined();
        else expect(book).toMatchObject({ operation: v.direction, vmiUID: v.vmiUID });
      }
      actor.stop();
    }
  });

  it('a restored book keeps its operation: resync re-sends, a spec nudge is quiet', () => {
    const first = createActor(decisionMachine).start();
    first.send({
      type: 'decide',
      view: view('plug', 'uid-a', undefined, 'node-1'),
      cause: SPEC_CAUSE,
      nudgeId: 'rv-1',
      newOperationId: 'op-1',
      receivedAt: 0,
    });
    const persisted = first.getPersistedSnapshot();
    first.stop();
    const restored = createActor(decisionMachine, { snapshot: persisted }).start();
    const seen: string[] = [];
    restored.on('*', (e) => seen.push(render(e)));
    const again = (cause: string, phase?: string): void =>
      restored.send({
        type: 'decide',
        view: view('plug', 'uid-a', phase, 'node-1'),
        cause,
        nudgeId: 'rv-2',
        newOperationId: 'op-2',
        receivedAt: 0,
      });
    again(SPEC_CAUSE);
    again(RESYNC_CAUSE, 'AttachedToNode');
    expect(seen).toEqual(['work:node-mounter:node-1:op-1:resync']);
  });

  it('an unplug books the plug it undoes; bookedOperation reads the book for its VMI only', () => {
    const actor = createActor(decisionMachine).start();
    const decide = specDecisions(actor);
    const booked = (uid = 'uid-a') => bookedOperation(actor.getSnapshot().context, uid);
    decide('plug', 'op-1');
    expect(booked()).toEqual({ operationId: 'op-1', operation: 'plug' });
    decide('unplug', 'op-2', 'Ready');
    expect(booked()).toEqual({ operationId: 'op-2', operation: 'unplug', undoes: 'op-1' });
    expect(booked('uid-b')).toBeUndefined();
    decide('plug', 'op-3', 'Detaching');
    expect(booked()).toEqual({ operationId: 'op-3', operation: 'plug' });
    expect(
      bookedOperation({ book: { operationId: 7, operation: 'plug', vmiUID: 'uid-a' } }, 'uid-a'),
    ).toBeUndefined();
    actor.stop();
  });

  it('a volume unplugged and re-added while the watcher did not look gets a new operation', () => {
    const actor = createActor(decisionMachine).start();
    const seen: string[] = [];
    actor.on('*', (e) => seen.push(render(e)));
    const decide = (phase: string | undefined, generation: number, id: string): void =>
      actor.send({
        type: 'decide',
        view: { ...view('plug', 'uid-a', phase, 'node-1'), generation },
        cause: RESYNC_CAUSE,
        nudgeId: 'resync-1',
        newOperationId: id,
        receivedAt: 0,
      });
    decide(undefined, 4, 'op-1');
    // The same generation in an unplug phase: the re-add op-1 announced is not projected yet.
    decide('UnMountedFromPod', 4, 'op-2');
    // A newer spec and the stages unplugged it under op-1: op-1 is over, a re-add starts.
    decide('Detaching', 6, 'op-3');
    decide('Detaching', 6, 'op-4');
    expect(seen).toEqual([
      'fact:requested:op-1',
      'work:attachment-orchestrator:_:op-1:requested',
      'work:attachment-orchestrator:_:op-1:resync',
      'fact:requested:op-3',
      'work:attachment-orchestrator:_:op-3:requested',
      'work:attachment-orchestrator:_:op-3:resync',
    ]);
  });
});

describe('a volume re-added while its unplug is under way', () => {
  it('sends the new plug down the whole chain, whatever phase the status still shows', () => {
    const actor = createActor(decisionMachine).start();
    const seen: string[] = [];
    actor.on('*', (e) => seen.push(render(e)));
    const decide = specDecisions(actor);
    // Plugged to Ready under op-1; the spec drops the volume, then wants it again before any
    // of the unplug's facts reached the status (it still says Ready, with the old target).
    decide('plug', 'op-1');
    decide('unplug', 'op-2', 'Ready');
    decide('plug', 'op-3', 'Ready');
    expect(seen).toEqual([
      'fact:requested:op-1',
      'work:attachment-orchestrator:_:op-1:requested',
      'fact:unplug-requested:op-2',
      'work:domain-updater:node-1:op-2:unplug-requested',
      'fact:requested:op-3',
      // not nothing: the domain-updater may be taking the disk out, or may have put it back
      // under another target, and only the stages' facts under op-3 tell the status
      'work:attachment-orchestrator:_:op-3:requested',
    ]);
  });
});

describe('a plug reversed under its own operation', () => {
  it('gets a new operation once, when the projector says the stages unplugged that operation', () => {
    const actor = createActor(decisionMachine).start();
    const seen: string[] = [];
    actor.on('*', (e) => seen.push(render(e)));
    const decide = (cause: string, nudgeId: string, id: string, phase?: string): void =>
      actor.send({
        type: 'decide',
        view: view('plug', 'uid-a', phase, 'node-1'),
        cause,
        nudgeId,
        newOperationId: id,
        receivedAt: 0,
      });
    decide(SPEC_CAUSE, 'rv-1', 'op-1');
    // The stages unplugged and re-plugged under op-1: the status lost the entry.
    decide(REVERSED_CAUSE, reversedNudgeId('op-1'), 'op-2');
    // A late report about op-1 (op-2 is the book now) re-sends op-2's work: the unplug it
    // reports may have taken the disk out from under op-2. A plain spec nudge changes nothing.
    decide(REVERSED_CAUSE, reversedNudgeId('op-1'), 'op-3', 'MountedToPod');
    decide(SPEC_CAUSE, 'rv-2', 'op-4', 'AttachedToNode');
    expect(seen).toEqual([
      'fact:requested:op-1',
      'work:attachment-orchestrator:_:op-1:requested',
      'fact:requested:op-2',
      'work:attachment-orchestrator:_:op-2:requested',
      'work:domain-updater:node-1:op-2:resync',
    ]);
  });

  it('an unplug operation is not re-issued by a report about it', () => {
    const actor = createActor(decisionMachine).start();
    const seen: string[] = [];
    actor.on('*', (e) => seen.push(render(e)));
    for (const [cause, nudgeId, id] of [
      [SPEC_CAUSE, 'rv-1', 'op-1'],
      [REVERSED_CAUSE, reversedNudgeId('op-1'), 'op-2'],
    ] as const)
      actor.send({
        type: 'decide',
        view: view('unplug', 'uid-a', 'Ready', 'node-1'),
        cause,
        nudgeId,
        newOperationId: id,
        receivedAt: 0,
      });
    expect(seen).toEqual([
      'fact:unplug-requested:op-1',
      'work:domain-updater:node-1:op-1:unplug-requested',
    ]);
  });
});

describe('viewOf', () => {
  it('routes a Ready entry without a target (its disk left the domain) as AttachedToNode', () => {
    const v = vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d1', 'Ready')));
    const key = { namespace: 'ns', vmi: 'vm', volume: 'd1' };
    expect(viewOf(key, v)).toMatchObject({ direction: 'plug', phase: 'AttachedToNode' });
    const attached = vmi(
      withHotplugPVC('d1'),
      withVolumeStatus(hotplugStatus('d1', 'Ready', { target: 'sda' })),
    );
    expect(viewOf(key, attached).phase).toBe('Ready');
  });

  it('reads direction, phase and node from the VMI', () => {
    const v = vmi(
      withHotplugPVC('d1'),
      withVolumeStatus(hotplugStatus('d2', 'Ready', { target: 'sdb' })),
    );
    const key = { namespace: 'ns', vmi: 'vm', volume: 'd1' };
    expect(viewOf(key, v)).toMatchObject({ direction: 'plug', phase: undefined });
    expect(viewOf({ ...key, volume: 'd2' }, v)).toMatchObject({
      direction: 'unplug',
      phase: 'Ready',
      node: 'node-with-a-long-name-a',
    });
    expect(viewOf({ ...key, volume: 'rootdisk' }, v).direction).toBeUndefined();
    expect(viewOf(key, undefined)).toMatchObject({ direction: undefined, vmiUID: undefined });
  });
});
