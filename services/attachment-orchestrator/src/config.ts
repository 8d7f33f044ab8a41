import {
  envInteger,
  envText,
  parseServiceBaseConfig,
  serviceBaseDefaults,
  type ServiceBaseConfig,
} from '@plugline/bus';

/**
 * The attachment-orchestrator's configuration, parsed once from the environment: the common
 * service variables (`PLUGLINE_CONCURRENCY`: VMIs reconciled at once) plus its own.
 */
export interface OrchestratorConfig extends ServiceBaseConfig {
  /** `PLUGLINE_ATTACH_IMAGE`: the hotplug-disk container image (default: the launcher's image). */
  readonly attachImage: string | undefined;
  /**
   * `PLUGLINE_COALESCE_MS`: an extra wait before a new pod, gathering the changes made meanwhile
   * (default 0). Coalescing needs no fixed window: a pod is created at once when none of ours is
   * starting, and the volumes requested while one starts go into one next pod.
   */
  readonly coalesceMs: number;
}

export function defaults(): Omit<OrchestratorConfig, 'natsUrls' | 'kubeconfig'> {
  return {
    ...serviceBaseDefaults(),
    attachImage: undefined,
    coalesceMs: 0,
  };
}

/** Reads and validates the environment; fails fast with a `ConfigError` naming the variable. */
export function parseConfig(env: NodeJS.ProcessEnv): OrchestratorConfig {
  const d = defaults();
  return Object.freeze({
    ...parseServiceBaseConfig(env),
    attachImage: envText(env, 'PLUGLINE_ATTACH_IMAGE') ?? d.attachImage,
    coalesceMs: envInteger(env, 'PLUGLINE_COALESCE_MS', d.coalesceMs, 0, 60_000),
  });
}
