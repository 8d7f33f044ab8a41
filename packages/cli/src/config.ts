/**
 * plugctl's configuration, parsed once from flags and the environment: the only place that
 * reads environment variables (main.ts passes `process.env` in).
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { envNatsAuth, type NatsAuth } from '@plugline/bus';
import { ConfigError } from '@plugline/contracts';

/** The flags every command accepts. */
export interface GlobalFlags {
  kubeconfig?: string;
  nats?: string;
  namespace?: string;
}

export interface CliConfig {
  /** Kubeconfig path (`--kubeconfig`, `$KUBECONFIG`'s first file, `~/.kube/config`), if any. */
  readonly kubeconfig: string | undefined;
  /** Inside a pod (`KUBERNETES_SERVICE_HOST` set): the service account serves without a kubeconfig. */
  readonly inCluster: boolean;
  /** NATS servers (`--nats`, `$NATS_URL`, default `nats://127.0.0.1:4222`). */
  readonly natsUrls: readonly string[];
  /** NATS was named by `--nats` or `NATS_URL` (so `up` uses it instead of starting a server). */
  readonly natsGiven: boolean;
  /**
   * NATS credentials, as the services read them: `NATS_USER` + `NATS_PASSWORD`, `NATS_TOKEN` or
   * `NATS_CREDS` (the `plugctl` user of deploy/nats/plugline.conf); none: unauthenticated.
   */
  readonly natsAuth: NatsAuth | undefined;
  /** `-n`; undefined: the kubeconfig context's namespace, else `default`. */
  readonly namespace: string | undefined;
  /** Already inside a private mount namespace (`PLUGLINE_PRIVATE_MOUNTS=1`). */
  readonly privateMounts: boolean;
  /** `LOG_LEVEL` for the processes `up` starts (default `info`). */
  readonly logLevel: string;
  /** Directory for `up` when `--dir` is not given: `$PLUGLINE_HOME` or `./.plugline`. */
  readonly home: string;
  /** Running as root (mounts, loop devices, mount namespaces possible). */
  readonly isRoot: boolean;
}

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';

export function defaults(): Omit<CliConfig, 'kubeconfig'> & { kubeconfig: undefined } {
  return {
    kubeconfig: undefined,
    inCluster: false,
    natsUrls: [DEFAULT_NATS_URL],
    natsGiven: false,
    natsAuth: undefined,
    namespace: undefined,
    privateMounts: false,
    logLevel: 'info',
    home: resolve('.plugline'),
    isRoot: false,
  };
}

function natsUrls(value: string, field: string): string[] {
  const urls = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (urls.length === 0) throw new ConfigError(field, 'must name at least one NATS server');
  for (const url of urls) {
    // Checked first, and the URL is not echoed: it would carry the password into the error.
    if (url.includes('@')) {
      throw new ConfigError(
        field,
        'must not carry credentials (nats.js ignores user:pass@ in a URL): set NATS_USER and NATS_PASSWORD, NATS_TOKEN or NATS_CREDS',
      );
    }
    if (!/^(nats|tls|ws|wss):\/\/[^\s]+$/.test(url) && !/^[\w.-]+:\d+$/.test(url)) {
      throw new ConfigError(field, `${JSON.stringify(url)} is not a NATS URL (nats://host:port)`);
    }
  }
  return urls;
}

function kubeconfigPath(flags: GlobalFlags, env: NodeJS.ProcessEnv): string | undefined {
  if (flags.kubeconfig !== undefined && flags.kubeconfig !== '') return resolve(flags.kubeconfig);
  const fromEnv = (env.KUBECONFIG ?? '').split(delimiter).find((p) => p.length > 0);
  if (fromEnv !== undefined) return resolve(fromEnv);
  const home = env.HOME ?? homedir();
  const standard = join(home, '.kube', 'config');
  return existsSync(standard) ? standard : undefined;
}

/** Merges flags over the environment over {@link defaults}; fails fast with a ConfigError. */
export function parseCliConfig(flags: GlobalFlags, env: NodeJS.ProcessEnv): Readonly<CliConfig> {
  const base = defaults();
  const natsFlag = flags.nats !== undefined && flags.nats !== '';
  const natsEnv = env.NATS_URL !== undefined && env.NATS_URL !== '';
  const config: CliConfig = {
    kubeconfig: kubeconfigPath(flags, env),
    inCluster: env.KUBERNETES_SERVICE_HOST !== undefined && env.KUBERNETES_SERVICE_HOST !== '',
    natsUrls: natsFlag
      ? natsUrls(flags.nats as string, '--nats')
      : natsEnv
        ? natsUrls(env.NATS_URL as string, 'NATS_URL')
        : base.natsUrls,
    natsGiven: natsFlag || natsEnv,
    natsAuth: envNatsAuth(env),
    namespace:
      flags.namespace !== undefined && flags.namespace !== '' ? flags.namespace : undefined,
    privateMounts: env.PLUGLINE_PRIVATE_MOUNTS === '1',
    logLevel: env.LOG_LEVEL !== undefined && env.LOG_LEVEL !== '' ? env.LOG_LEVEL : base.logLevel,
    home:
      env.PLUGLINE_HOME !== undefined && env.PLUGLINE_HOME !== ''
        ? resolve(env.PLUGLINE_HOME)
        : base.home,
    isRoot: typeof process.getuid === 'function' && process.getuid() === 0,
  };
  return Object.freeze(config);
}
