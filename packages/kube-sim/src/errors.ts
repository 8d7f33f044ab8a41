import { PluglineError } from '@plugline/contracts';

/** The Kubernetes `Status` reasons the simulator answers with. */
export const StatusReason = {
  NotFound: 'NotFound',
  AlreadyExists: 'AlreadyExists',
  Conflict: 'Conflict',
  Invalid: 'Invalid',
  BadRequest: 'BadRequest',
  Gone: 'Expired',
  MethodNotAllowed: 'MethodNotAllowed',
  UnsupportedMediaType: 'UnsupportedMediaType',
  Forbidden: 'Forbidden',
  InternalError: 'InternalError',
} as const;
export type StatusReason = (typeof StatusReason)[keyof typeof StatusReason];

export interface StatusCause {
  reason?: string;
  message: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  causes?: StatusCause[];
}

/** A Kubernetes `meta.k8s.io/v1` Status object, as the API server sends for failures. */
export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message: string;
  reason: StatusReason;
  details?: StatusDetails;
  code: number;
}

/** A request the API server refuses; carries the HTTP code and the `Status` body to send. */
export class ApiError extends PluglineError {
  override name = 'ApiError';
  constructor(
    readonly code: number,
    readonly statusReason: StatusReason,
    message: string,
    readonly details?: StatusDetails,
    options?: ErrorOptions,
  ) {
    super(statusReason, message, options);
  }

  toStatus(): StatusBody {
    const body: StatusBody = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.statusReason,
      code: this.code,
    };
    if (this.details) body.details = this.details;
    return body;
  }
}

/** A volume, loop device or file operation of the kubelet simulator failed. */
export class KubeletSimError extends PluglineError {
  override name = 'KubeletSimError';
  constructor(message: string, options?: ErrorOptions) {
    super('KubeletSimFailed', message, options);
  }
}

export function notFound(group: string, plural: string, name: string): ApiError {
  const what = group ? `${plural}.${group}` : plural;
  return new ApiError(404, StatusReason.NotFound, `${what} "${name}" not found`, {
    name,
    group,
    kind: plural,
  });
}

export function alreadyExists(group: string, plural: string, name: string): ApiError {
  const what = group ? `${plural}.${group}` : plural;
  return new ApiError(409, StatusReason.AlreadyExists, `${what} "${name}" already exists`, {
    name,
    group,
    kind: plural,
  });
}

export function conflict(group: string, plural: string, name: string): ApiError {
  const what = group ? `${plural}.${group}` : plural;
  return new ApiError(
    409,
    StatusReason.Conflict,
    `Operation cannot be fulfilled on ${what} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, group, kind: plural },
  );
}

export function invalid(
  group: string,
  kind: string,
  name: string,
  causes: StatusCause[],
): ApiError {
  const what = group ? `${kind}.${group}` : kind;
  const list = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message)).join(', ');
  return new ApiError(422, StatusReason.Invalid, `${what} "${name}" is invalid: ${list}`, {
    name,
    group,
    kind,
    causes: causes.map((c) => ({ reason: c.reason ?? 'FieldValueInvalid', ...c })),
  });
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, StatusReason.BadRequest, message);
}
