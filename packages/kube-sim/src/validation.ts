import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { invalid } from './errors.js';
import type { StatusCause } from './errors.js';
import { jsonEqual } from './patch.js';
import { Types } from './resources.js';
import type { KubeObject, ResourceType } from './resources.js';
import type { Validator } from './store.js';

interface OpenApiFixture {
  definitions: Record<string, unknown>;
}

const FIXTURE = new URL('../fixtures/kubevirt-openapi.json', import.meta.url);

function pathOf(instancePath: string): string {
  return instancePath
    .split('/')
    .filter((s) => s.length > 0)
    .map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s}`))
    .join('')
    .replace(/^\./, '');
}

function causeOf(e: ErrorObject): StatusCause {
  const base = pathOf(e.instancePath);
  if (e.keyword === 'required') {
    const missing = (e.params as { missingProperty: string }).missingProperty;
    return {
      reason: 'FieldValueRequired',
      field: base ? `${base}.${missing}` : missing,
      message: 'Required value',
    };
  }
  if (e.keyword === 'enum') {
    const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
    return {
      reason: 'FieldValueNotSupported',
      field: base,
      message: `Unsupported value: ${JSON.stringify(e.data)}: supported values: ${allowed.map((a) => JSON.stringify(a)).join(', ')}`,
    };
  }
  return {
    reason: 'FieldValueInvalid',
    field: base,
    message: `Invalid value: ${JSON.stringify(e.data)}: ${base} in body ${e.message ?? 'is invalid'}`,
  };
}

/** Validates KubeVirt objects against KubeVirt's published OpenAPI definitions. */
export class KubevirtSchema {
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(fixture: OpenApiFixture = loadFixture()) {
    const ajv = new Ajv({ strict: false, allErrors: true, verbose: true, validateFormats: false });
    // OpenAPI v2 definitions are JSON Schema draft-4-ish; refs already point at #/definitions/x.
    ajv.addSchema({ $id: 'kubevirt', definitions: fixture.definitions });
    for (const kind of ['VirtualMachineInstance', 'VirtualMachine']) {
      this.validators.set(kind, ajv.compile({ $ref: `kubevirt#/definitions/v1.${kind}` }));
    }
  }

  /** Returns the failures of an object of that kind (empty when valid). */
  check(kind: string, obj: KubeObject): StatusCause[] {
    const validate = this.validators.get(kind);
    if (!validate || validate(obj)) return [];
    return (validate.errors ?? []).slice(0, 10).map(causeOf);
  }
}

function loadFixture(): OpenApiFixture {
  return JSON.parse(readFileSync(FIXTURE, 'utf8')) as OpenApiFixture;
}

const DV_SOURCES = [
  'http',
  's3',
  'gcs',
  'registry',
  'pvc',
  'upload',
  'blank',
  'imageio',
  'vddk',
  'snapshot',
];

type Obj = Record<string, unknown>;

function isObj(value: unknown): value is Obj {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** CDI's DataVolume rules, by hand (CDI's schema is not in KubeVirt's document). */
export function dataVolumeProblems(obj: KubeObject): StatusCause[] {
  const spec = obj.spec;
  if (!isObj(spec))
    return [{ field: 'spec', message: 'Required value', reason: 'FieldValueRequired' }];
  const causes: StatusCause[] = [];
  if (isObj(spec.pvc) === isObj(spec.storage)) {
    causes.push({
      field: 'spec',
      message: 'Invalid value: exactly one of pvc or storage is required',
    });
  }
  if (isObj(spec.source)) {
    const kinds = Object.keys(spec.source).filter((k) => DV_SOURCES.includes(k));
    if (kinds.length !== 1) {
      causes.push({
        field: 'spec.source',
        message: `Invalid value: exactly one source type is required, found ${kinds.length}`,
      });
    }
  } else if (!isObj(spec.sourceRef)) {
    const pvc = isObj(spec.pvc) ? spec.pvc : undefined;
    if (!pvc?.dataSourceRef) {
      causes.push({
        field: 'spec.source',
        message:
          'Required value: Data volume should have either Source, SourceRef, or be externally populated',
        reason: 'FieldValueRequired',
      });
    }
  }
  const claim = isObj(spec.pvc) ? spec.pvc : undefined;
  const resources = claim && isObj(claim.resources) ? claim.resources : undefined;
  const requests = resources && isObj(resources.requests) ? resources.requests : undefined;
  if (claim && !requests?.storage) {
    causes.push({
      field: 'spec.pvc.resources.requests.storage',
      message: 'Required value: missing storage size',
      reason: 'FieldValueRequired',
    });
  }
  return causes;
}

function podProblems(obj: KubeObject, old: KubeObject | undefined): StatusCause[] {
  const spec = obj.spec;
  if (!isObj(spec) || !Array.isArray(spec.containers) || spec.containers.length === 0) {
    return [{ field: 'spec.containers', message: 'Required value', reason: 'FieldValueRequired' }];
  }
  const causes: StatusCause[] = [];
  spec.containers.forEach((c, i) => {
    if (!isObj(c) || typeof c.name !== 'string' || !c.name) {
      causes.push({ field: `spec.containers[${i}].name`, message: 'Required value' });
    }
  });
  if (old && isObj(old.spec) && !jsonEqual(mutablePodSpec(old.spec), mutablePodSpec(spec))) {
    causes.push({
      field: 'spec',
      message:
        'Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)',
    });
  }
  return causes;
}

function mutablePodSpec(spec: Obj): Obj {
  const {
    nodeName: _n,
    tolerations: _t,
    activeDeadlineSeconds: _a,
    terminationGracePeriodSeconds: _g,
    ...rest
  } = spec;
  const strip = (list: unknown): unknown =>
    Array.isArray(list) ? list.map((c: unknown) => (isObj(c) ? { ...c, image: '' } : c)) : list;
  return {
    ...rest,
    containers: strip(rest.containers),
    initContainers: strip(rest.initContainers),
  };
}

function pvcProblems(obj: KubeObject, old: KubeObject | undefined): StatusCause[] {
  const spec = obj.spec;
  if (!isObj(spec))
    return [{ field: 'spec', message: 'Required value', reason: 'FieldValueRequired' }];
  const causes: StatusCause[] = [];
  if (!Array.isArray(spec.accessModes) || spec.accessModes.length === 0) {
    causes.push({
      field: 'spec.accessModes',
      message: 'Required value',
      reason: 'FieldValueRequired',
    });
  }
  const resources = isObj(spec.resources) ? spec.resources : {};
  const requests = isObj(resources.requests) ? resources.requests : {};
  if (!requests.storage) {
    causes.push({
      field: 'spec.resources[storage]',
      message: 'Required value',
      reason: 'FieldValueRequired',
    });
  }
  if (old && isObj(old.spec)) {
    const fixed = (s: Obj) => {
      const { resources: _r, volumeName: _v, volumeAttributesClassName: _c, ...rest } = s;
      return rest;
    };
    const volumeChanged = old.spec.volumeName && old.spec.volumeName !== spec.volumeName;
    if (!jsonEqual(fixed(old.spec), fixed(spec)) || volumeChanged) {
      causes.push({
        field: 'spec',
        message:
          'Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims',
      });
    }
  }
  return causes;
}

/** The admission checks of the simulated API server, as a store validator. */
export function makeValidator(schema: KubevirtSchema = new KubevirtSchema()): Validator {
  return (type: ResourceType, obj: KubeObject, old: KubeObject | undefined) => {
    let causes: StatusCause[] = [];
    if (type === Types.virtualmachineinstances || type === Types.virtualmachines) {
      causes = schema.check(type.kind, obj);
    } else if (type === Types.datavolumes) {
      causes = dataVolumeProblems(obj);
    } else if (type === Types.pods) {
      causes = podProblems(obj, old);
    } else if (type === Types.persistentvolumeclaims) {
      causes = pvcProblems(obj, old);
    }
    if (causes.length > 0) {
      throw invalid(type.group, type.kind, obj.metadata?.name ?? '', causes);
    }
  };
}
