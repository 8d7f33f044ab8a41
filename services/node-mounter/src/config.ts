import {
  absolutePath,
  envText,
  parseNodeConfig,
  parseServiceBaseConfig,
  serviceBaseDefaults,
  type NodeConfig,
  type ServiceBaseConfig,
} from '@plugline/bus';

/**
 * The node-mounter's configuration, parsed once from the environment (the only module that reads
 * it). Common service variables (`PLUGLINE_CONCURRENCY`: units in flight in this process) plus the
 * node stage's (`NODE_NAME`, `KUBELET_ROOT`, `PLUGLINE_STATE_DIR`: where the per-VMI checkpoints
 * live) and the optional `PLUGLINE_DEVICE_CGROUP_ROOT`.
 */
export interface NodeMounterConfig extends ServiceBaseConfig, NodeConfig {
  /**
   * `PLUGLINE_DEVICE_CGROUP_ROOT`: the devices cgroup that holds the pods' cgroups
   * (`<root>/pod<launcherUID>` is the launcher's). Unset: block volumes get no cgroup rule.
   */
  readonly deviceCgroupRoot: string | undefined;
}

/** The base values of the optional settings. */
export function defaults() {
  return { ...serviceBaseDefaults(), deviceCgroupRoot: undefined as string | undefined };
}

/** Merges the environment over {@link defaults}, validates it and freezes the result. */
export function parseConfig(env: NodeJS.ProcessEnv): NodeMounterConfig {
  const node = parseNodeConfig(env);
  const cgroupRoot = envText(env, 'PLUGLINE_DEVICE_CGROUP_ROOT');
  return Object.freeze({
    ...parseServiceBaseConfig(env),
    ...node,
    deviceCgroupRoot:
      cgroupRoot === undefined
        ? defaults().deviceCgroupRoot
        : absolutePath('PLUGLINE_DEVICE_CGROUP_ROOT', cgroupRoot),
  });
}
