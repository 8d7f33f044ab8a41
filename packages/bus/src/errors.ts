import { PluglineError } from '@plugline/contracts';

/** A feature was requested that the connected nats-server does not have (or would ignore). */
export class UnsupportedFeatureError extends PluglineError {
  override name = 'UnsupportedFeatureError';
  constructor(
    readonly feature: string,
    readonly requiredVersion: string,
    readonly serverVersion: string,
    options?: ErrorOptions,
  ) {
    super(
      'UnsupportedFeature',
      `${feature} needs nats-server ${requiredVersion} or newer; the server is ${serverVersion}` +
        ' (Plugline uses only nats-server 2.9 features; newer ones are optional and detected)',
      options,
    );
  }
}

/** The bus is shutting down or closed; a publish was given up. */
export class BusClosedError extends PluglineError {
  override name = 'BusClosedError';
  constructor(message: string, options?: ErrorOptions) {
    super('BusClosed', message, options);
  }
}

/**
 * A request's reply was lost with the connection: it was still waiting when the connection to
 * nats-server came back. Whether the request took effect is unknown; send it again.
 */
export class ReplyLostError extends PluglineError {
  override name = 'ReplyLostError';
  constructor(
    readonly subject: string,
    options?: ErrorOptions,
  ) {
    super('ReplyLost', `the connection to nats-server dropped before ${subject} replied`, options);
  }
}

/** The unit's lease was taken over by another worker while this one still worked on it. */
export class LeaseLostError extends PluglineError {
  override name = 'LeaseLostError';
  constructor(
    readonly key: string,
    options?: ErrorOptions,
  ) {
    super('LeaseLost', `lost the lease on ${key}`, options);
  }
}

/** The machine did not settle (invoked actors still running) within the settle timeout. */
export class SettleTimeoutError extends PluglineError {
  override name = 'SettleTimeoutError';
  constructor(message: string, options?: ErrorOptions) {
    super('SettleTimeout', message, options);
  }
}

/** A consumer's leader did not step down (a single server, a refused user, no quorum). */
export class StepDownError extends PluglineError {
  override name = 'StepDownError';
  constructor(
    readonly consumer: string,
    reason: string,
    options?: ErrorOptions,
  ) {
    super('StepDownFailed', `consumer ${consumer} did not step down: ${reason}`, options);
  }
}

/** Whether `error`, or an error it was caused by, is a {@link ReplyLostError}. */
export function isReplyLost(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof ReplyLostError) return true;
  }
  return false;
}
