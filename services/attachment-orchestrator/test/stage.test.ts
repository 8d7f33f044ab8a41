// Stage tests: the orchestrator in-process against a real nats-server and kube-sim (kubelet on).
// The fallback re-delivery is set to a minute, so every step below is driven by informer nudges;
// an unplug the orchestrator sends down the node stages itself is sent again after a second.
import { Pod as K8sPod } from 'kubernetes-models/v1';
import { EventType, eventTypeOf, newOperationId, Stage } from '@plugline/contracts';
import { Types } from '@plugline/kube-sim';
import { createLogger, memoryDestination } from '@plugline/telemetry';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  ATTACHMENT_POD_TOLERATIONS,
  DEFAULT_HOTPLUG_RESOURCES,
  defaults,
  startAttachmentOrchestrator,
  type AttachmentOrchestrator,
  type Pod,
} from '../src/index.js';
import {
  addVolume,
  attachmentPods,
  createdPodNames,
  createPvc,
  createRunningVmi,
  eventsOf,
  LAUNCHER_IMAGE,
  NODE,
  rand,
  removeVolume,
  reportUnmounted,
  requestPlug,
  resetForReadd,
  sendWork,
  setPhase,
  startHarness,
  statusOf,
  typesOf,
  writeVolumeStatus,
  type Harness,
} from './harness.js';

let h: Harness;
let service: AttachmentOrchestrator;
/** The service's log lines (debug: the runtime logs each work item it settles). */
const logs = memoryDestination();
const ns = rand('ns');
const WAIT = { timeout: 15_000, interval: 25 };

beforeAll(async () => {
  h = await startHarness();
  service = await startAttachmentOrchestrator(
    { concurrency: 8, attachImage: undefined, coalesceMs: defaults().coalesceMs, leaseTtlMs: 2000 },
    {
      bus: h.bus,
      kc: h.kc,
      logger: createLogger({ level: 'debug' }, logs),
      fallbackMs: 60_000,
      reaskMs: 1000,
    },
  );
}, 30_000);

afterAll(async () => {
  await service?.stop();
  await h?.stop();
}, 30_000);

const phase = (vmi: string, volume: string) => statusOf(h, ns, vmi, volume)?.phase;

describe('plug', () => {
  it('attaches a filesystem and a block PVC with one pod on the launcher node, shaped as KubeVirt', async () => {
    const name = rand('vm');
    const { vmi, launcher } = await createRunningVmi(h, ns, name);
    createPvc(h, ns, 'fs-claim', 'Filesystem');
    createPvc(h, ns, 'blk-claim', 'Block');
    addVolume(h, ns, name, 'fsvol', { claim: 'fs-claim' });
    addVolume(h, ns, name, 'blkvol', { claim: 'blk-claim' });
    await requestPlug(h, vmi, 'fsvol', 'op-fs');
    await requestPlug(h, vmi, 'blkvol', 'op-blk');

    await vi.waitFor(() => {
      expect(phase(name, 'fsvol')).toBe('Ready');
      expect(phase(name, 'blkvol')).toBe('Ready');
    }, WAIT);
    const pods = attachmentPods(h, ns, name);
    expect(pods).toHaveLength(1);
    const pod = pods[0] as Pod;
    expect(createdPodNames(h, name)).toEqual([pod.metadata.name]);

    // Field by field.
    expect(pod.metadata.name).toMatch(/^hp-volume-[0-9a-f]{10}$/);
    expect(pod.metadata.labels).toEqual({ 'kubevirt.io': 'hotplug-disk' });
    expect(pod.metadata.annotations).toMatchObject({
      'kubevirt.io/owner-vmi-name': name,
      'kubevirt.io/owner-vmi-uid': vmi.metadata.uid,
    });
    expect(pod.metadata.ownerReferences).toEqual([
      {
        apiVersion: 'v1',
        kind: 'Pod',
        name: launcher.metadata.name,
        uid: launcher.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(pod.spec?.nodeName).toBe(NODE);
    expect(pod.spec?.affinity).toEqual({
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [
            {
              matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [NODE] }],
            },
          ],
        },
      },
    });
    expect(pod.spec?.tolerations).toEqual([
      ...ATTACHMENT_POD_TOLERATIONS,
      { key: 'dedicated', operator: 'Equal', value: 'vms', effect: 'NoSchedule' },
    ]);
    const container = pod.spec?.containers[0];
    expect(pod.spec?.containers).toHaveLength(1);
    expect(container?.image).toBe(LAUNCHER_IMAGE);
    expect(container?.resources).toEqual(DEFAULT_HOTPLUG_RESOURCES);
    const blkPvc = h.sim.store.get(Types.persistentvolumeclaims, ns, 'blk-claim');
    expect(container?.volumeDevices).toEqual([
      { name: 'blkvol', devicePath: `/path/blkvol/${blkPvc.metadata?.uid}` },
    ]);
    expect(container?.volumeMounts).toEqual([
      { name: 'hotplug-disks', mountPath: '/path', mountPropagation: 'HostToContainer' },
      { name: 'fsvol', mountPath: '/fsvol' },
    ]);
    expect(pod.spec?.volumes).toEqual([
      { name: 'hotplug-disks', emptyDir: {} },
      { name: 'blkvol', persistentVolumeClaim: { claimName: 'blk-claim' } },
      { name: 'fsvol', persistentVolumeClaim: { claimName: 'fs-claim' } },
    ]);
    // Valid against the Kubernetes Pod schema.
    expect(() => new K8sPod(pod as never).validate()).not.toThrow();

    // The facts and the node-mount work.
    for (const [volume, op, claim, mode] of [
      ['fsvol', 'op-fs', 'fs-claim', 'Filesystem'],
      ['blkvol', 'op-blk', 'blk-claim', 'Block'],
    ] as const) {
      const events = eventsOf(h, ns, name, volume);
      expect(typesOf(events)).toEqual([EventType.Bound, EventType.AttachedToNode]);
      const attached = events[1]!;
      expect(attached.source).toBe(`plugline/${Stage.AttachmentOrchestrator}`);
      expect(attached.data).toMatchObject({
        operationId: op,
        operation: 'plug',
        vmiUID: vmi.metadata.uid,
        phase: 'AttachedToNode',
        reason: 'SuccessfulCreate',
        node: NODE,
        attachPod: { name: pod.metadata.name, uid: pod.metadata.uid },
        details: {
          claimInfo: {
            claimName: claim,
            volumeMode: mode,
            accessModes: ['ReadWriteOnce'],
            requests: { storage: '8Mi' },
          },
        },
      });
      const work = h.nodeWork.filter((w) => w.vmi === name && w.volume === volume);
      expect(work).toEqual([
        expect.objectContaining({
          stage: Stage.NodeMounter,
          node: NODE,
          operationId: op,
          operation: 'plug',
          cause: EventType.AttachedToNode,
        }),
      ]);
    }
  });
});

describe('readiness', () => {
  it('waits for a PVC that appears later, then attaches it', async () => {
    const name = rand('vm');
    const { vmi } = await createRunningVmi(h, ns, name);
    addVolume(h, ns, name, 'late', { claim: 'late-claim' });
    await requestPlug(h, vmi, 'late', 'op-late');
    await vi.waitFor(() => {
      expect(statusOf(h, ns, name, 'late')).toMatchObject({
        phase: 'Pending',
        reason: 'FailedPvcNotFound',
        message: 'PVC late-claim not found',
      });
    }, WAIT);
    // Nothing is attached while the claim is missing: the orchestrator settled the request that
    // published Pending (its own Pending status nudges nothing: a phase that moves no further
    // gives a reconcile nothing more to do), and no pod exists.
    await vi.waitFor(
      () =>
        expect(
          logs.lines.some((l) => l.msg === 'work item settled' && l.operationId === 'op-late'),
        ).toBe(true),
      WAIT,
    );
    expect(attachmentPods(h, ns, name)).toHaveLength(0);
    expect(createdPodNames(h, name)).toEqual([]);
    createPvc(h, ns, 'late-claim', 'Filesystem');
    await vi.waitFor(() => expect(phase(name, 'late')).toBe('Ready'), WAIT);
    expect(typesOf(eventsOf(h, ns, name, 'late'))).toEqual([
      EventType.Pending,
      EventType.Bound,
      EventType.AttachedToNode,
    ]);
  });

  it('waits for a DataVolume to finish importing', async () => {
    const name = rand('vm');
    const { vmi } = await createRunningVmi(h, ns, name);
    const dvCreated = Date.now();
    h.sim.store.create(
      Types.datavolumes,
      {
        apiVersion: 'cdi.kubevirt.io/v1beta1',
        kind: 'DataVolume',
        metadata: {
          name: 'imported',
          annotations: { 'sim.plugline.io/import-duration-ms': '3000' },
        },
        spec: {
          source: { http: { url: 'http://images.example/disk.img' } },
          pvc: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '8Mi' } } },
        },
      },
      { namespace: ns },
    );
    addVolume(h, ns, name, 'dvvol', { dataVolume: 'imported' });
    await requestPlug(h, vmi, 'dvvol', 'op-dv');
    await vi.waitFor(() => expect(phase(name, 'dvvol')).toBe('Ready'), WAIT);
    const events = eventsOf(h, ns, name, 'dvvol');
    const attached = events.find((e) => eventTypeOf(e) === EventType.AttachedToNode)!;
    expect(Date.parse(attached.time) - dvCreated).toBeGreaterThanOrEqual(3000);
    const types = typesOf(events);
    expect(types[0]).toBe(EventType.Pending);
    expect(events[0]!.data.reason).toBe('PVCNotReady');
    expect(types).toContain(EventType.ImportProgress);
    expect(types.slice(-2)).toEqual([EventType.Bound, EventType.AttachedToNode]);
    expect(createdPodNames(h, name)).toHaveLength(1);
  });

  it('leaves a PVC that never binds Pending and does nothing else', async () => {
    const name = rand('vm');
    const { vmi } = await createRunningVmi(h, ns, name);
    createPvc(h, ns, 'stuck-claim', 'Filesystem', { 'sim.plugline.io/never-bind': 'true' });
    createPvc(h, ns, 'good-claim', 'Filesystem');
    addVolume(h, ns, name, 'stuck', { claim: 'stuck-claim' });
    await requestPlug(h, vmi, 'stuck', 'op-stuck');
    await vi.waitFor(
      () =>
        expect(statusOf(h, ns, name, 'stuck')).toMatchObject({
          phase: 'Pending',
          reason: 'PVCNotReady',
          message: 'PVC is in phase Pending',
        }),
      WAIT,
    );
    // A later volume of the same VMI goes through; the stuck one stays out of its pod.
    addVolume(h, ns, name, 'good', { claim: 'good-claim' });
    await requestPlug(h, vmi, 'good', 'op-good');
    await vi.waitFor(() => expect(phase(name, 'good')).toBe('Ready'), WAIT);
    expect(typesOf(eventsOf(h, ns, name, 'stuck'))).toEqual([EventType.Pending]);
    expect(phase(name, 'stuck')).toBe('Pending');
    const pods = attachmentPods(h, ns, name);
    expect(pods).toHaveLength(1);
    expect(pods[0]!.spec?.volumes?.map((v) => v.name)).toEqual(['hotplug-disks', 'good']);
  });
});

/** Plugs `volumes` (one PVC each) into a new VMI and waits until all are Ready. */
async function plugged(volumes: string[]) {
  const name = rand('vm');
  const created = await createRunningVmi(h, ns, name);
  for (const v of volumes) {
    createPvc(h, ns, `${name}-${v}`, 'Filesystem');
    addVolume(h, ns, name, v, { claim: `${name}-${v}` });
  }
  for (const v of volumes) await requestPlug(h, created.vmi, v, `op-${v}`);
  await vi.waitFor(() => {
    for (const v of volumes) expect(phase(name, v)).toBe('Ready');
    expect(attachmentPods(h, ns, name)).toHaveLength(1);
  }, WAIT);
  return { name, ...created };
}

describe('unplug', () => {
  it('replaces the pod (new one Running first), never dropping a volume in use; the last goes with its pod', async () => {
    const { name, vmi } = await plugged(['keep', 'drop']);
    const [first] = attachmentPods(h, ns, name);
    removeVolume(h, ns, name, 'drop');
    // The replacement for the remaining volume comes up; the old pod stays while `drop` is Ready.
    await vi.waitFor(() => {
      const pods = attachmentPods(h, ns, name);
      expect(pods).toHaveLength(2);
      expect(pods.find((p) => p.metadata.name !== first!.metadata.name)?.status?.phase).toBe(
        'Running',
      );
    }, WAIT);
    await vi.waitFor(
      () => expect(statusOf(h, ns, name, 'keep')?.hotplugVolume?.attachPodName).toBeDefined(),
      WAIT,
    );
    expect(attachmentPods(h, ns, name).map((p) => p.metadata.name)).toContain(first!.metadata.name);
    expect(typesOf(eventsOf(h, ns, name, 'drop'))).not.toContain(EventType.Detaching);

    await reportUnmounted(h, vmi, 'drop', 'op-unplug-drop');
    await vi.waitFor(() => {
      expect(statusOf(h, ns, name, 'drop')).toBeUndefined();
      expect(attachmentPods(h, ns, name)).toHaveLength(1);
    }, WAIT);
    const [second] = attachmentPods(h, ns, name);
    expect(second!.spec?.volumes?.map((v) => v.name)).toEqual(['hotplug-disks', 'keep']);
    const newRunning = h.podLog.findIndex(
      (r) => r.name === second!.metadata.name && r.phase === 'Running',
    );
    const oldGoing = h.podLog.findIndex(
      (r) => r.name === first!.metadata.name && (r.deleting || r.type === 'DELETED'),
    );
    expect(newRunning).toBeGreaterThanOrEqual(0);
    expect(oldGoing).toBeGreaterThan(newRunning);
    const drop = eventsOf(h, ns, name, 'drop').slice(-2);
    expect(typesOf(drop)).toEqual([EventType.Detaching, EventType.Released]);
    expect(drop[0]!.data).toMatchObject({
      operationId: 'op-unplug-drop',
      operation: 'unplug',
      reason: 'SuccessfulDelete',
    });
    // `keep` stayed Ready throughout: its phase never went back.
    expect(phase(name, 'keep')).toBe('Ready');

    // Unplug of the last volume: the pod goes, the status entry goes.
    removeVolume(h, ns, name, 'keep');
    await reportUnmounted(h, vmi, 'keep', 'op-unplug-keep');
    await vi.waitFor(() => {
      expect(attachmentPods(h, ns, name)).toHaveLength(0);
      expect(statusOf(h, ns, name, 'keep')).toBeUndefined();
    }, WAIT);
    expect(typesOf(eventsOf(h, ns, name, 'keep')).slice(-2)).toEqual([
      EventType.Detaching,
      EventType.Released,
    ]);
  });

  it('deletes the attachment pods when the launcher pod goes', async () => {
    const { name, launcher } = await plugged(['one']);
    h.sim.store.delete(Types.pods, ns, launcher.metadata.name ?? '', {
      gracePeriodSeconds: 0,
      propagationPolicy: 'Orphan',
    });
    await vi.waitFor(() => expect(attachmentPods(h, ns, name)).toHaveLength(0), WAIT);
  });
});

describe('coalescing (no fixed window: a pod at once, then one pod for what came meanwhile)', () => {
  it('makes at most 3 pods for 20 volumes added at once', async () => {
    const name = rand('vm');
    const { vmi } = await createRunningVmi(h, ns, name);
    const volumes = Array.from({ length: 20 }, (_, i) => `v${i}`);
    for (const v of volumes) createPvc(h, ns, `${name}-${v}`, 'Filesystem');
    await vi.waitFor(() => {
      for (const v of volumes)
        expect(h.sim.store.get(Types.persistentvolumeclaims, ns, `${name}-${v}`).status).toEqual(
          expect.objectContaining({ phase: 'Bound' }),
        );
    }, WAIT);
    const requests = volumes.map((v) => {
      addVolume(h, ns, name, v, { claim: `${name}-${v}` });
      return requestPlug(h, vmi, v, `op-${v}`);
    });
    await Promise.all(requests);
    await vi.waitFor(() => {
      for (const v of volumes) expect(phase(name, v)).toBe('Ready');
      expect(attachmentPods(h, ns, name)).toHaveLength(1);
    }, WAIT);
    expect(createdPodNames(h, name).length).toBeLessThanOrEqual(3);
    expect(attachmentPods(h, ns, name)[0]!.spec?.volumes).toHaveLength(21);
  }, 30_000);
});

describe('remove then re-add (KubeVirt #16159)', () => {
  it('ends Ready on a pod, never stuck Detaching', async () => {
    const { name, vmi } = await plugged(['flip']);
    // Issued in this order, as the spec-watcher issues them: the re-add is the newest.
    const [unplugOp, readdOp] = [1, 2].map((s) => newOperationId(new Date(Date.now() + s)));
    h.holdMount.add(`${ns}/${name}/flip`);
    removeVolume(h, ns, name, 'flip');
    await reportUnmounted(h, vmi, 'flip', unplugOp!);
    // Re-added at once; spec-watcher resets the entry (no phase) and keeps its pod.
    addVolume(h, ns, name, 'flip', { claim: `${name}-flip` });
    await requestPlug(h, vmi, 'flip', readdOp);
    resetForReadd(h.sim, ns, name, 'flip');
    await vi.waitFor(() => {
      const attached = eventsOf(h, ns, name, 'flip').filter(
        (e) => eventTypeOf(e) === EventType.AttachedToNode && e.data.operationId === readdOp,
      );
      expect(attached).toHaveLength(1);
      expect(phase(name, 'flip')).toBe('AttachedToNode');
    }, WAIT);
    const pods = attachmentPods(h, ns, name).filter(
      (p) => p.metadata.deletionTimestamp === undefined,
    );
    expect(pods).toHaveLength(1);
    expect(pods[0]!.spec?.volumes?.map((v) => v.name)).toContain('flip');
    expect(statusOf(h, ns, name, 'flip')?.hotplugVolume?.attachPodUID).toBe(pods[0]!.metadata.uid);
    // The chain mounts it again: Ready, and no `released` for the new operation.
    h.holdMount.delete(`${ns}/${name}/flip`);
    setPhase(h.sim, ns, name, 'flip', 'Ready');
    expect(phase(name, 'flip')).toBe('Ready');
    expect(
      eventsOf(h, ns, name, 'flip').filter(
        (e) => eventTypeOf(e) === EventType.Released && e.data.operationId === readdOp,
      ),
    ).toHaveLength(0);
  });
});

describe('a removal no stage told the orchestrator of', () => {
  it('sends the unplug down the node stages under the plug, again until they answer, then lets the pod go', async () => {
    // The kill soak (2026-12-07): the removal went down the node stages, a transient re-add
    // turned their chain into a mount, a restarted node-mounter undid it telling no one, and the
    // status lost the entry. Here: the volume leaves the spec and its entry goes, no work item.
    const { name, vmi } = await plugged(['lost']);
    const [pod] = attachmentPods(h, ns, name);
    removeVolume(h, ns, name, 'lost');
    writeVolumeStatus(h.sim, ns, name, (entries) => entries.filter((e) => e.name !== 'lost'));
    const asks = () =>
      h.domainWork.filter((w) => w.vmi === name && w.volume === 'lost' && w.operation === 'unplug');
    // Asked at once, from the informer's nudge, and again a second later with no answer.
    await vi.waitFor(() => expect(asks().length).toBeGreaterThanOrEqual(2), WAIT);
    for (const ask of asks()) {
      expect(ask).toMatchObject({ node: NODE, operationId: 'op-lost', cause: 'unplug-requested' });
      expect(ask.resync).toBeDefined();
    }
    expect(attachmentPods(h, ns, name).map((p) => p.metadata.uid)).toEqual([pod!.metadata.uid]);
    // The node stages answer under the plug's id: the pod goes, and nothing more is asked.
    await sendWork(h, vmi, 'lost', {
      operationId: 'op-lost',
      operation: 'unplug',
      cause: EventType.UnmountedFromPod,
    });
    await vi.waitFor(() => expect(attachmentPods(h, ns, name)).toHaveLength(0), WAIT);
    // The unit's last handling keeps nothing to ask again with (a nudge would be kept waiting).
    await vi.waitFor(() => {
      const settled = logs.lines.filter((l) => l.msg === 'work item settled' && l.vmi === name);
      expect(settled.at(-1)?.disposition).toEqual({ kind: 'done' });
      expect(service.stage.inFlight()).toBe(0);
    }, WAIT);
  }, 30_000);
});
