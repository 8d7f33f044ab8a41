import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type CoreV1Event,
  type KubeConfig,
  type V1PersistentVolumeClaim,
  type V1Pod,
} from '@kubernetes/client-node';
import {
  ConflictError,
  NotFoundError,
  type VirtualMachine,
  type VirtualMachineInstance,
} from '@plugline/contracts';
import type { Logger } from 'pino';
import { makeApiClient, makeJsonRequester, type JsonRequester } from './agent.js';
import { AlreadyExistsError, mapKubeError } from './errors.js';
import { Resources, type ResourceRef } from './resources.js';
import type { DataVolume, JsonPatchOp } from './types.js';

/** What {@link KubeClient} needs. */
export interface KubeClientOptions {
  kc: KubeConfig;
  /** Recorded as the field manager of every write, e.g. the service name (`spec-watcher`). */
  fieldManager: string;
  logger?: Logger;
}

/** Options of a JSON-patch write. */
export interface PatchOptions {
  /** Ask the server to validate and answer without persisting (`dryRun=All`). */
  dryRun?: boolean;
}

/** Options of {@link KubeClient.deletePod}. */
export interface DeletePodOptions {
  /** Default 0: attachment pods hold no state worth a graceful shutdown. */
  gracePeriodSeconds?: number;
  /** Delete only the pod with this UID (a `preconditions.uid`): never a newer namesake. */
  uid?: string;
}

/** The result of an idempotent create. */
export interface CreateResult<T> {
  /** The object as stored: the new one, or the one that was already there. */
  object: T;
  /** False when an object of that name already existed (and was returned instead). */
  created: boolean;
}

const JSON_PATCH = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

const podsPath = (namespace: string): string =>
  `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`;
const eventsPath = (namespace: string): string =>
  `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`;

/**
 * The Kubernetes calls Plugline services make, typed, with a field manager on every write and
 * errors mapped to Plugline's (see {@link mapKubeError}): NotFoundError, ConflictError (409, and
 * 422 from a failed JSON-patch `test`), AlreadyExistsError, TransientError (5xx, network),
 * KubeApiError. Patches are RFC 6902 JSON patches (`application/json-patch+json`); guard them
 * with `test` operations on the fields they were computed from.
 */
export class KubeClient {
  /** The field manager recorded on every write. */
  readonly fieldManager: string;
  readonly #core: CoreV1Api;
  readonly #custom: CustomObjectsApi;
  readonly #json: JsonRequester;
  readonly #log: Logger | undefined;

  constructor(options: KubeClientOptions) {
    this.fieldManager = options.fieldManager;
    // One keep-alive agent per KubeConfig: no new TCP connection per request.
    this.#core = makeApiClient(options.kc, CoreV1Api);
    this.#custom = makeApiClient(options.kc, CustomObjectsApi);
    this.#json = makeJsonRequester(options.kc);
    this.#log = options.logger?.child({ component: 'kube-client' });
  }

  /** Reads a VirtualMachineInstance. @throws NotFoundError */
  getVmi(namespace: string, name: string): Promise<VirtualMachineInstance> {
    return this.#getCustom(Resources.virtualMachineInstances, namespace, name);
  }

  /** Lists the VMIs of a namespace as the API server has them (not an informer's cache). */
  async listVmis(namespace: string): Promise<VirtualMachineInstance[]> {
    const { group, version, plural } = Resources.virtualMachineInstances;
    try {
      const list = (await this.#custom.listNamespacedCustomObject({
        group,
        version,
        plural,
        namespace,
      })) as { items?: VirtualMachineInstance[] };
      return list.items ?? [];
    } catch (err) {
      throw mapKubeError(err, `list ${plural} ${namespace}`);
    }
  }

  /** Reads a VirtualMachine. @throws NotFoundError */
  getVm(namespace: string, name: string): Promise<VirtualMachine> {
    return this.#getCustom(Resources.virtualMachines, namespace, name);
  }

  /** Reads a CDI DataVolume. @throws NotFoundError */
  getDataVolume(namespace: string, name: string): Promise<DataVolume> {
    return this.#getCustom(Resources.dataVolumes, namespace, name);
  }

  /** JSON-patches a VMI (main resource: spec, metadata). @throws ConflictError when a `test` fails */
  patchVmi(
    namespace: string,
    name: string,
    ops: JsonPatchOp[],
    options: PatchOptions = {},
  ): Promise<VirtualMachineInstance> {
    return this.#patchCustom(Resources.virtualMachineInstances, namespace, name, ops, options);
  }

  /** JSON-patches a VirtualMachine. @throws ConflictError when a `test` fails */
  patchVm(
    namespace: string,
    name: string,
    ops: JsonPatchOp[],
    options: PatchOptions = {},
  ): Promise<VirtualMachine> {
    return this.#patchCustom(Resources.virtualMachines, namespace, name, ops, options);
  }

  /**
   * JSON-patches a VMI's `status` subresource (paths are still from the object root, e.g.
   * `/status/volumeStatus`). @throws ConflictError when a `test` fails
   */
  async patchVmiStatus(
    namespace: string,
    name: string,
    ops: JsonPatchOp[],
    options: PatchOptions = {},
  ): Promise<VirtualMachineInstance> {
    const ref = Resources.virtualMachineInstances;
    const what = `patch ${ref.plural}/status ${namespace}/${name}`;
    try {
      return (await this.#custom.patchNamespacedCustomObjectStatus(
        {
          ...this.#customParams(ref, namespace, name),
          body: ops,
          fieldManager: this.fieldManager,
          dryRun: options.dryRun ? 'All' : undefined,
        },
        JSON_PATCH,
      )) as VirtualMachineInstance;
    } catch (err) {
      throw mapKubeError(err, what);
    }
  }

  /** Reads a PersistentVolumeClaim. @throws NotFoundError */
  async getPvc(namespace: string, name: string): Promise<V1PersistentVolumeClaim> {
    try {
      return await this.#core.readNamespacedPersistentVolumeClaim({ namespace, name });
    } catch (err) {
      throw mapKubeError(err, `get persistentvolumeclaims ${namespace}/${name}`);
    }
  }

  /** Reads a Pod. @throws NotFoundError */
  async getPod(namespace: string, name: string): Promise<V1Pod> {
    try {
      return await this.#core.readNamespacedPod({ namespace, name });
    } catch (err) {
      throw mapKubeError(err, `get pods ${namespace}/${name}`);
    }
  }

  /** Lists the pods of a namespace, optionally by label selector (e.g. `kubevirt.io=hotplug-disk`). */
  async listPods(namespace: string, labelSelector?: string): Promise<V1Pod[]> {
    try {
      const list = await this.#core.listNamespacedPod({ namespace, labelSelector });
      return list.items;
    } catch (err) {
      throw mapKubeError(err, `list pods ${namespace}`);
    }
  }

  /**
   * Creates a pod, idempotently: with a deterministic name, a pod that already exists is read
   * and returned with `created: false` (the caller checks it is the pod it wanted).
   */
  async createPod(namespace: string, pod: V1Pod): Promise<CreateResult<V1Pod>> {
    const name = pod.metadata?.name ?? '(generated)';
    try {
      const object = await this.#core.createNamespacedPod({
        namespace,
        body: pod,
        fieldManager: this.fieldManager,
      });
      return { object, created: true };
    } catch (err) {
      const mapped = mapKubeError(err, `create pods ${namespace}/${name}`);
      if (!(mapped instanceof AlreadyExistsError) || !pod.metadata?.name) throw mapped;
      this.#log?.debug({ ns: namespace, pod: name }, 'pod already exists; returning it');
      return { object: await this.getPod(namespace, pod.metadata.name), created: false };
    }
  }

  /**
   * Deletes a pod (grace period 0 unless told). Returns false when there was nothing to delete:
   * the pod is not found, or (with `uid`) the pod of that name is a different one.
   */
  async deletePod(
    namespace: string,
    name: string,
    options: DeletePodOptions = {},
  ): Promise<boolean> {
    const gracePeriodSeconds = options.gracePeriodSeconds ?? 0;
    try {
      // Plain JSON: the answer (the deleted pod) is not read.
      await this.#json({
        method: 'DELETE',
        path: `${podsPath(namespace)}/${encodeURIComponent(name)}`,
        query: { gracePeriodSeconds },
        body: {
          gracePeriodSeconds,
          ...(options.uid ? { preconditions: { uid: options.uid } } : {}),
        },
      });
      return true;
    } catch (err) {
      const mapped = mapKubeError(err, `delete pods ${namespace}/${name}`);
      if (mapped instanceof NotFoundError) return false;
      // A failed UID precondition: the pod we meant is gone; a namesake took its place.
      if (options.uid && mapped instanceof ConflictError) return false;
      throw mapped;
    }
  }

  /** Creates a core/v1 Event (plain JSON, as Events are many; the stored one is not read back). */
  async createEvent(namespace: string, event: CoreV1Event): Promise<void> {
    try {
      await this.#json({
        method: 'POST',
        path: eventsPath(namespace),
        query: { fieldManager: this.fieldManager },
        body: event,
      });
    } catch (err) {
      throw mapKubeError(err, `create events ${namespace}/${event.metadata.name ?? ''}`);
    }
  }

  /** JSON-patches a core/v1 Event (used to aggregate repeats; plain JSON, like `createEvent`). */
  async patchEvent(namespace: string, name: string, ops: JsonPatchOp[]): Promise<void> {
    try {
      await this.#json({
        method: 'PATCH',
        path: `${eventsPath(namespace)}/${encodeURIComponent(name)}`,
        query: { fieldManager: this.fieldManager },
        body: ops,
        contentType: PatchStrategy.JsonPatch,
      });
    } catch (err) {
      throw mapKubeError(err, `patch events ${namespace}/${name}`);
    }
  }

  #customParams(ref: ResourceRef, namespace: string, name: string) {
    return { group: ref.group, version: ref.version, plural: ref.plural, namespace, name };
  }

  async #getCustom<T>(ref: ResourceRef, namespace: string, name: string): Promise<T> {
    try {
      return (await this.#custom.getNamespacedCustomObject(
        this.#customParams(ref, namespace, name),
      )) as T;
    } catch (err) {
      throw mapKubeError(err, `get ${ref.plural} ${namespace}/${name}`);
    }
  }

  async #patchCustom<T>(
    ref: ResourceRef,
    namespace: string,
    name: string,
    ops: JsonPatchOp[],
    options: PatchOptions,
  ): Promise<T> {
    try {
      return (await this.#custom.patchNamespacedCustomObject(
        {
          ...this.#customParams(ref, namespace, name),
          body: ops,
          fieldManager: this.fieldManager,
          dryRun: options.dryRun ? 'All' : undefined,
        },
        JSON_PATCH,
      )) as T;
    } catch (err) {
      throw mapKubeError(err, `patch ${ref.plural} ${namespace}/${name}`);
    }
  }
}
