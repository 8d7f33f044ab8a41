export {
  domainUpdaterMachine,
  UpdaterState,
  NudgeCause,
  RESYNC_CAUSE,
  DETACHED_CAUSE,
  DETACH_TIMEOUT_REASON,
  REPLUG_GRACE_MS,
  retryDelay,
  isRejection,
  problemOf,
} from './machine.js';
export type {
  DomainUpdaterMachine,
  DomainUpdaterSnapshot,
  DomainUpdaterContext,
  DomainUpdaterEvent,
  DomainUpdaterInput,
  AttachInput,
  AttachOutput,
  ConfirmInput,
  ConfirmOutput,
  DetachInput,
  DetachOutput,
} from './machine.js';

export { asObservation, ObservationKind } from './observation.js';
export type { Observation, PlugPlan, Problem } from './observation.js';

export {
  createObserver,
  createdByKeys,
  chooseTarget,
  findLauncher,
  runsOn,
  specDiskOf,
  busOf,
  TargetReservations,
} from './observe.js';
export type { LaunchersOf, Observer, ObserverDeps, PodLike, PvcLike } from './observe.js';

export {
  assertPodUID,
  checkedHotplugSource,
  hotplugHostDir,
  launcherPodDir,
  WrongSourceKindError,
} from './paths.js';

export { DeviceEventLog, createActors } from './adapters.js';
export type { ActorDeps } from './adapters.js';

export { defaults, parseConfig, HypervisorKind, DiskSourceDir } from './config.js';
export type { DomainUpdaterConfig } from './config.js';

export { startDomainUpdater, provisionDomainUpdater } from './service.js';
export type { DomainUpdater, DomainUpdaterDeps, DomainUpdaterSettings } from './service.js';
