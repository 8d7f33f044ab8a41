import { PluglineError } from '@plugline/contracts';

/** No `nats-server` executable could be found (and no container engine was usable instead). */
export class NatsServerNotFoundError extends PluglineError {
  override name = 'NatsServerNotFoundError';
  constructor(message: string, options?: ErrorOptions) {
    super('NatsServerNotFound', message, options);
  }
}

/** A server or child process did not become ready in time, or exited while starting. */
export class StartupError extends PluglineError {
  override name = 'StartupError';
  constructor(message: string, options?: ErrorOptions) {
    super('StartupFailed', message, options);
  }
}

/** `waitFor` ran out of time; `cause` is the last failure of the check. */
export class WaitTimeoutError extends PluglineError {
  override name = 'WaitTimeoutError';
  constructor(message: string, options?: ErrorOptions) {
    super('WaitTimeout', message, options);
  }
}
