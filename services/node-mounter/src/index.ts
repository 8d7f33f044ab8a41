export {
  VolumeMode,
  KubeletLayout,
  assertPlainSegment,
  assertUid,
  assertLabelSegment,
  isLexicallyInside,
  joinInsideRoot,
  assertRealPathInsideRoot,
  assertRealPathInsidePod,
  MAX_SEGMENT_BYTES,
  podDirPath,
  pluginsDirPath,
  resolveInsideRoot,
  launcherHotplugDirPath,
  attachmentFilesystemSourcePath,
  attachmentBlockSourcePath,
  targetName,
  targetPathIn,
  launcherHotplugDir,
  attachmentFilesystemSource,
  attachmentBlockSource,
  targetPath,
} from './paths.js';

export { unescapeMountField, parseMountInfoLine, parseMountInfo, mountsAt } from './mountinfo.js';
export type { MountInfoEntry } from './mountinfo.js';

export {
  CgroupError,
  ForeignVolumeError,
  MountError,
  SourceNotFoundError,
  WrongFileKindError,
} from './errors.js';

export {
  SELF_MOUNTINFO,
  QEMU_OWNERSHIP,
  CgroupVersion,
  CGROUP_V2_UNSUPPORTED,
  readMountTable,
  mountsOn,
  isMountedOn,
  isMountedOnByMountIds,
  mountFilesystem,
  unmountFilesystem,
  splitDeviceNumber,
  blockDeviceNumber,
  applyOwnership,
  createBlockNode,
  removeBlockNode,
  deviceRule,
  allowDevice,
  denyDevice,
  readDeviceRules,
} from './mounter.js';
export type {
  Ownership,
  MountFilesystemResult,
  UnmountFilesystemResult,
  DeviceNumber,
  BlockNodeResult,
  RemoveBlockNodeResult,
  CgroupResult,
} from './mounter.js';

export {
  ReconcileActionType,
  checkpointPath,
  parseCheckpointEntry,
  parseCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  loadAllCheckpoints,
  removeAbandonedTempFiles,
  withEntry,
  withoutVolume,
  reconcileAtStart,
} from './checkpoint.js';
export type {
  CheckpointEntry,
  LoadedCheckpoint,
  ReconcileAction,
  ReconcileInput,
} from './checkpoint.js';

export {
  nodeMounterMachine,
  MounterState,
  backoffDelay,
  isTerminalError,
  summarizeError,
} from './machine.js';
export type {
  VolumeIdentity,
  LocatedSource,
  EffectFacts,
  ErrorSummary,
  Direction,
  MounterContext,
  MounterInput,
  MounterEvent,
  BackoffInput,
  LocateInput,
  MountInput,
  UnmountInput,
  NodeMounterMachine,
  NodeMounterSnapshot,
  NodeMounterActor,
} from './machine.js';

export { NodeMounter } from './node-mounter.js';
export type {
  NodeMounterOptions,
  PlugRequest,
  UnplugRequest,
  LocatedVolume,
  CgroupOutcome,
  MountedFact,
  UnmountedFact,
  ReconcileOutcome,
  ReconcileReport,
} from './node-mounter.js';

export { backoffActor, nodeMounterActors } from './actors.js';
export type { BackoffOptions } from './actors.js';

export { defaults, parseConfig } from './config.js';
export type { NodeMounterConfig } from './config.js';

export {
  DecisionKind,
  DecisionReason,
  RELEASE_CAUSE,
  decide,
  launcherPodsOf,
  attachmentPodsWith,
  hotplugVolumesOf,
  domainHolds,
  vmiKeyOfPod,
  vmiPodsKey,
  wantedVolumes,
} from './decide.js';
export type { Decision, PodView, PvcView, VolumeView } from './decide.js';

export {
  CgroupState,
  retryDelay,
  waitDelay,
  mountedFact,
  unmountedFact,
  domainUpdaterWork,
  orchestratorWork,
  mounterStageMachine,
  mounterStageActors,
} from './stage-machine.js';
export type {
  PlugResult,
  UnplugResult,
  MounterStageContext,
  MounterWorkEvent,
  MounterStageMachine,
  MounterStageSnapshot,
  MounterEffects,
} from './stage-machine.js';

export { startNodeMounter } from './service.js';
export type { NodeMounterDeps, NodeMounterService } from './service.js';
export { bindMount, isMountRoot, makeDeviceNumber, unmount } from './host-calls.js';
