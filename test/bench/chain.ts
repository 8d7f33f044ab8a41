/** One volume through the chain: the spec patch, then the status entry as the watch reports it. */
import { performance } from 'node:perf_hooks';
import { addVolume, removeVolume } from '@plugline/cli';
import {
  ConflictError,
  VolumePhase,
  addVolumeOptionsFromFlags,
  applyAddVolumeToSpec,
  applyRemoveVolumeFromSpec,
  buildAddVolumePatch,
  buildRemoveVolumePatch,
  type AddVolumeOptions,
  type VirtualMachineInstance,
} from '@plugline/contracts';
import type { KubeClient } from '@plugline/kube';
import type { Observer } from './observer.js';

/** Stages of a plug, each from the previous fact (first from the spec patch). */
export const PLUG_STAGES = [
  ['spec-watcher', 'requested'],
  ['attachment-orchestrator', 'attached-to-node'],
  ['node-mounter', 'mounted-to-pod'],
  ['domain-updater', 'ready'],
  ['projector (status Ready)', '$status'],
] as const;

export const UNPLUG_STAGES = [
  ['spec-watcher', 'unplug-requested'],
  ['domain-updater', 'detached-from-domain'],
  ['node-mounter', 'unmounted-from-pod'],
  ['attachment-orchestrator', 'released'],
  ['projector (entry removed)', '$status'],
] as const;

export interface OpResult {
  key: string;
  /** Spec patch sent → status Ready (plug) or status entry gone (unplug), ms. */
  latencyMs: number;
  /** Stage → ms (missing facts are left out). */
  stages: Record<string, number>;
  /** Conflicting patch attempts before the one that went through. */
  conflicts: number;
}

function optionsFor(claim: string, volume: string): AddVolumeOptions {
  const built = addVolumeOptionsFromFlags({ volumeName: claim, diskName: volume, source: 'pvc' });
  if (!built.ok) throw built.error;
  return built.value;
}

/** Sends a virtctl-shaped patch (guarded by `test` ops), retried on conflict; returns its send time. */
async function sendPatch(
  client: KubeClient,
  ns: string,
  vmi: string,
  build: (
    current: Awaited<ReturnType<KubeClient['getVmi']>>,
  ) => Parameters<KubeClient['patchVmi']>[2],
): Promise<{ t0: number; conflicts: number }> {
  for (let conflicts = 0; ; conflicts++) {
    const current = await client.getVmi(ns, vmi);
    const ops = build(current);
    const t0 = performance.now();
    try {
      await client.patchVmi(ns, vmi, ops);
      return { t0, conflicts };
    } catch (err) {
      if (!(err instanceof ConflictError) || conflicts > 200) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 20));
    }
  }
}

function stagesOf(
  obs: Observer,
  key: string,
  t0: number,
  tEnd: number,
  table: typeof PLUG_STAGES | typeof UNPLUG_STAGES,
): Record<string, number> {
  const facts = obs.firstEvents(key, t0);
  const stages: Record<string, number> = {};
  let prev = t0;
  for (const [stage, type] of table) {
    const t = type === '$status' ? tEnd : facts.get(type)?.t;
    if (t === undefined) continue;
    stages[stage] = t - prev;
    prev = t;
  }
  return stages;
}

export async function plug(
  client: KubeClient,
  obs: Observer,
  where: { ns: string; vmi: string; volume: string; claim: string },
  timeoutMs = 60_000,
): Promise<OpResult> {
  const { ns, vmi, volume, claim } = where;
  const key = `${ns}/${vmi}/${volume}`;
  const opts = optionsFor(claim, volume);
  const { t0, conflicts } = await sendPatch(client, ns, vmi, (cur) =>
    buildAddVolumePatch(cur, opts),
  );
  const tEnd = await obs.untilVolume(key, (v) => v?.phase === VolumePhase.Ready, timeoutMs);
  return {
    key,
    latencyMs: tEnd - t0,
    stages: stagesOf(obs, key, t0, tEnd, PLUG_STAGES),
    conflicts,
  };
}

export async function unplug(
  client: KubeClient,
  obs: Observer,
  where: { ns: string; vmi: string; volume: string },
  timeoutMs = 60_000,
): Promise<OpResult> {
  const { ns, vmi, volume } = where;
  const key = `${ns}/${vmi}/${volume}`;
  const { t0, conflicts } = await sendPatch(client, ns, vmi, (cur) =>
    buildRemoveVolumePatch(cur, volume),
  );
  const tEnd = await obs.untilVolume(key, (v) => v?.present === false, timeoutMs);
  return {
    key,
    latencyMs: tEnd - t0,
    stages: stagesOf(obs, key, t0, tEnd, UNPLUG_STAGES),
    conflicts,
  };
}

/** Runs `tasks` with at most `limit` in flight; results in task order. */
export async function bounded<T>(
  count: number,
  limit: number,
  task: (i: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return results;
}

/** How a burst of volume requests reaches the API server (section 4). */
export type BurstIssue = { kind: 'addvolume'; concurrency: number } | { kind: 'one-patch' };

export interface BurstResult {
  /** Per volume: its request sent → its status Ready (plug) or its entry gone (unplug), ms. */
  latencies: number[];
  /** First request sent → the last volume Ready (or gone), ms. */
  allMs: number;
  /** First request sent → the last request answered (all in the spec), ms. */
  issuedMs: number;
  /** Conflicting patch attempts retried. */
  conflicts: number;
}

/**
 * The one guarded patch that changes every volume at once (as virt-api's, for many volumes):
 * `test` ops on the volumes and disks read, then the new lists; retried on conflict.
 */
async function onePatch(
  client: KubeClient,
  ns: string,
  vmi: string,
  change: (spec: VirtualMachineInstance['spec']) => VirtualMachineInstance['spec'],
): Promise<number> {
  const { conflicts } = await sendPatch(client, ns, vmi, (current) => {
    const after = change(current.spec);
    const lists = [
      ['/spec/volumes', current.spec.volumes, after.volumes ?? []],
      [
        '/spec/domain/devices/disks',
        current.spec.domain?.devices?.disks,
        after.domain.devices.disks ?? [],
      ],
    ] as const;
    return [
      ...lists.map(([path, before]) => ({ op: 'test' as const, path, value: before ?? null })),
      ...lists.map(([path, before, value]) => ({
        op: before !== undefined && before.length > 0 ? ('replace' as const) : ('add' as const),
        path,
        value,
      })),
    ];
  });
  return conflicts;
}

/**
 * Plugs `volumes` into one VMI as a burst, issued as `how` says: `addvolume` runs plugctl's
 * `addVolume` (virtctl's: read, validate, a guarded patch, retried on conflict) for each, at most
 * `concurrency` at once; `one-patch` adds them all in one guarded patch. Latencies are measured
 * from each volume's request to its status `Ready`.
 */
export async function burstPlug(
  client: KubeClient,
  obs: Observer,
  where: { ns: string; vmi: string; volumes: { volume: string; claim: string }[] },
  how: BurstIssue,
  timeoutMs: number,
): Promise<BurstResult> {
  const { ns, vmi, volumes } = where;
  const sentAt = new Map<string, number>();
  const t0 = performance.now();
  let conflicts = 0;
  if (how.kind === 'one-patch') {
    for (const v of volumes) sentAt.set(v.volume, t0);
    conflicts = await onePatch(client, ns, vmi, (spec) =>
      volumes.reduce((acc, v) => applyAddVolumeToSpec(acc, optionsFor(v.claim, v.volume)), spec),
    );
  } else {
    await bounded(volumes.length, how.concurrency, async (i) => {
      const v = volumes[i]!;
      sentAt.set(v.volume, performance.now());
      const r = await addVolume(client, {
        namespace: ns,
        vmi,
        flags: { volumeName: v.claim, diskName: v.volume },
      });
      conflicts += r.retries;
    });
  }
  const issuedMs = performance.now() - t0;
  const ready = await Promise.all(
    volumes.map((v) =>
      obs.untilVolume(
        `${ns}/${vmi}/${v.volume}`,
        (view) => view?.phase === VolumePhase.Ready,
        timeoutMs,
      ),
    ),
  );
  return {
    latencies: ready.map((t, i) => t - (sentAt.get(volumes[i]!.volume) ?? t0)),
    allMs: Math.max(...ready) - t0,
    issuedMs,
    conflicts,
  };
}

/** Unplugs a burst as {@link burstPlug} plugged it; latencies to the status entry gone. */
export async function burstUnplug(
  client: KubeClient,
  obs: Observer,
  where: { ns: string; vmi: string; volumes: { volume: string }[] },
  how: BurstIssue,
  timeoutMs: number,
): Promise<BurstResult> {
  const { ns, vmi, volumes } = where;
  const sentAt = new Map<string, number>();
  const t0 = performance.now();
  let conflicts = 0;
  if (how.kind === 'one-patch') {
    for (const v of volumes) sentAt.set(v.volume, t0);
    conflicts = await onePatch(client, ns, vmi, (spec) =>
      volumes.reduce((acc, v) => applyRemoveVolumeFromSpec(acc, v.volume), spec),
    );
  } else {
    await bounded(volumes.length, how.concurrency, async (i) => {
      const v = volumes[i]!;
      sentAt.set(v.volume, performance.now());
      const r = await removeVolume(client, { namespace: ns, vmi, volumeName: v.volume });
      conflicts += r.retries;
    });
  }
  const issuedMs = performance.now() - t0;
  const gone = await Promise.all(
    volumes.map((v) =>
      obs.untilVolume(`${ns}/${vmi}/${v.volume}`, (view) => view?.present === false, timeoutMs),
    ),
  );
  return {
    latencies: gone.map((t, i) => t - (sentAt.get(volumes[i]!.volume) ?? t0)),
    allMs: Math.max(...gone) - t0,
    issuedMs,
    conflicts,
  };
}
