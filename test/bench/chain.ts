/** One volume through the chain: the spec patch, then the status entry as the watch reports it. */
import { performance } from 'node:perf_hooks';
import {
  ConflictError,
  VolumePhase,
  addVolumeOptionsFromFlags,
  buildAddVolumePatch,
  buildRemoveVolumePatch,
  type AddVolumeOptions,
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
