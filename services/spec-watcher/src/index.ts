export { diffVolumes, hotplugVolumesOf, isHotplugStatus } from './diff.js';
export type { VolumeDiff } from './diff.js';

export { diffTemplateToVmi, templateVolumeChanges } from './template.js';
export type { TemplateChanges } from './template.js';

export { projectStatus, projectAll, statusEqual, buildStatusPatch } from './project.js';
export type { NewestOperation, ProjectionContext, Projection, KubeEvent } from './project.js';

export {
  planVolumeOperations,
  resyncWork,
  nextStageFor,
  routeFor,
  desiredDirections,
} from './plan.js';
export type { OperationRef, OperationBook, SyncInput, SyncPlan, Route } from './plan.js';

// Operation ids are issued here; their format and order are the contracts' (every stage reads them).
export { newOperationId, compareOperationIds } from '@plugline/contracts';
export { jsonEqual, canonicalJson } from './patch.js';
export type { JsonPatchOp } from './patch.js';

export { volumePhaseMachine } from './machine.js';
export type {
  PhaseEvent,
  VolumeMachineContext,
  VolumeMachineInput,
  RenderInput,
  FailureInput,
} from './machine.js';

export { phaseRank, UNPLUG_PHASE_SET, HOTPLUG_ONLY_PHASES, IN_USE_PHASES } from './phase-sets.js';

export {
  decisionMachine,
  bookedOperation,
  decideEvent,
  decisionNudge,
  viewOf,
  RESYNC_CAUSE,
  ENTRY_REMOVED_CAUSE,
  ENTRY_RETURNED_CAUSE,
  REVERSED_CAUSE,
  reversedNudgeId,
  SPEC_CAUSE,
} from './decision.js';
export type { DecideEvent, DecisionContext, VolumeView } from './decision.js';

export { ensureProjectorConsumer, startProjector, PROJECTOR_CONSUMER } from './projector.js';
export type { Projector, ProjectorOptions } from './projector.js';

export { TemplateSync } from './declarative.js';
export type { TemplateSyncOptions, TemplateSyncResult } from './declarative.js';

export { startSpecWatcher } from './service.js';
export type { SpecWatcherDeps, SpecWatcherService } from './service.js';

export { defaults, parseConfig } from './config.js';
export type { SpecWatcherConfig } from './config.js';
