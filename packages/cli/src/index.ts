/**
 * `@plugline/cli`: plugctl's commands as functions, and the embedded default's stack (used by
 * `plugctl up` and by the chain tests).
 */
export { run, USAGE } from './cli.js';
export { processIo } from './io.js';
export type { Io } from './io.js';
export { ExitCode, CliError, UsageError, StackError } from './errors.js';
export { parseCliConfig, defaults, DEFAULT_NATS_URL } from './config.js';
export type { CliConfig, GlobalFlags } from './config.js';
export { parseDuration } from './args.js';
export {
  addVolume,
  removeVolume,
  volumeSourceKind,
  RequestRejectedError,
  MAX_RETRIES,
} from './volume.js';
export type {
  AddVolumeRequest,
  RemoveVolumeRequest,
  VolumeRequestResult,
  TargetKind,
} from './volume.js';
export { openEventStream, countEvents } from './event-stream.js';
export type { EventScope, EventStart, EventStream, StreamedEvent } from './event-stream.js';
export { waitForOperation, WaitResult } from './wait.js';
export type { WaitOptions, WaitOutcome } from './wait.js';
export { volumeRows } from './commands/status.js';
export type { VolumeRow } from './commands/status.js';
export {
  formatEventLine,
  formatProgressLine,
  formatTable,
  formatDuration,
  formatAge,
} from './render.js';
export {
  createRunningVmi,
  createPvc,
  createDataVolume,
  ensureNamespace,
  seedDemo,
  DEMO,
} from './demo.js';
export type { SeededVmi, VmiSpecOptions, PvcOptions, DataVolumeOptions } from './demo.js';
export {
  startStack,
  serviceMain,
  findReadyLine,
  mountsUnder,
  ServiceName,
  SERVICE_V8_FLAGS,
  SERVICE_NAMES,
  Hypervisor,
  ServiceRuntime,
} from './stack.js';
export type {
  Stack,
  StackOptions,
  StackNatsUsers,
  StackService,
  HealthRow,
  LibvirtHost,
} from './stack.js';
export {
  buildBundles,
  ensureBundles,
  staleReason,
  bundlePath,
  cliBundleDir,
  BUNDLE_ENTRIES,
  DEFAULT_BUNDLE_DIR,
} from './bundle.js';
export type { BundleEntry, BuildResult } from './bundle.js';
export { cliBundleStaleReason } from '../bin/cli-bundle.mjs';
