export { startKubeSim, FailureKind } from './sim.js';
export type { KubeSim, KubeSimOptions, InjectedFailure } from './sim.js';
export { Store, PatchType } from './store.js';
export type {
  StoredEvent,
  WatchEventType,
  WatchOptions,
  WatchSink,
  StoreWatch,
  WriteOptions,
  DeleteOptions,
  ListOptions,
  ListResult,
  Validator,
} from './store.js';
export { RESOURCE_TYPES, Types, apiVersionOf, findType } from './resources.js';
export type { ResourceType, KubeObject, ObjectMeta, OwnerReference } from './resources.js';
export { ApiError, KubeletSimError, StatusReason } from './errors.js';
export type { StatusBody } from './errors.js';
export { SimAnnotation, SELECTED_NODE } from './storage-controllers.js';
export { KubeletLayout, CSI_DRIVER, loopDevicesUnder } from './volumes.js';
export { KubevirtSchema } from './validation.js';
export { kubeconfigYaml } from './kubeconfig.js';
export { parseQuantity } from './quantity.js';
