export { connectBus } from './connection.js';
export type { Bus, BusOptions } from './connection.js';

export {
  ServerFeature,
  FEATURE_MIN_VERSION,
  parseServerVersion,
  compareVersions,
  supportsFeature,
  requireFeatures,
  checkStreamConfig,
  checkConsumerConfig,
} from './version.js';
export type { ServerVersion } from './version.js';

export {
  UnsupportedFeatureError,
  BusClosedError,
  LeaseLostError,
  SettleTimeoutError,
  StepDownError,
  ReplyLostError,
  isReplyLost,
} from './errors.js';

export {
  StreamName,
  STREAM_SUBJECTS,
  durableName,
  snapshotBucket,
  leaseBucket,
  kvKey,
} from './names.js';

export {
  provision,
  ensureStreams,
  ensureConsumer,
  ensureStageBuckets,
  consumerConfig,
} from './provision.js';
export type {
  ProvisionOptions,
  StreamOptions,
  ConsumerOptions,
  StageBuckets,
} from './provision.js';

export { Publisher, abortableDelay } from './publish.js';
export { ackWaitMsOf, KeptConsumption, type KeptConsumptionOptions } from './consume.js';
export {
  StallAction,
  StallWatch,
  stepDownConsumerLeader,
  type StallWatchOptions,
} from './stall.js';
export type { PublishRetryOptions, RawPublish, PublishKind } from './publish.js';

export { LeaseManager } from './lease.js';
export { Slots } from './slots.js';
export { BoundedMap } from './bounded-map.js';
export type { Lease, LeaseResult } from './lease.js';

export { fact, nextWork } from './outbox.js';
export type { FactSpec, WorkSpec, StageEmitted, OutboxEntry } from './outbox.js';

export {
  runStage,
  defaultDisposition,
  isSettled,
  readUnitContext,
  readUnitState,
  StageTag,
  waitsOnNothing,
} from './runtime.js';
export { WorkLeftovers } from './work-reaper.js';
export type { ReapedItems } from './work-reaper.js';
export { SequenceGap } from './sequence-gap.js';
export { WorkQueueRepair } from './work-repair.js';
export type { WorkRepairs } from './work-repair.js';
export type { ConsumedStream } from './sequence-gap.js';
export {
  ReapRefusedError,
  subjectMatches,
  doneUpTo,
  MAX_REQUEUES,
  REQUEUES_HEADER,
} from './work-items.js';
export type { WorkConsumer, RequeuedItem } from './work-items.js';
export { startWorkJanitor } from './work-janitor.js';
export type { WorkJanitor, WorkJanitorOptions } from './work-janitor.js';
export { StuckWork, STUCK_AFTER_ACK_WAITS } from './stuck-work.js';
export type { StuckWorkOptions, StuckWorkRepair } from './stuck-work.js';
export type {
  StageOptions,
  StageRunner,
  StageContext,
  WorkEvent,
  Disposition,
  Delivery,
  UnitState,
} from './runtime.js';

export {
  envText,
  envRequired,
  envInteger,
  envBoolean,
  envOneOf,
  envAbsolutePath,
  envLogLevel,
  envNatsUrls,
  envNatsAuth,
  envTraceExport,
  Secret,
  absolutePath,
  serviceBaseDefaults,
  parseServiceBaseConfig,
  parseNodeConfig,
} from './service-config.js';
export type {
  Env,
  ServiceBaseConfig,
  NodeConfig,
  NatsAuth,
  TraceExport,
} from './service-config.js';

export { runServiceMain } from './service-main.js';
export type { RunningService, ServiceMainOptions } from './service-main.js';
