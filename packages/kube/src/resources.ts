import { CDI_GROUP, CDI_VERSION, KUBEVIRT_GROUP, KUBEVIRT_VERSION } from '@plugline/contracts';

/**
 * Identifies a Kubernetes resource type by group, version and plural, the way the REST paths
 * do: core resources have the empty group (`{ group: '', version: 'v1', plural: 'pods' }`),
 * custom ones their API group (`{ group: 'kubevirt.io', version: 'v1', plural: 'virtualmachineinstances' }`).
 */
export interface ResourceRef {
  /** API group; `''` for the core group. */
  readonly group: string;
  /** API version within the group, e.g. `v1`, `v1beta1`. */
  readonly version: string;
  /** Lower-case plural resource name, e.g. `pods`, `datavolumes`. */
  readonly plural: string;
  /** The object kind, e.g. `Pod` (informational; used in log fields). */
  readonly kind?: string;
}

/** The resource types Plugline services read and write. */
export const Resources = {
  pods: { group: '', version: 'v1', plural: 'pods', kind: 'Pod' },
  persistentVolumeClaims: {
    group: '',
    version: 'v1',
    plural: 'persistentvolumeclaims',
    kind: 'PersistentVolumeClaim',
  },
  events: { group: '', version: 'v1', plural: 'events', kind: 'Event' },
  nodes: { group: '', version: 'v1', plural: 'nodes', kind: 'Node' },
  virtualMachineInstances: {
    group: KUBEVIRT_GROUP,
    version: KUBEVIRT_VERSION,
    plural: 'virtualmachineinstances',
    kind: 'VirtualMachineInstance',
  },
  virtualMachines: {
    group: KUBEVIRT_GROUP,
    version: KUBEVIRT_VERSION,
    plural: 'virtualmachines',
    kind: 'VirtualMachine',
  },
  dataVolumes: {
    group: CDI_GROUP,
    version: CDI_VERSION,
    plural: 'datavolumes',
    kind: 'DataVolume',
  },
} as const satisfies Record<string, ResourceRef>;

/** `apiVersion` of a resource: `v1` for core, `<group>/<version>` otherwise. */
export function apiVersionOf(ref: ResourceRef): string {
  return ref.group === '' ? ref.version : `${ref.group}/${ref.version}`;
}

/**
 * The REST collection path of a resource, namespaced when `namespace` is given:
 * `/api/v1/namespaces/ns/pods`, `/apis/kubevirt.io/v1/virtualmachineinstances`.
 */
export function collectionPath(ref: ResourceRef, namespace?: string): string {
  const root = ref.group === '' ? `/api/${ref.version}` : `/apis/${ref.group}/${ref.version}`;
  const ns = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${root}${ns}/${ref.plural}`;
}
