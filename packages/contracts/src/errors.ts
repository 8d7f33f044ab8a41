/**
 * One class per failure mode. Every class sets `name`, carries a stable `reason` (used in events,
 * metrics and dead letters) and accepts `ErrorOptions`, so boundaries wrap with `{ cause }`.
 */
export class PluglineError extends Error {
  override name = 'PluglineError';
  /** Stable, machine-readable reason (CamelCase, as KubeVirt's event reasons). */
  readonly reason: string;

  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** Outcome class of a rejected add/remove request, as virt-api answers it. */
export type RequestErrorStatus = 400 | 409 | 422;

/** A user's request was rejected; `status` and `message` match KubeVirt's virt-api. */
export class InvalidRequestError extends PluglineError {
  override name = 'InvalidRequestError';
  constructor(
    readonly status: RequestErrorStatus,
    /** JSON path of the offending field, e.g. `disk.disk.bus`. */
    readonly field: string,
    /** The rule that failed, e.g. `dns1123-label`, `max-length`, `enum`. */
    readonly rule: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(
      status === 400 ? 'BadRequest' : status === 409 ? 'Conflict' : 'Invalid',
      message,
      options,
    );
  }
}

/** A Kubernetes name (namespace, VMI, volume, node, pod) that breaks its naming rule. */
export class InvalidNameError extends PluglineError {
  override name = 'InvalidNameError';
  constructor(
    readonly field: string,
    readonly value: string,
    readonly rule: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super('InvalidName', message, options);
  }
}

export type MalformedReason =
  | 'oversized'
  | 'invalid-json'
  | 'invalid-envelope'
  | 'unknown-type'
  | 'invalid-data'
  | 'invalid-subject'
  | 'subject-mismatch';

/** An untrusted message (work item or event) could not be decoded; it is dead-lettered. */
export class MalformedMessageError extends PluglineError {
  override name = 'MalformedMessageError';
  constructor(
    readonly malformed: MalformedReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super('MalformedMessage', message, options);
  }
}

/** Configuration that does not parse; names the field. */
export class ConfigError extends PluglineError {
  override name = 'ConfigError';
  constructor(
    readonly field: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super('InvalidConfig', `${field}: ${message}`, options);
  }
}

/** Something not there yet or gone (a PVC, a pod, a domain); usually means "wait". */
export class NotFoundError extends PluglineError {
  override name = 'NotFoundError';
  constructor(message: string, options?: ErrorOptions) {
    super('NotFound', message, options);
  }
}

/** An optimistic-concurrency conflict (Kubernetes resourceVersion, KV revision). Retry after re-reading. */
export class ConflictError extends PluglineError {
  override name = 'ConflictError';
  constructor(message: string, options?: ErrorOptions) {
    super('Conflict', message, options);
  }
}

/** A failure worth retrying with backoff (network, timeouts, a busy peer). */
export class TransientError extends PluglineError {
  override name = 'TransientError';
  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(reason, message, options);
  }
}

/** A failure that retrying cannot fix; the unit is given up and a Warning is emitted. */
export class TerminalError extends PluglineError {
  override name = 'TerminalError';
  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(reason, message, options);
  }
}

/** A computed path that would leave its root (kubelet root, hotplug folder). */
export class PathEscapeError extends PluglineError {
  override name = 'PathEscapeError';
  constructor(
    readonly path: string,
    readonly root: string,
    options?: ErrorOptions,
  ) {
    super('PathEscape', `path ${JSON.stringify(path)} is outside ${root}`, options);
  }
}

/** The hypervisor refused or failed an operation (attach, detach, read the domain). */
export class HypervisorError extends PluglineError {
  override name = 'HypervisorError';
  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(reason, message, options);
  }
}

export const errors = {
  PluglineError,
  InvalidRequestError,
  InvalidNameError,
  MalformedMessageError,
  ConfigError,
  NotFoundError,
  ConflictError,
  TransientError,
  TerminalError,
  PathEscapeError,
  HypervisorError,
} as const;

/** Turns anything thrown into an Error, keeping the original as `cause`. */
export function asError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  return new PluglineError('Unknown', String(thrown), { cause: thrown });
}
