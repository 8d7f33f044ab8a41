/** The resource types the simulated API server serves, with what discovery tells about them. */
export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly singular: string;
  readonly namespaced: boolean;
  readonly shortNames: readonly string[];
  /** Subresources besides the main one, e.g. `status`. */
  readonly subresources: readonly string[];
  /** A custom resource: strategic merge patch is refused, as for a CRD. */
  readonly custom: boolean;
  readonly categories?: readonly string[];
}

export type KubeObject = Record<string, unknown> & {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
};

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  [key: string]: unknown;
}

function core(
  kind: string,
  plural: string,
  namespaced: boolean,
  shortNames: string[],
  subresources: string[] = [],
): ResourceType {
  return {
    group: '',
    version: 'v1',
    kind,
    plural,
    singular: kind.toLowerCase(),
    namespaced,
    shortNames,
    subresources,
    custom: false,
  };
}

export const RESOURCE_TYPES: readonly ResourceType[] = [
  core('Namespace', 'namespaces', false, ['ns'], ['status']),
  core('Node', 'nodes', false, ['no'], ['status']),
  core('Pod', 'pods', true, ['po'], ['status']),
  core('PersistentVolumeClaim', 'persistentvolumeclaims', true, ['pvc'], ['status']),
  core('PersistentVolume', 'persistentvolumes', false, ['pv'], ['status']),
  core('Event', 'events', true, ['ev']),
  {
    group: 'kubevirt.io',
    version: 'v1',
    kind: 'VirtualMachineInstance',
    plural: 'virtualmachineinstances',
    singular: 'virtualmachineinstance',
    namespaced: true,
    shortNames: ['vmi', 'vmis'],
    subresources: ['status'],
    custom: true,
    categories: ['all'],
  },
  {
    group: 'kubevirt.io',
    version: 'v1',
    kind: 'VirtualMachine',
    plural: 'virtualmachines',
    singular: 'virtualmachine',
    namespaced: true,
    shortNames: ['vm', 'vms'],
    subresources: ['status'],
    custom: true,
    categories: ['all'],
  },
  {
    group: 'cdi.kubevirt.io',
    version: 'v1beta1',
    kind: 'DataVolume',
    plural: 'datavolumes',
    singular: 'datavolume',
    namespaced: true,
    shortNames: ['dv', 'dvs'],
    subresources: ['status'],
    custom: true,
    categories: ['all'],
  },
];

export function apiVersionOf(type: ResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

export function typeKey(type: ResourceType): string {
  return type.group ? `${type.plural}.${type.group}` : type.plural;
}

/** Looks a type up by its API group and plural name. */
export function findType(group: string, version: string, plural: string): ResourceType | undefined {
  return RESOURCE_TYPES.find(
    (t) => t.group === group && t.version === version && t.plural === plural,
  );
}

export function typeByKind(apiVersion: string, kind: string): ResourceType | undefined {
  return RESOURCE_TYPES.find((t) => apiVersionOf(t) === apiVersion && t.kind === kind);
}

/** Well-known handles for the types, for the simulator's own controllers. */
export const Types = {
  namespaces: RESOURCE_TYPES[0]!,
  nodes: RESOURCE_TYPES[1]!,
  pods: RESOURCE_TYPES[2]!,
  persistentvolumeclaims: RESOURCE_TYPES[3]!,
  persistentvolumes: RESOURCE_TYPES[4]!,
  events: RESOURCE_TYPES[5]!,
  virtualmachineinstances: RESOURCE_TYPES[6]!,
  virtualmachines: RESOURCE_TYPES[7]!,
  datavolumes: RESOURCE_TYPES[8]!,
} as const;
