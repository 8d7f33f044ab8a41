import type { ObjectMeta } from '@plugline/contracts';

/**
 * The least an object needs for the informer cache: a name, usually a namespace and a
 * resourceVersion. Both client-node models (`V1Pod`) and contracts' KubeVirt types fit.
 */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
  };
}

/** One RFC 6902 JSON Patch operation. */
export type JsonPatchOp =
  | { op: 'add' | 'replace' | 'test'; path: string; value: unknown }
  | { op: 'remove'; path: string }
  | { op: 'move' | 'copy'; from: string; path: string };

/** A CDI `cdi.kubevirt.io/v1beta1` DataVolume, the subset Plugline reads. */
export interface DataVolume {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: Record<string, unknown>;
  status?: {
    /** e.g. `Pending`, `ImportInProgress`, `Succeeded`, `Failed`. */
    phase?: string;
    progress?: string;
    claimName?: string;
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    [other: string]: unknown;
  };
}
