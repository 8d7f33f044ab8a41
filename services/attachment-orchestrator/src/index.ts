export {
  attachmentPodName,
  buildAttachmentPod,
  volumesOfPod,
  isPodRunningAndReady,
  AttachmentPodError,
  HOTPLUG_CONTAINER_NAME,
  HOTPLUG_MOUNT_PATH,
  HOTPLUG_COMMAND,
  HOTPLUG_RUN_AS_USER,
  DEFAULT_HOTPLUG_RESOURCES,
  ATTACHMENT_POD_TOLERATIONS,
} from './pod.js';
export type {
  Pod,
  PodContainer,
  PodVolume,
  Toleration,
  ResourceRequirements,
  VolumeMode,
  AttachmentVolume,
  AttachmentPodInput,
} from './pod.js';

export { pvcReadiness, isSucceededOrPendingPopulation, DataVolumePhase } from './pvc.js';
export type { PersistentVolumeClaim, DataVolume, PvcReadiness, PvcReadinessInput } from './pvc.js';

export { planAttachment, IN_USE_PHASES } from './plan.js';
export type { PlanAction, PlanInput } from './plan.js';

export {
  decide,
  initialState,
  recordWork,
  isNudge,
  NudgeCause,
  statusChangeNudges,
  Rest,
} from './reconcile.js';
export type {
  Observation,
  VmiRef,
  VolumeOps,
  OperationRef,
  UnitState,
  Effect,
  Decision,
  DecideOptions,
} from './reconcile.js';

export { createOrchestratorMachine, orchestratorDisposition } from './machine.js';
export type { OrchestratorContext, OrchestratorInput, OrchestratorMachine } from './machine.js';

export { createClusterView, findLauncher } from './cluster.js';
export type { ClusterView, ClusterViewOptions, Nudge } from './cluster.js';

export { startAttachmentOrchestrator, applyEffects } from './service.js';
export type { AttachmentOrchestrator, OrchestratorDeps, ServiceConfig } from './service.js';

export { defaults, parseConfig } from './config.js';
export type { OrchestratorConfig } from './config.js';
