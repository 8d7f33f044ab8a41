import type { VirtualMachineInstance, VolumeStatus } from '@plugline/contracts';
import { IN_USE_PHASES, isHotpluggable, VolumePhase } from '@plugline/contracts';
import type { AttachmentVolume, Pod } from './pod.js';
import { attachmentPodName, isPodRunningAndReady, volumesOfPod } from './pod.js';

/** Phases before a pod is attached: no phase yet (a request), `Pending`, `Bound`. */
const NOT_YET_ATTACHED: ReadonlySet<string> = new Set(['', VolumePhase.Pending, VolumePhase.Bound]);

export { IN_USE_PHASES };

export type PlanAction =
  | { type: 'createPod'; name: string; volumes: AttachmentVolume[] }
  | {
      type: 'deletePod';
      name: string;
      uid?: string;
      reason: 'replaced' | 'unused' | 'launcherGone';
    }
  | { type: 'attachedToNode'; volume: string; pod: { name: string; uid: string }; node: string }
  | { type: 'detaching'; volume: string; pod: string }
  | { type: 'released'; volume: string }
  | {
      type: 'wait';
      reason: 'podPending' | 'podTerminating' | 'newPodNotRunning' | 'volumeInUse';
      detail: string;
    };

export interface PlanInput {
  vmi: VirtualMachineInstance;
  /** The launcher pod; undefined (or terminating) when it is gone. */
  launcherPod: Pod | undefined;
  /** The hotplug volumes whose claims are ready to attach (`pvcReadiness`). */
  desiredReady: readonly AttachmentVolume[];
  /** This VMI's attachment pods, as the informer sees them. */
  pods: readonly Pod[];
  volumeStatus: readonly VolumeStatus[];
  /**
   * Volumes that must not lose their pod yet (the launcher may still use them). Defaults to
   * the volumes whose status phase is in {@link IN_USE_PHASES}.
   */
  inUse?: ReadonlySet<string>;
}

const sameSet = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

const terminating = (pod: Pod): boolean => pod.metadata.deletionTimestamp !== undefined;

function launcherGone(input: PlanInput): boolean {
  const phase = input.vmi.status?.phase;
  return (
    input.launcherPod === undefined ||
    terminating(input.launcherPod) ||
    input.vmi.metadata.deletionTimestamp !== undefined ||
    phase === 'Succeeded' ||
    phase === 'Failed'
  );
}

function deleteAction(pod: Pod, reason: 'replaced' | 'unused' | 'launcherGone'): PlanAction {
  const action: PlanAction = { type: 'deletePod', name: pod.metadata.name ?? '', reason };
  if (pod.metadata.uid !== undefined) action.uid = pod.metadata.uid;
  return action;
}

/** Create the pod for the ready set unless one carries it, or a pod of ours is still starting. */
function planCreate(
  input: PlanInput,
  desired: string[],
  live: Pod[],
): { current: Pod | undefined; actions: PlanAction[] } {
  if (desired.length === 0) return { current: undefined, actions: [] };
  const current = live.find((p) => sameSet(volumesOfPod(p), desired));
  if (current !== undefined) return { current, actions: [] };
  const pending = live.find((p) => p.status?.phase === undefined || p.status.phase === 'Pending');
  if (pending !== undefined) {
    // Coalescing: the starting pod finishes first; then one pod for everything accumulated.
    return {
      current: undefined,
      actions: [{ type: 'wait', reason: 'podPending', detail: pending.metadata.name ?? '' }],
    };
  }
  const name = attachmentPodName(input.vmi, desired);
  const sameName = input.pods.find((p) => p.metadata.name === name);
  if (sameName !== undefined) {
    return {
      current: undefined,
      actions: [{ type: 'wait', reason: 'podTerminating', detail: name }],
    };
  }
  const volumes = [...input.desiredReady].sort((a, b) => (a.name < b.name ? -1 : 1));
  return { current: undefined, actions: [{ type: 'createPod', name, volumes }] };
}

/**
 * `attachedToNode` for each wanted volume a running pod carries and its status does not show
 * attached through that pod. The pod for the whole set comes first; a volume it does not carry
 * yet (it is still starting) is attached through an older running pod that carries it, as
 * KubeVirt's virt-controller does: volumes added while a pod started need not wait for the next
 * pod to have those the first one carries. Once the pod for the whole set runs, every volume
 * moves to it (the old pods then go, see {@link planDeletes}).
 */
function planAttached(
  input: PlanInput,
  current: Pod | undefined,
  live: readonly Pod[],
  desired: readonly string[],
  statusOf: Map<string, VolumeStatus>,
): PlanAction[] {
  const running = [current, ...live.filter((p) => p !== current)].filter(
    (p): p is Pod => p !== undefined && isPodRunningAndReady(p),
  );
  const wanted = new Set(desired);
  const placed = new Set<string>();
  const actions: PlanAction[] = [];
  for (const carrier of running) {
    const pod = { name: carrier.metadata.name ?? '', uid: carrier.metadata.uid ?? '' };
    const node = carrier.spec?.nodeName ?? input.launcherPod?.spec?.nodeName ?? '';
    for (const volume of volumesOfPod(carrier)) {
      if (!wanted.has(volume) || placed.has(volume)) continue;
      placed.add(volume);
      // Also a volume whose entry names this pod but shows no attachment: a re-add reset the
      // entry of a volume whose pod stayed (KubeVirt #16159), and its new operation needs the fact.
      const status = statusOf.get(volume);
      if (
        status?.hotplugVolume?.attachPodUID !== pod.uid ||
        NOT_YET_ATTACHED.has(status.phase ?? '')
      )
        actions.push({ type: 'attachedToNode', volume, pod, node });
    }
  }
  return actions;
}

/** Old pods go once the new pod runs and nothing only they carry is still in use (KubeVirt #10275, #14998). */
function planDeletes(
  current: Pod | undefined,
  desired: string[],
  old: Pod[],
  statusOf: Map<string, VolumeStatus>,
  isInUse: (volume: string) => boolean,
): PlanAction[] {
  const actions: PlanAction[] = [];
  const successorReady =
    desired.length === 0 || (current !== undefined && isPodRunningAndReady(current));
  const carried = new Set(current === undefined ? [] : volumesOfPod(current));
  for (const pod of old) {
    const name = pod.metadata.name ?? '';
    if (!successorReady) {
      actions.push({ type: 'wait', reason: 'newPodNotRunning', detail: name });
      continue;
    }
    const leaving = volumesOfPod(pod).filter((v) => !carried.has(v));
    const inUse = leaving.filter(isInUse);
    if (inUse.length > 0) {
      actions.push({ type: 'wait', reason: 'volumeInUse', detail: `${name}: ${inUse.join(',')}` });
      continue;
    }
    actions.push(deleteAction(pod, current === undefined ? 'unused' : 'replaced'));
    for (const volume of leaving) {
      if (statusOf.has(volume) && !desired.includes(volume))
        actions.push({ type: 'detaching', volume, pod: name });
    }
  }
  return actions;
}

/** Volumes that left the spec and are on no pod any more: their unplug is done here. */
function planReleased(input: PlanInput): PlanAction[] {
  const inSpec = new Set((input.vmi.spec.volumes ?? []).filter(isHotpluggable).map((v) => v.name));
  const onPods = new Set(input.pods.flatMap(volumesOfPod));
  return input.volumeStatus
    .filter((s) => !inSpec.has(s.name) && s.hotplugVolume !== undefined && !onPods.has(s.name))
    .map((s) => ({ type: 'released' as const, volume: s.name }));
}

/**
 * One reconcile of a VMI's attachment pods, as KubeVirt's virt-controller does it: one pod for
 * the whole ready set; no new pod while one of ours is Pending (changes coalesce); an old pod
 * deleted only once the new one runs and none of the volumes only it carries is `MountedToPod`
 * or `Ready`; everything deleted when the launcher is gone. Pure: returns the actions.
 */
export function planAttachment(input: PlanInput): PlanAction[] {
  if (launcherGone(input)) {
    return input.pods.filter((p) => !terminating(p)).map((p) => deleteAction(p, 'launcherGone'));
  }
  const statusOf = new Map(input.volumeStatus.map((s) => [s.name, s]));
  const isInUse = (v: string): boolean =>
    input.inUse?.has(v) ?? IN_USE_PHASES.has(statusOf.get(v)?.phase ?? '');
  const desired = [...new Set(input.desiredReady.map((v) => v.name))].sort();
  const live = input.pods.filter((p) => !terminating(p));
  const { current, actions } = planCreate(input, desired, live);
  const old = live.filter(
    (p) =>
      p !== current &&
      !(
        current === undefined &&
        actions.some((a) => a.type === 'wait' && a.reason === 'podPending') &&
        isStarting(p)
      ),
  );
  return [
    ...actions,
    ...planAttached(input, current, live, desired, statusOf),
    ...planDeletes(current, desired, old, statusOf, isInUse),
    ...planReleased(input),
  ];
}

function isStarting(pod: Pod): boolean {
  return pod.status?.phase === undefined || pod.status.phase === 'Pending';
}
