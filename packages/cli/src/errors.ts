import { PluglineError } from '@plugline/contracts';

/** Exit codes of plugctl. */
export const ExitCode = {
  Ok: 0,
  /** A rejected request, a usage error, an unreachable server: virtctl's exit code. */
  Error: 1,
  /** `--wait`: the operation failed at some stage. */
  Failed: 2,
  /** `--wait`: `--timeout` passed before the operation finished. */
  Timeout: 3,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** An error plugctl reports as one line on stderr, exiting with `exitCode`. */
export class CliError extends PluglineError {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCode = ExitCode.Error,
    reason = 'CliError',
    options?: ErrorOptions,
  ) {
    super(reason, message, options);
  }
}

/** Bad flags or arguments. */
export class UsageError extends CliError {
  override name = 'UsageError';
  constructor(message: string, options?: ErrorOptions) {
    super(message, ExitCode.Error, 'Usage', options);
  }
}

/** The embedded default could not start (a process that did not become ready, a missing binary). */
export class StackError extends PluglineError {
  override name = 'StackError';
  constructor(message: string, options?: ErrorOptions) {
    super('StackStartFailed', message, options);
  }
}
