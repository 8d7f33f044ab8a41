import type { OperationRef } from '../src/index.js';
import { describe, expect, it } from 'vitest';
import {
  compareOperationIds,
  newOperationId,
  nextStageFor,
  planVolumeOperations,
  resyncWork,
} from '../src/index.js';
import { decodeWorkItem, encodeMessage } from '@plugline/contracts';
import { hotplugStatus, vmi, withHotplugPVC, withVolumeStatus } from './fixtures.js';

const now = new Date('2026-01-01T00:00:00Z');
const ids = () => {
  let n = 0;
  return () => `op-${(n += 1)}`;
};

describe('planVolumeOperations', () => {
  it('issues requested and unplug-requested with the next stage work, once', () => {
    const v = vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d2', 'Ready')));
    const plan = planVolumeOperations({ vmi: v, operations: {}, now, newId: ids() });
    expect(plan.events.map((e) => [e.volume, e.type, e.data.operationId])).toEqual([
      ['d1', 'requested', 'op-1'],
      ['d2', 'unplug-requested', 'op-2'],
    ]);
    expect(plan.work.map((w) => [w.volume, w.stage, w.node, w.cause])).toEqual([
      ['d1', 'attachment-orchestrator', undefined, 'requested'],
      ['d2', 'domain-updater', 'node-with-a-long-name-a', 'unplug-requested'],
    ]);
    for (const w of plan.work) expect(decodeWorkItem(encodeMessage(w)).ok).toBe(true);
    const again = planVolumeOperations({ vmi: v, operations: plan.operations, now, newId: ids() });
    expect(again.events).toEqual([]);
    expect(again.work).toEqual([]);
  });

  it('a re-add after an unplug operation gets a new plug operation (#16159)', () => {
    const v = vmi(withHotplugPVC('d1'), withVolumeStatus(hotplugStatus('d1', 'Detaching')));
    const plan = planVolumeOperations({
      vmi: v,
      operations: { d1: { operationId: 'op-0', operation: 'unplug' } },
      now,
      newId: ids(),
    });
    expect(plan.operations.d1).toEqual({ operationId: 'op-1', operation: 'plug' });
    expect(plan.work[0]?.stage).toBe('attachment-orchestrator');
  });

  it('forgets operations of volumes gone from spec and status', () => {
    const plan = planVolumeOperations({
      vmi: vmi(),
      operations: { old: { operationId: 'op-0', operation: 'unplug' } },
      now,
      newId: ids(),
    });
    expect(plan.operations).toEqual({});
  });
});

describe('resyncWork', () => {
  it('re-emits work for every volume not at its desired end, under its operation', () => {
    const v = vmi(
      withHotplugPVC('bound'),
      withHotplugPVC('attached'),
      withHotplugPVC('mounted'),
      withHotplugPVC('ready'),
      withVolumeStatus(hotplugStatus('bound', 'Bound')),
      withVolumeStatus(hotplugStatus('attached', 'AttachedToNode')),
      withVolumeStatus(hotplugStatus('mounted', 'MountedToPod')),
      withVolumeStatus(hotplugStatus('ready', 'Ready')),
      withVolumeStatus(hotplugStatus('leaving', 'UnMountedFromPod')),
    );
    const operations: Record<string, OperationRef> = Object.fromEntries(
      ['bound', 'attached', 'mounted', 'ready'].map((n) => [
        n,
        { operationId: `op-${n}`, operation: 'plug' as const },
      ]),
    );
    operations.leaving = { operationId: 'op-leaving', operation: 'unplug' };
    const plan = resyncWork({ vmi: v, operations, now, newId: ids() });
    expect(plan.events).toEqual([]);
    expect(plan.work.map((w) => [w.volume, w.stage, w.operationId, w.cause])).toEqual([
      ['bound', 'attachment-orchestrator', 'op-bound', 'resync'],
      ['attached', 'node-mounter', 'op-attached', 'resync'],
      ['mounted', 'domain-updater', 'op-mounted', 'resync'],
      // Backwards from the domain, whatever the phase: the node stages look.
      ['leaving', 'domain-updater', 'op-leaving', 'resync'],
    ]);
  });

  it('a lost book gets new operations with their facts', () => {
    const v = vmi(withHotplugPVC('bound'), withVolumeStatus(hotplugStatus('bound', 'Bound')));
    const plan = resyncWork({ vmi: v, operations: {}, now, newId: ids() });
    expect(plan.events.map((e) => e.type)).toEqual(['requested']);
    expect(plan.work.map((w) => w.cause)).toEqual(['requested']);
  });
});

describe('operation ids and stages', () => {
  it('sort by issue time', () => {
    const a = newOperationId(new Date(1_000), () => 0.99);
    const b = newOperationId(new Date(2_000), () => 0);
    expect(compareOperationIds(a, b)).toBeLessThan(0);
    expect(compareOperationIds(b, a)).toBeGreaterThan(0);
    expect(compareOperationIds(a, a)).toBe(0);
    expect(a).toMatch(/^[0-9a-z]{10}-[0-9a-z]{8}$/);
  });
  it.each([
    ['plug', undefined, 'attachment-orchestrator'],
    ['plug', 'Pending', 'attachment-orchestrator'],
    ['plug', 'AttachedToNode', 'node-mounter'],
    ['plug', 'MountedToPod', 'domain-updater'],
    ['plug', 'Ready', undefined],
    ['unplug', 'Ready', 'domain-updater'],
    ['unplug', 'MountedToPod', 'domain-updater'],
    ['unplug', 'AttachedToNode', 'domain-updater'],
    // The status cannot rule out a disk in the domain or a mount: a re-add reset the entry, or
    // a stage acted under an operation the status took as stale. The node stages look.
    ['unplug', 'Detaching', 'domain-updater'],
    ['unplug', 'UnMountedFromPod', 'domain-updater'],
    ['unplug', undefined, 'domain-updater'],
    ['unplug', 'Pending', 'domain-updater'],
    ['unplug', 'Bound', 'domain-updater'],
  ] as const)('%s at %s → %s', (op, phase, stage) => {
    expect(nextStageFor(op, phase)).toBe(stage);
  });
});
