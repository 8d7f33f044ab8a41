import { NotFoundError, PluglineError, TerminalError } from '@plugline/contracts';

/** A mount, umount or mknod command failed (EBUSY while the domain still holds the disk, …). Retryable. */
export class MountError extends PluglineError {
  override name = 'MountError';
  constructor(
    readonly command: string,
    /** What the host said: errno and its text, or what a probe read. */
    readonly detail: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super('MountFailed', message, options);
  }
}

/** The attachment pod's volume is not (yet) in the kubelet layout. Usually means "wait". */
export class SourceNotFoundError extends NotFoundError {
  override name = 'SourceNotFoundError';
  constructor(
    readonly path: string,
    options?: ErrorOptions,
  ) {
    super(`hotplug volume source ${path} does not exist`, options);
  }
}

/** A source or target of the wrong kind (a block source that is no block device, a target that is a directory). */
export class WrongFileKindError extends TerminalError {
  override name = 'WrongFileKindError';
  constructor(
    readonly path: string,
    readonly expected: string,
    options?: ErrorOptions,
  ) {
    super('WrongFileKind', `${path} is not ${expected}`, options);
  }
}

/** The launcher's device cgroup could not be written or is neither v1 nor v2. */
export class CgroupError extends PluglineError {
  override name = 'CgroupError';
  constructor(
    readonly cgroupDir: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super('CgroupFailed', `${cgroupDir}: ${message}`, options);
  }
}

/**
 * A request names a VMI UID whose checkpointed volume belongs to another namespace: never undone
 * or replaced for it (a message cannot reach into another namespace's VMI).
 */
export class ForeignVolumeError extends TerminalError {
  override name = 'ForeignVolumeError';
  constructor(
    readonly vmiUID: string,
    readonly volume: string,
    readonly recordedNamespace: string,
    readonly requestNamespace: string,
    options?: ErrorOptions,
  ) {
    super(
      'ForeignVolume',
      `volume ${volume} of VMI ${vmiUID} was plugged for namespace ${recordedNamespace}, not ${requestNamespace}`,
      options,
    );
  }
}
