export {
  startNats,
  startNatsCluster,
  findNatsServer,
  chooseEngine,
  freePort,
  natsHealthy,
  streamStoreFolder,
  rollBackStreamAround,
} from './nats-server.js';
export type { NatsServer, NatsCluster, NatsEngine, StartNatsOptions } from './nats-server.js';

export { dockerReachable, dockerSocketPath } from './docker.js';
export { childEnv } from './config.js';
export { placedVmi } from './kube.js';
export { waitFor } from './wait.js';
export type { WaitForOptions } from './wait.js';
export { startOtlpReceiver } from './otlp.js';
export type { OtlpReceiver, ReceivedSpan } from './otlp.js';
export { tempDir } from './temp.js';
export { dropConnections } from './network.js';
export type { TempDir } from './temp.js';
export { spawnService } from './process.js';
export type { ServiceProcess, SpawnServiceOptions } from './process.js';
export { NatsServerNotFoundError, StartupError, WaitTimeoutError } from './errors.js';

export {
  buildGuest,
  defaultGuestScript,
  parseBuildOutput,
  startLibvirt,
  launcherDomainXml,
  startGuest,
  GuestConsole,
  parseDiskReport,
  parseUevent,
  hexOf,
  attachLoopDevice,
  guestGate,
  GUEST_TOOLS,
  startGuestHarness,
  GuestHarnessError,
} from './guest/index.js';
export type {
  GuestImage,
  BuildGuestOptions,
  LibvirtDaemons,
  StartLibvirtOptions,
  LauncherDomainOptions,
  LauncherDisk,
  LauncherDiskSpec,
  StartGuestOptions,
  Guest,
  GuestDisk,
  DiskReport,
  ReceivedDiskReport,
  GuestUevent,
  ConsoleWaitOptions,
  LoopDevice,
  GuestGate,
  GuestHarness,
  StartGuestHarnessOptions,
} from './guest/index.js';
export {
  coverage,
  describeModelPath,
  edgePaths,
  replayPaths,
  simplePaths,
  stepCount,
  transitionsOf,
} from './machine-paths.js';
export type {
  Coverage,
  CoverageSnapshot,
  EdgePaths,
  ModelPath,
  ModelTraversal,
} from './machine-paths.js';
