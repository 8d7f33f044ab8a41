import { CoreV1Api, type CoreV1Event } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { EventRecorder } from '../src/index.js';
import { createNamespace, createVmi, memoryLogger } from './helpers.js';
import { useKubeSim } from './sim.js';

const env = useKubeSim();

async function eventsIn(ns: string): Promise<CoreV1Event[]> {
  const list = await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: ns });
  return list.items.sort((a, b) => (a.message ?? '').localeCompare(b.message ?? ''));
}

describe('EventRecorder', () => {
  it('creates Events with the involved object and aggregates repeats within the window', async () => {
    const ns = await createNamespace(env.kc);
    const vmi = await createVmi(env.kc, ns, 'evented-vmi');
    let clock = new Date('2030-01-01T00:00:00Z');
    const recorder = new EventRecorder({
      client: env.client,
      component: 'plugline-spec-watcher',
      host: 'node-a',
      logger: memoryLogger().logger,
      aggregateWindowMs: 60_000,
      now: () => clock,
    });

    await recorder.record(vmi, 'Normal', 'SuccessfulCreate', 'Created attachment pod hp-volume-x');
    clock = new Date('2030-01-01T00:00:10Z');
    await Promise.all([
      recorder.record(vmi, 'Normal', 'SuccessfulCreate', 'Created attachment pod hp-volume-x'),
      recorder.record(vmi, 'Normal', 'SuccessfulCreate', 'Created attachment pod hp-volume-x'),
    ]);
    await recorder.record(vmi, 'Warning', 'HotplugFailed', 'Volume v1 failed');

    let events = await eventsIn(ns);
    expect(events).toHaveLength(2);
    const [created, failed] = events as [CoreV1Event, CoreV1Event];
    expect(created).toMatchObject({
      type: 'Normal',
      reason: 'SuccessfulCreate',
      count: 3,
      reportingComponent: 'plugline-spec-watcher',
      reportingInstance: 'node-a',
      source: { component: 'plugline-spec-watcher', host: 'node-a' },
      involvedObject: {
        kind: 'VirtualMachineInstance',
        apiVersion: 'kubevirt.io/v1',
        name: 'evented-vmi',
        namespace: ns,
        uid: vmi.metadata.uid,
        resourceVersion: vmi.metadata.resourceVersion,
      },
    });
    expect(created.firstTimestamp?.toISOString()).toBe('2030-01-01T00:00:00.000Z');
    expect(created.lastTimestamp?.toISOString()).toBe('2030-01-01T00:00:10.000Z');
    expect(failed).toMatchObject({ type: 'Warning', reason: 'HotplugFailed', count: 1 });

    // Outside the window, the same event starts a new Event object.
    clock = new Date('2030-01-01T00:05:00Z');
    await recorder.record(vmi, 'Normal', 'SuccessfulCreate', 'Created attachment pod hp-volume-x');
    events = await eventsIn(ns);
    expect(events).toHaveLength(3);
    expect(events.map((e) => e.count).sort()).toEqual([1, 1, 3]);
  });

  it('creates a new Event when the aggregated one was deleted', async () => {
    const ns = await createNamespace(env.kc);
    const vmi = await createVmi(env.kc, ns, 'evented-vmi');
    const recorder = new EventRecorder({
      client: env.client,
      component: 'c',
      logger: memoryLogger().logger,
    });
    await recorder.record(vmi, 'Normal', 'VolumeReady', 'ready');
    const [first] = await eventsIn(ns);
    await env.kc
      .makeApiClient(CoreV1Api)
      .deleteNamespacedEvent({ namespace: ns, name: first!.metadata.name! });
    await recorder.record(vmi, 'Normal', 'VolumeReady', 'ready');
    const events = await eventsIn(ns);
    expect(events).toHaveLength(1);
    expect(events[0]!.metadata.name).not.toBe(first!.metadata.name);
    expect(events[0]!.count).toBe(1);
  });

  it('writes at most a burst of Events about one object, then one per refill period, as client-go', async () => {
    const ns = await createNamespace(env.kc);
    const busy = await createVmi(env.kc, ns, 'busy-vmi');
    const quiet = await createVmi(env.kc, ns, 'quiet-vmi');
    let clock = new Date('2030-01-01T00:00:00Z');
    const { logger, lines } = memoryLogger();
    const recorder = new EventRecorder({
      client: env.client,
      component: 'c',
      logger,
      spamBurst: 5,
      spamRefillMs: 60_000,
      now: () => clock,
    });
    // Seven volumes ready on one VMI: five Events, the last two dropped.
    for (let i = 0; i < 7; i++) await recorder.record(busy, 'Normal', 'VolumeReady', `v${i} ready`);
    // A repeat's count is a write too.
    await recorder.record(busy, 'Normal', 'VolumeReady', 'v0 ready');
    // Another object has its own allowance.
    await recorder.record(quiet, 'Normal', 'VolumeReady', 'q ready');
    let events = await eventsIn(ns);
    expect(events.map((e) => `${e.involvedObject.name}: ${e.message} x${e.count}`)).toEqual([
      'quiet-vmi: q ready x1',
      'busy-vmi: v0 ready x1',
      'busy-vmi: v1 ready x1',
      'busy-vmi: v2 ready x1',
      'busy-vmi: v3 ready x1',
      'busy-vmi: v4 ready x1',
    ]);
    expect(
      lines().filter((l) => l.msg === 'event dropped: too many about this object'),
    ).toHaveLength(3);

    // A refill period later, one more.
    clock = new Date('2030-01-01T00:01:00Z');
    await recorder.record(busy, 'Warning', 'HotplugFailed', 'v5 failed');
    await recorder.record(busy, 'Warning', 'HotplugFailed', 'v6 failed');
    events = await eventsIn(ns);
    expect(events.filter((e) => e.type === 'Warning').map((e) => e.message)).toEqual(['v5 failed']);
  });

  it('never throws: failures are logged', async () => {
    const { logger, lines } = memoryLogger();
    const recorder = new EventRecorder({ client: env.client, component: 'c', logger });
    const ghost = {
      apiVersion: 'kubevirt.io/v1',
      kind: 'VirtualMachineInstance',
      metadata: { name: 'ghost', namespace: 'namespace-that-does-not-exist' },
    };
    await expect(recorder.record(ghost, 'Warning', 'HotplugFailed', 'x')).resolves.toBeUndefined();
    expect(lines().some((l) => l.msg === 'could not record event' && l.level === 40)).toBe(true);
  });
});
