import {
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { readFileSync } from 'node:fs';
import { Kvm } from '@nats-io/kv';
import {
  credsAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
} from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { ConfigError } from '@plugline/contracts';
import { silentLogger, type Logger } from '@plugline/telemetry';
import { failRequestsOnReconnect } from './lost-replies.js';
import type { NatsAuth } from './service-config.js';
import {
  parseServerVersion,
  requireFeatures,
  type ServerFeature,
  type ServerVersion,
} from './version.js';

export interface BusOptions {
  /** One or more `nats://host:port` URLs (give every cluster node). */
  servers: string | readonly string[];
  /** Connection name shown by the server (`/connz`), e.g. `node-mounter@node-1`. */
  name?: string;
  /** The service's credentials (`ServiceBaseConfig.natsAuth`); wins over `user`/`pass`/`token`. */
  auth?: NatsAuth;
  user?: string;
  pass?: string;
  token?: string;
  /** Milliseconds between reconnect attempts (default 250). */
  reconnectTimeWaitMs?: number;
  /** Default -1: reconnect forever. */
  maxReconnectAttempts?: number;
  /** Timeout of JetStream API calls and publish acks, in ms (default 5000). */
  apiTimeoutMs?: number;
  logger?: Logger;
}

/** A connection to NATS with its JetStream and KV handles. Dispose with `await using`. */
export interface Bus extends AsyncDisposable {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly kvm: Kvm;
  /** The server version seen at connect time. */
  readonly serverVersion: ServerVersion;
  readonly logger: Logger;
  /** True while connected (not reconnecting, not closed). */
  connected(): boolean;
  /** Throws `UnsupportedFeatureError` when the server lacks one of `features`. */
  requireFeatures(...features: readonly ServerFeature[]): void;
  /** Drains subscriptions and pending publishes, then closes. Idempotent. */
  drain(): Promise<void>;
  /** Closes immediately. Idempotent. */
  close(): Promise<void>;
}

/**
 * Connects to NATS with reconnect-forever, binds JetStream, and reads the server version. Call
 * `drain()` on shutdown (SIGTERM) so in-flight publishes complete.
 */
export async function connectBus(options: BusOptions): Promise<Bus> {
  const logger = options.logger ?? silentLogger();
  const servers = typeof options.servers === 'string' ? [options.servers] : [...options.servers];
  const connection = await connect({
    servers,
    name: options.name,
    ...credentials(options),
    reconnect: true,
    maxReconnectAttempts: options.maxReconnectAttempts ?? -1,
    reconnectTimeWait: options.reconnectTimeWaitMs ?? 250,
    reconnectJitter: 50,
    pingInterval: 10_000,
    timeout: 5000,
    // Every request (each JetStream publish and KV call) would otherwise build an Error up front
    // to carry the caller's stack, used only if it fails: a measurable share of a stage's CPU.
    noAsyncTraces: true,
  });
  const nc = failRequestsOnReconnect(connection);
  const timeout = options.apiTimeoutMs ?? 5000;
  const js = jetstream(nc, { timeout });
  const jsm = await jetstreamManager(nc, { timeout });
  const serverVersion = parseServerVersion(nc.info?.version ?? '0.0.0');
  let connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnecting') connected = false;
      if (s.type === 'reconnect') connected = true;
      logger.debug({ status: s.type }, 'nats connection status');
    }
  })().catch(() => undefined);
  let closing: Promise<void> | undefined;
  const finish = (how: 'drain' | 'close'): Promise<void> => {
    closing ??= (async () => {
      if (nc.isClosed()) return;
      try {
        if (how === 'drain') await nc.drain();
        else await nc.close();
      } catch (err) {
        logger.debug({ err }, 'closing the nats connection');
        if (!nc.isClosed()) await nc.close();
      }
    })();
    return closing;
  };
  return {
    nc,
    js,
    jsm,
    kvm: new Kvm(js),
    serverVersion,
    logger,
    connected: () => connected && !nc.isClosed() && !nc.isDraining(),
    requireFeatures: (...features) => requireFeatures(serverVersion, ...features),
    drain: () => finish('drain'),
    close: () => finish('close'),
    [Symbol.asyncDispose]: () => finish('close'),
  };
}

/** The nats.js options for `options.auth` (or the plain `user`/`pass`/`token`). */
function credentials(
  options: BusOptions,
): Pick<ConnectionOptions, 'user' | 'pass' | 'token' | 'authenticator'> {
  const auth = options.auth;
  if (auth === undefined) return { user: options.user, pass: options.pass, token: options.token };
  switch (auth.kind) {
    case 'user':
      return { user: auth.user, pass: auth.password.reveal() };
    case 'token':
      return { token: auth.token.reveal() };
    case 'creds':
      readCreds(auth.credsFile); // fail fast, naming the file, rather than inside the handshake
      // Read at every (re)connect, so a rotated creds file is used without a restart.
      return { authenticator: credsAuthenticator(() => readCreds(auth.credsFile)) };
  }
}

function readCreds(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError('NATS_CREDS', `cannot read the creds file ${path}`, { cause: err });
  }
}
