import { isAbsolute } from 'node:path';

import { ConfigError, isName } from '@plugline/contracts';
import { LogLevel } from '@plugline/telemetry';

/**
 * The environment readers and the variables every service shares. Each service's `config.ts`
 * composes {@link parseServiceBaseConfig} (and {@link parseNodeConfig} on a node stage) with its
 * own variables; it stays the only place that hands `process.env` over. Every reader treats an
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
    if (!NATS_SERVER_URL.test(url) && !NATS_HOST_PORT.test(url)) {
      throw new ConfigError('NATS_URL', `not a NATS server URL: ${JSON.stringify(url)}`);
    }
  }
  return urls;
}

/** The variables every service reads. */
export interface ServiceBaseConfig {
  /** `NATS_URL` (comma-separated, required). */
  readonly natsUrls: readonly string[];
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
  /** `PLUGLINE_CONCURRENCY`: units of work in flight in this process (default 8, 1..1024). */
  readonly concurrency: number;
  /** `PLUGLINE_STREAM_REPLICAS` (default 1, 1..5). */
  readonly streamReplicas: number;
  /** `PLUGLINE_ACK_WAIT_MS` (default 30 000, 1000..3 600 000). */
  readonly ackWaitMs: number;
}

/** The defaults of the {@link ServiceBaseConfig} variables that have one. */
export function serviceBaseDefaults(): Omit<ServiceBaseConfig, 'natsUrls' | 'kubeconfig'> {
  return {
    logLevel: LogLevel.Info,
    logPretty: false,
    healthPort: 0,
    healthHost: '127.0.0.1',
    concurrency: 8,
    streamReplicas: 1,
    ackWaitMs: 30_000,
  };
}

/** Reads the common service variables (not frozen: the service freezes its composed config). */
export function parseServiceBaseConfig(env: Env): ServiceBaseConfig {
  const d = serviceBaseDefaults();
  return {
    natsUrls: Object.freeze(envNatsUrls(env)),
    kubeconfig: envRequired(env, 'KUBECONFIG'),
    logLevel: envLogLevel(env, d.logLevel),
    logPretty: envBoolean(env, 'LOG_PRETTY', d.logPretty),
    healthPort: envInteger(env, 'HEALTH_PORT', d.healthPort, 0, 65_535),
    healthHost: envText(env, 'HEALTH_HOST') ?? d.healthHost,
    concurrency: envInteger(env, 'PLUGLINE_CONCURRENCY', d.concurrency, 1, 1024),
    streamReplicas: envInteger(env, 'PLUGLINE_STREAM_REPLICAS', d.streamReplicas, 1, 5),
    ackWaitMs: envInteger(env, 'PLUGLINE_ACK_WAIT_MS', d.ackWaitMs, 1000, 3_600_000),
  };
}

/** The default of `PLUGLINE_LEASE_TTL_MS`. */
export const DEFAULT_LEASE_TTL_MS = 30_000;

/** `PLUGLINE_LEASE_TTL_MS`: a stage's per-unit lease (default 30 000, at least 500). */
export function parseLeaseTtlMs(env: Env, fallback = DEFAULT_LEASE_TTL_MS): number {
  return envInteger(env, 'PLUGLINE_LEASE_TTL_MS', fallback, 500);
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
