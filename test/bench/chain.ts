/** One volume through the chain: the spec patch, then the status entry as the watch reports it. */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
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
import type { Observer, VolumeView } from './observer.js';

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

/** plugctl's options for adding `claim` as disk `volume` (a PVC). */
export function optionsFor(claim: string, volume: string): AddVolumeOptions {
  const built = addVolumeOptionsFromFlags({ volumeName: claim, diskName: volume, source: 'pvc' });
  if (!built.ok) throw built.error;
  return built.value;
}

/** The most conflicting attempts {@link sendPatch} retries before it gives up. */
const MAX_CONFLICT_RETRIES = 200;
/** Upper bound of the random pause after a conflict, ms. */
const CONFLICT_JITTER_MS = 20;

/**
 * The pause before a patch that lost a conflict reads the object again: a random 0–20 ms, so that
 * writers of the same VMI that collided (the concurrent plugs of sections 3 and 6) spread out
 * instead of reading and colliding again in step. There is no condition to poll for: the retry
 * itself is the check. (kube's `retryOnConflict` waits at least its base delay; this keeps the
 * bench's patches as they always ran.)
 */
function conflictBackoff(): Promise<void> {
  return sleep(Math.random() * CONFLICT_JITTER_MS);
}

/**
 * Sends a virtctl-shaped patch (guarded by `test` ops), read and built again after each conflict;
 * returns the send time of the attempt that went through and how many conflicted before it.
 */
export async function sendPatch(
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
      if (!(err instanceof ConflictError) || conflicts > MAX_CONFLICT_RETRIES) throw err;
      await conflictBackoff();
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

type Spec = VirtualMachineInstance['spec'];

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
  change: (spec: Spec) => Spec,
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

/** What a burst does with each of its volumes. */
export interface BurstStep<V extends { volume: string }> {
  /** The volume's change to the spec, for the one patch that changes them all. */
  inSpec: (spec: Spec, v: V) => Spec;
  /** The volume's own plugctl request; resolves with its conflicting attempts. */
  request: (v: V) => Promise<number>;
  /** Whether the volume's status entry shows the burst's end for it. */
  done: (view: VolumeView | undefined) => boolean;
}

/**
 * A burst on one VMI, issued as `run.how` says: `addvolume` sends each volume's own plugctl
 * request (virtctl's: read, validate, a guarded patch, retried on conflict), at most `concurrency`
 * at once; `one-patch` changes them all in one guarded patch. Latencies are measured from each
 * volume's request until `step.done` holds for its status entry.
 */
export async function burst<V extends { volume: string }>(
  client: KubeClient,
  obs: Observer,
  where: { ns: string; vmi: string; volumes: V[] },
  run: { how: BurstIssue; timeoutMs: number },
  step: BurstStep<V>,
): Promise<BurstResult> {
  const { ns, vmi, volumes } = where;
  const { how, timeoutMs } = run;
  const sentAt = new Map<string, number>();
  const t0 = performance.now();
  let conflicts = 0;
  if (how.kind === 'one-patch') {
    for (const v of volumes) sentAt.set(v.volume, t0);
    conflicts = await onePatch(client, ns, vmi, (spec) => volumes.reduce(step.inSpec, spec));
  } else {
    await bounded(volumes.length, how.concurrency, async (i) => {
      const v = volumes[i]!;
      sentAt.set(v.volume, performance.now());
      // Not `conflicts += await ...`: that would read `conflicts` before the await.
      const retries = await step.request(v);
      conflicts += retries;
    });
  }
  const issuedMs = performance.now() - t0;
  const done = await Promise.all(
    volumes.map((v) => obs.untilVolume(`${ns}/${vmi}/${v.volume}`, step.done, timeoutMs)),
  );
  return {
    latencies: done.map((t, i) => t - (sentAt.get(volumes[i]!.volume) ?? t0)),
    allMs: Math.max(...done) - t0,
    issuedMs,
    conflicts,
  };
}

/** Plugging each volume of a burst into `vmi` (plugctl `addvolume`), done at its status `Ready`. */
export function plugEach(
  client: KubeClient,
  { ns, vmi }: { ns: string; vmi: string },
): BurstStep<{ volume: string; claim: string }> {
  return {
    inSpec: (spec, v) => applyAddVolumeToSpec(spec, optionsFor(v.claim, v.volume)),
    request: async (v) => {
      const flags = { volumeName: v.claim, diskName: v.volume };
      return (await addVolume(client, { namespace: ns, vmi, flags })).retries;
    },
    done: (view) => view?.phase === VolumePhase.Ready,
  };
}

/** Unplugging each volume of a burst (plugctl `removevolume`), done when its status entry is gone. */
export function unplugEach(
  client: KubeClient,
  { ns, vmi }: { ns: string; vmi: string },
): BurstStep<{ volume: string }> {
  return {
    inSpec: (spec, v) => applyRemoveVolumeFromSpec(spec, v.volume),
    request: async (v) =>
      (await removeVolume(client, { namespace: ns, vmi, volumeName: v.volume })).retries,
    done: (view) => view?.present === false,
  };
}
