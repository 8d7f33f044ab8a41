import { join } from 'node:path';

import {
  envInteger,
  envOneOf,
  envText,
  parseNodeConfig,
  parseServiceBaseConfig,
  serviceBaseDefaults,
  type NodeConfig,
  type ServiceBaseConfig,
} from '@plugline/bus';

/** Which hypervisor the domain-updater drives. */
export const HypervisorKind = { Simulated: 'simulated', Libvirt: 'libvirt' } as const;
export type HypervisorKind = (typeof HypervisorKind)[keyof typeof HypervisorKind];

/**
 * Which folder the disk sources name: `host` (the host path of the launcher's `hotplug-disks`
 * emptyDir, for the simulated hypervisor or a libvirt on the host) or `launcher` (the path
 * inside virt-launcher, `/var/run/kubevirt/hotplug-disks`, for the launcher's own libvirt).
 */
export const DiskSourceDir = { Host: 'host', Launcher: 'launcher' } as const;
export type DiskSourceDir = (typeof DiskSourceDir)[keyof typeof DiskSourceDir];

/** The common service variables, the node stage's, and the hypervisor's. */
export interface DomainUpdaterConfig extends ServiceBaseConfig, NodeConfig {
  readonly hypervisor: HypervisorKind;
  readonly libvirtUri: string;
  /** The simulated hypervisor's state folder (default `<stateDir>/simulated-hypervisor`). */
  readonly simStateDir: string;
  readonly simDetachDelayMs: number;
  /** How long the guest may hold a disk after a detach before the unplug is reported failed. */
  readonly detachTimeoutMs: number;
  readonly diskSourceDir: DiskSourceDir;
  /** How long the confirmation waits for `device-added` before it trusts the XML alone. */
  readonly confirmTimeoutMs: number;
}

/** Defaults of everything that has one. */
export function defaults() {
  return {
    ...serviceBaseDefaults(),
    hypervisor: HypervisorKind.Simulated as HypervisorKind,
    libvirtUri: 'qemu:///system',
    simDetachDelayMs: 50,
    detachTimeoutMs: 60_000,
    diskSourceDir: DiskSourceDir.Host as DiskSourceDir,
    confirmTimeoutMs: 5000,
  };
}

/** Reads the domain-updater's configuration; fails fast with a `ConfigError` naming the variable. */
export function parseConfig(env: NodeJS.ProcessEnv): DomainUpdaterConfig {
  const d = defaults();
  const node = parseNodeConfig(env);
  return Object.freeze({
    ...parseServiceBaseConfig(env),
    ...node,
    hypervisor: envOneOf(env, 'PLUGLINE_HYPERVISOR', Object.values(HypervisorKind), d.hypervisor),
    libvirtUri: envText(env, 'LIBVIRT_URI') ?? d.libvirtUri,
    simStateDir:
      envText(env, 'PLUGLINE_SIM_STATE_DIR') ?? join(node.stateDir, 'simulated-hypervisor'),
    simDetachDelayMs: envInteger(
      env,
      'PLUGLINE_SIM_DETACH_DELAY_MS',
      d.simDetachDelayMs,
      0,
      3_600_000,
    ),
    detachTimeoutMs: envInteger(
      env,
      'PLUGLINE_DETACH_TIMEOUT_MS',
      d.detachTimeoutMs,
      1,
      86_400_000,
    ),
    diskSourceDir: envOneOf(
      env,
      'PLUGLINE_DISK_SOURCE_DIR',
      Object.values(DiskSourceDir),
      d.diskSourceDir,
    ),
    confirmTimeoutMs: envInteger(
      env,
      'PLUGLINE_CONFIRM_TIMEOUT_MS',
      d.confirmTimeoutMs,
      1,
      600_000,
    ),
  });
}
