import {
  envInteger,
  parseServiceBaseConfig,
  serviceBaseDefaults,
  type ServiceBaseConfig,
} from '@plugline/bus';

/**
 * The spec-watcher's configuration, parsed once from the environment (the only module reading it):
 * the common service variables (`PLUGLINE_CONCURRENCY`: volumes decided and VMIs projected at
 * once) plus its own.
 */
export interface SpecWatcherConfig extends ServiceBaseConfig {
  /** `PLUGLINE_RESYNC_PERIOD_MS`: how often every volume not at its end is nudged again (default 300 000). */
  readonly resyncPeriodMs: number;
  /**
   * `PLUGLINE_STATUS_LINGER_MS`: how long the phases between an operation's start and its end
   * may wait to be written together (default 100; 0 writes every phase at once). Under load a
   * plug's steps are tens of milliseconds apart: 20 ms still wrote 2.1-2.3 times per plug, 100 ms
   * writes 1.2 (bench section 3). `--wait` and the event stream are not held back.
   */
  readonly statusLingerMs: number;
}

export function defaults(): Omit<SpecWatcherConfig, 'natsUrls' | 'kubeconfig'> {
  return {
    ...serviceBaseDefaults(),
    resyncPeriodMs: 300_000,
    statusLingerMs: 100,
  };
}

/** Reads and validates the environment; fails fast with a `ConfigError` naming the variable. */
export function parseConfig(env: NodeJS.ProcessEnv): SpecWatcherConfig {
  const d = defaults();
  return Object.freeze({
    ...parseServiceBaseConfig(env),
    resyncPeriodMs: envInteger(env, 'PLUGLINE_RESYNC_PERIOD_MS', d.resyncPeriodMs, 100),
    statusLingerMs: envInteger(env, 'PLUGLINE_STATUS_LINGER_MS', d.statusLingerMs, 0, 60_000),
  });
}
