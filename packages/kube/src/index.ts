/**
 * `@plugline/kube`: the Kubernetes client layer of every Plugline service, on
 * `@kubernetes/client-node` — informers that restart, typed calls with mapped errors,
 * conditional JSON patches, the volumeStatus writer and the event recorder.
 */
export { loadKubeConfig } from './kubeconfig.js';
export type { LoadKubeConfigOptions } from './kubeconfig.js';

export { Resources, apiVersionOf, collectionPath } from './resources.js';
export type { ResourceRef } from './resources.js';

export type { KubeObject, JsonPatchOp, DataVolume } from './types.js';

export {
  AlreadyExistsError,
  KubeApiError,
  InformerStoppedError,
  mapKubeError,
  statusCodeOf,
} from './errors.js';

export { retryOnConflict, DEFAULT_RETRY } from './retry.js';
export type { RetryOptions } from './retry.js';

export { createInformer, InformerEvent } from './informer.js';
export type {
  Informer,
  InformerOptions,
  InformerBackoff,
  InformerHandler,
  VersionHandler,
} from './informer.js';

export { makeApiClient, closeKubeConnections } from './agent.js';

export { KubeClient } from './client.js';
export type { KubeClientOptions, PatchOptions, DeletePodOptions, CreateResult } from './client.js';

export { EventRecorder, EventType } from './events.js';
export type { EventRecorderOptions, EventSubject } from './events.js';

export { StatusWriter } from './status.js';
export type { StatusWriterOptions, VolumeStatusCompute } from './status.js';

export { jsonEqual } from './json.js';

export { currentVmi } from './fresh.js';
export type { VmiSources } from './fresh.js';
