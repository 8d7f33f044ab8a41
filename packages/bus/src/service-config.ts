import { isAbsolute } from 'node:path';
import { inspect } from 'node:util';

import { ConfigError, isName, nameProblem } from '@plugline/contracts';
import { LogLevel } from '@plugline/telemetry';

/**
 * The environment readers and the variables every service shares. Each service's `config.ts`
 * composes {@link parseServiceBaseConfig} (and {@link parseNodeConfig} on a node stage) with its
 * own variables; it stays the only place that hands the process environment over. Every reader treats an
 * unset or blank variable as absent and fails fast with a {@link ConfigError} naming the variable.
 */
export type Env = Readonly<Record<string, string | undefined>>;

/** The trimmed value of `name`, or `undefined` when unset or blank. */
export function envText(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/** The trimmed value of `name`; throws when unset or blank. */
export function envRequired(env: Env, name: string): string {
  const value = envText(env, name);
  if (value === undefined) throw new ConfigError(name, 'is required');
  return value;
}

/** A decimal integer in `[min, max]` (digits only: no sign, exponent or hex), or `fallback`. */
export function envInteger(
  env: Env,
  name: string,
  fallback: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const raw = envText(env, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(
      name,
      `must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

/** `true`/`1` or `false`/`0` (any case), or `fallback`. */
export function envBoolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = envText(env, name)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new ConfigError(name, `must be true or false, got ${JSON.stringify(raw)}`);
}

/** One of `values` (exact), or `fallback`. */
export function envOneOf<T extends string>(
  env: Env,
  name: string,
  values: readonly T[],
  fallback: T,
): T {
  const raw = envText(env, name);
  if (raw === undefined) return fallback;
  if (!(values as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`);
  }
  return raw as T;
}

/** `value` (read from `name`) when it is an absolute path; throws otherwise. */
export function absolutePath(name: string, value: string): string {
  if (!isAbsolute(value)) {
    throw new ConfigError(name, `must be an absolute path, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** The required absolute path in `name`. */
export function envAbsolutePath(env: Env, name: string): string {
  return absolutePath(name, envRequired(env, name));
}

/** `LOG_LEVEL`: one of {@link LogLevel}, or `fallback`. */
export function envLogLevel(env: Env, fallback: LogLevel): LogLevel {
  return envOneOf(env, 'LOG_LEVEL', Object.values(LogLevel), fallback);
}

const NATS_SERVER_URL = /^(nats|tls|wss?):\/\/[^\s/][^\s]*$/;
const NATS_HOST_PORT = /^[\w.-]+:\d+$/;

/** `NATS_URL`: comma-separated `nats|tls|ws|wss://...` URLs or `host:port` pairs (required). */
export function envNatsUrls(env: Env): string[] {
  const urls = envRequired(env, 'NATS_URL')
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  if (urls.length === 0) throw new ConfigError('NATS_URL', 'is required');
  for (const url of urls) {
    // Checked first, and the URL is not echoed: it would carry the password into the error.
    if (url.includes('@')) {
      throw new ConfigError(
        'NATS_URL',
        'must not carry credentials (nats.js ignores user:pass@ in a URL): set NATS_USER and NATS_PASSWORD, NATS_TOKEN or NATS_CREDS',
      );
    }
    if (!NATS_SERVER_URL.test(url) && !NATS_HOST_PORT.test(url)) {
      throw new ConfigError('NATS_URL', `not a NATS server URL: ${JSON.stringify(url)}`);
    }
  }
  return urls;
}

const REDACTED = '[redacted]';

/**
 * A secret read from the environment (a NATS password or token). It shows as `[redacted]` in
 * JSON (pino), string conversion and `util.inspect`, so a logged or printed config never carries
 * it; {@link Secret.reveal} hands the value to the one place that needs it (the connection).
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toJSON(): string {
    return REDACTED;
  }
  toString(): string {
    return REDACTED;
  }
  [inspect.custom](): string {
    return `Secret(${REDACTED})`;
  }
}

/**
 * How a service authenticates to NATS: as its own user (`deploy/nats/plugline.conf` has one per
 * service), with a token, or with a decentralised-auth creds file (JWT + nkey seed).
 */
export type NatsAuth =
  | { readonly kind: 'user'; readonly user: string; readonly password: Secret }
  | { readonly kind: 'token'; readonly token: Secret }
  | { readonly kind: 'creds'; readonly credsFile: string };

/**
 * The NATS credentials: `NATS_USER` + `NATS_PASSWORD`, or `NATS_TOKEN`, or `NATS_CREDS` (absolute
 * path of a creds file, read at each connect so a rotated file is picked up), at most one kind;
 * none means an unauthenticated connection. Credentials in `NATS_URL` (`nats://u:p@host`) are
 * refused: nats.js v3 ignores them, so the service would silently connect without them.
 */
export function envNatsAuth(env: Env): NatsAuth | undefined {
  const user = envText(env, 'NATS_USER');
  const password = envText(env, 'NATS_PASSWORD');
  const token = envText(env, 'NATS_TOKEN');
  const creds = envText(env, 'NATS_CREDS');
  const given = [
    user !== undefined || password !== undefined ? 'NATS_USER/NATS_PASSWORD' : undefined,
    token !== undefined ? 'NATS_TOKEN' : undefined,
    creds !== undefined ? 'NATS_CREDS' : undefined,
  ].filter((g) => g !== undefined);
  if (given.length > 1) {
    throw new ConfigError(
      given[1] === 'NATS_TOKEN' ? 'NATS_TOKEN' : 'NATS_CREDS',
      `set only one way to authenticate to NATS, got ${given.join(' and ')}`,
    );
  }
  if (user !== undefined && password === undefined) {
    throw new ConfigError('NATS_PASSWORD', 'is required when NATS_USER is set');
  }
  if (password !== undefined && user === undefined) {
    throw new ConfigError('NATS_USER', 'is required when NATS_PASSWORD is set');
  }
  if (user !== undefined && password !== undefined) {
    return { kind: 'user', user, password: new Secret(password) };
  }
  if (token !== undefined) return { kind: 'token', token: new Secret(token) };
  if (creds !== undefined) return { kind: 'creds', credsFile: absolutePath('NATS_CREDS', creds) };
  return undefined;
}

/** Where a service sends its spans (see `envTraceExport`); `startTracing` takes it. */
export interface TraceExport {
  /** The OTLP/HTTP (JSON) traces endpoint. */
  readonly tracesUrl: string;
  /** `OTEL_SERVICE_NAME`; default the service's own name. */
  readonly serviceName: string | undefined;
  /** `OTEL_BSP_SCHEDULE_DELAY`: how long finished spans wait to go out in one batch. */
  readonly exportDelayMs: number;
}

/** OpenTelemetry's default traces endpoint, used when `OTEL_TRACES_EXPORTER=otlp` names none. */
const DEFAULT_TRACES_URL = 'http://localhost:4318/v1/traces';

/**
 * The trace export, from OpenTelemetry's standard variables; undefined (no export, and spans
 * cost nearly nothing) unless an OTLP endpoint is set or `OTEL_TRACES_EXPORTER=otlp`.
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is the URL itself; `OTEL_EXPORTER_OTLP_ENDPOINT` is a base
 * that `/v1/traces` is appended to, as the OpenTelemetry specification says.
 * `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true` turn it off. Spans go as OTLP/HTTP
 * with JSON bodies: `OTEL_EXPORTER_OTLP_PROTOCOL` may only say `http/json`.
 */
export function envTraceExport(env: Env): TraceExport | undefined {
  if (envBoolean(env, 'OTEL_SDK_DISABLED', false)) return undefined;
  const exporter =
    envText(env, 'OTEL_TRACES_EXPORTER') === undefined
      ? undefined
      : envOneOf(env, 'OTEL_TRACES_EXPORTER', ['otlp', 'none'], 'otlp');
  if (exporter === 'none') return undefined;
  for (const name of ['OTEL_EXPORTER_OTLP_PROTOCOL', 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL']) {
    envOneOf(env, name, ['http/json'], 'http/json');
  }
  const signalUrl = envText(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  const baseUrl = envText(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  let tracesUrl: string;
  if (signalUrl !== undefined) {
    tracesUrl = otlpUrl('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', signalUrl);
  } else if (baseUrl !== undefined) {
    const base = otlpUrl('OTEL_EXPORTER_OTLP_ENDPOINT', baseUrl);
    tracesUrl = `${base.endsWith('/') ? base : `${base}/`}v1/traces`;
  } else if (exporter === 'otlp') {
    tracesUrl = DEFAULT_TRACES_URL;
  } else {
    return undefined;
  }
  return {
    tracesUrl,
    serviceName: envText(env, 'OTEL_SERVICE_NAME'),
    exportDelayMs: envInteger(env, 'OTEL_BSP_SCHEDULE_DELAY', 5000, 1, 600_000),
  };
}

/** An `http(s)://` URL without credentials (they would reach the log; use OTLP headers). */
function otlpUrl(name: string, raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch (err) {
    throw new ConfigError(name, `not a URL: ${JSON.stringify(raw)}`, { cause: err });
  }
  // Checked before the URL is echoed: it would carry the password into the error.
  if (url.username !== '' || url.password !== '') {
    throw new ConfigError(
      name,
      'must not carry credentials: set them as OTEL_EXPORTER_OTLP_HEADERS (e.g. Authorization=...)',
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(name, `must be an http:// or https:// URL, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/** The variables every service reads. */
export interface ServiceBaseConfig {
  /** `NATS_URL` (comma-separated, required). */
  readonly natsUrls: readonly string[];
  /** `NATS_USER`+`NATS_PASSWORD`, `NATS_TOKEN` or `NATS_CREDS` (default: none). */
  readonly natsAuth: NatsAuth | undefined;
  /** `KUBECONFIG` (path, required). */
  readonly kubeconfig: string;
  /** `LOG_LEVEL` (default `info`). */
  readonly logLevel: LogLevel;
  /** `LOG_PRETTY` (default false). */
  readonly logPretty: boolean;
  /** `HEALTH_PORT` (default 0: random). */
  readonly healthPort: number;
  /** `HEALTH_HOST` (default 127.0.0.1). */
  readonly healthHost: string;
  /**
   * `PLUGLINE_CONCURRENCY`: units of work in flight in this process (default 32, 1..1024). A
   * handling mostly waits (NATS, the API server, the host), so a node that gets 75 volumes of one
   * VMI at once mounts them sooner with more in flight (issue 10).
   */
  readonly concurrency: number;
  /** `PLUGLINE_STREAM_REPLICAS` (default 1, 1..5). */
  readonly streamReplicas: number;
  /** `PLUGLINE_ACK_WAIT_MS` (default 30 000, 1000..3 600 000). */
  readonly ackWaitMs: number;
  /** `PLUGLINE_LEASE_TTL_MS`: how long a stage's per-unit lease outlives its holder (default 30 000). */
  readonly leaseTtlMs: number;
  /**
   * `PLUGLINE_INSTANCE`: this process's name among the running processes of its stage, kept by
   * the process that replaces it after a crash (a Kubernetes pod's name: a container restart
   * keeps it); a DNS-1123 subdomain. A process takes over at once the leases an earlier process
   * of the same instance held, instead of waiting out their TTL, so the units a crash cut short
   * move on as soon as the stage is back. Two running processes must never share one. Unset:
   * every lease of another process is waited out.
   */
  readonly instance: string | undefined;
  /** The trace export, from the `OTEL_*` variables (default: none; see {@link envTraceExport}). */
  readonly traces: TraceExport | undefined;
}

/** The defaults of the {@link ServiceBaseConfig} variables that have one. */
export function serviceBaseDefaults(): Omit<ServiceBaseConfig, 'natsUrls' | 'kubeconfig'> {
  return {
    natsAuth: undefined,
    logLevel: LogLevel.Info,
    logPretty: false,
    healthPort: 0,
    healthHost: '127.0.0.1',
    concurrency: 32,
    streamReplicas: 1,
    ackWaitMs: 30_000,
    leaseTtlMs: DEFAULT_LEASE_TTL_MS,
    instance: undefined,
    traces: undefined,
  };
}

/** Reads the common service variables (not frozen: the service freezes its composed config). */
export function parseServiceBaseConfig(env: Env): ServiceBaseConfig {
  const d = serviceBaseDefaults();
  return {
    natsUrls: Object.freeze(envNatsUrls(env)),
    natsAuth: envNatsAuth(env),
    kubeconfig: envRequired(env, 'KUBECONFIG'),
    logLevel: envLogLevel(env, d.logLevel),
    logPretty: envBoolean(env, 'LOG_PRETTY', d.logPretty),
    healthPort: envInteger(env, 'HEALTH_PORT', d.healthPort, 0, 65_535),
    healthHost: envText(env, 'HEALTH_HOST') ?? d.healthHost,
    concurrency: envInteger(env, 'PLUGLINE_CONCURRENCY', d.concurrency, 1, 1024),
    streamReplicas: envInteger(env, 'PLUGLINE_STREAM_REPLICAS', d.streamReplicas, 1, 5),
    ackWaitMs: envInteger(env, 'PLUGLINE_ACK_WAIT_MS', d.ackWaitMs, 1000, 3_600_000),
    leaseTtlMs: parseLeaseTtlMs(env, d.leaseTtlMs),
    instance: envInstance(env),
    traces: envTraceExport(env),
  };
}

/** The default of `PLUGLINE_LEASE_TTL_MS`. */
const DEFAULT_LEASE_TTL_MS = 30_000;

/** `PLUGLINE_LEASE_TTL_MS`: a stage's per-unit lease (default 30 000, at least 500). */
function parseLeaseTtlMs(env: Env, fallback = DEFAULT_LEASE_TTL_MS): number {
  return envInteger(env, 'PLUGLINE_LEASE_TTL_MS', fallback, 500);
}

/** `PLUGLINE_INSTANCE` (see {@link ServiceBaseConfig.instance}), or undefined when unset. */
export function envInstance(env: Env): string | undefined {
  const instance = envText(env, 'PLUGLINE_INSTANCE');
  if (instance === undefined) return undefined;
  const problem = nameProblem(instance, 'subdomain');
  if (problem !== undefined) {
    throw new ConfigError('PLUGLINE_INSTANCE', `${JSON.stringify(instance)}: ${problem}`);
  }
  return instance;
}

/** The variables of a stage that runs on one node. */
export interface NodeConfig {
  /** `NODE_NAME`: the node this agent serves (required, a DNS-1123 subdomain). */
  readonly nodeName: string;
  /** `KUBELET_ROOT`: the kubelet root, `/var/lib/kubelet` on a real node (required, absolute). */
  readonly kubeletRoot: string;
  /** `PLUGLINE_STATE_DIR`: this agent's state (checkpoints, files) (required, absolute). */
  readonly stateDir: string;
}

/** Reads `NODE_NAME`, `KUBELET_ROOT` and `PLUGLINE_STATE_DIR`. */
export function parseNodeConfig(env: Env): NodeConfig {
  const nodeName = envRequired(env, 'NODE_NAME');
  if (!isName(nodeName, 'subdomain')) {
    throw new ConfigError('NODE_NAME', `is not a DNS-1123 subdomain: ${JSON.stringify(nodeName)}`);
  }
  return {
    nodeName,
    kubeletRoot: envAbsolutePath(env, 'KUBELET_ROOT'),
    stateDir: envAbsolutePath(env, 'PLUGLINE_STATE_DIR'),
  };
}
