export {
  PluglineError,
  InvalidRequestError,
  InvalidNameError,
  MalformedMessageError,
  ConfigError,
  NotFoundError,
  ConflictError,
  TransientError,
  TerminalError,
  PathEscapeError,
  HypervisorError,
  errors,
  asError,
} from './errors.js';
export type { RequestErrorStatus, MalformedReason } from './errors.js';

export {
  nameProblem,
  assertName,
  isName,
  MAX_LABEL_LENGTH,
  MAX_SUBDOMAIN_LENGTH,
} from './names.js';
export type { NameKind } from './names.js';

export {
  Stage,
  STAGES,
  NODE_STAGES,
  SUBJECT_ROOT,
  WORK_PREFIX,
  EVENTS_PREFIX,
  DEAD_LETTER_PREFIX,
  NO_NODE,
  WORK_PLACEHOLDER_SUBJECT,
  EVENTS_PLACEHOLDER_SUBJECT,
  encodeToken,
  decodeToken,
  workSubject,
  workFilter,
  eventSubject,
  eventFilter,
  deadLetterSubject,
  parseWorkSubject,
  parseEventSubject,
} from './subjects.js';
export type { VolumeKey, WorkAddress, ParseResult } from './subjects.js';

export {
  MAX_MESSAGE_BYTES,
  EventType,
  EVENT_TYPES,
  CLOUDEVENT_TYPE_PREFIX,
  eventTypeOf,
  traceIdOf,
  keyOfEvent,
  eventMsgId,
  workMsgId,
  compareOperationIds,
  newOperationId,
  RESYNC_CAUSE,
  resyncRoundOf,
  buildEvent,
  decodeWorkItem,
  decodeEvent,
  encodeMessage,
  EVENT_DATA_REQUIREMENTS,
} from './messages.js';
export type { OperationKind, EventData, VolumeEvent, WorkItem, NewEvent } from './messages.js';

export {
  DiskBus,
  HOTPLUG_DISK_BUSES,
  HOTPLUG_LUN_BUSES,
  DriverCache,
  DriverIO,
  DiskErrorPolicy,
  PersistentVolumeMode,
  VirtualMachineInstancePhase,
  KUBEVIRT_GROUP,
  KUBEVIRT_VERSION,
  CDI_GROUP,
  CDI_VERSION,
  KubevirtLabel,
  LAUNCHER_LABEL_VALUE,
  HOTPLUG_DISK_LABEL_VALUE,
  HOTPLUG_DISKS_VOLUME,
  ATTACHMENT_POD_PREFIX,
  claimNameOf,
  vmiUidOfPod,
  isHotpluggable,
} from './kubevirt.js';
export type {
  ObjectMeta,
  OwnerReference,
  DiskTarget,
  LunTarget,
  CDRomTarget,
  Disk,
  PersistentVolumeClaimVolumeSource,
  DataVolumeSource,
  Volume,
  HotplugVolumeSource,
  AddVolumeOptions,
  RemoveVolumeOptions,
  PersistentVolumeClaimInfo,
  HotplugVolumeStatus,
  VolumeStatus,
  VirtualMachineInstanceSpec,
  VirtualMachineInstanceStatus,
  VirtualMachineInstance,
  VirtualMachineSpec,
  VirtualMachine,
} from './kubevirt.js';

export {
  MAX_SERIAL_LENGTH,
  SERIAL_PATTERN,
  DRY_RUN_ALL,
  RequestMessage,
  VIRTCTL_CACHE_MODES,
  validateHotplugDisk,
  validateAddVolume,
  validateRemoveVolume,
  addVolumeOptionsFromFlags,
  applyAddVolumeToSpec,
  applyRemoveVolumeFromSpec,
  buildAddVolumePatch,
  buildRemoveVolumePatch,
} from './validation.js';
export type { ValidationResult, AddVolumeFlags, JsonPatchOperation } from './validation.js';

export {
  VolumePhase,
  VOLUME_PHASES,
  PLUG_PHASES,
  UNPLUG_PHASES,
  IN_USE_PHASES,
  Reason,
  KubeEventType,
  PhaseMessage,
  PHASE_TRANSITIONS,
  PHASE_OF_EVENT,
  isVolumePhase,
  canTransition,
  isUnplugPhase,
  isPlugPhase,
  phaseOfEvent,
  pendingReasonFor,
  renderMessage,
  failureEndsOperation,
} from './phases.js';
export type { PhaseOfEvent } from './phases.js';

export { buildVolumeStatus, applyEventToVolumeStatus } from './status.js';
export type { VolumeStatusInput, StatusProjection } from './status.js';

export { cloneJson } from './json.js';
