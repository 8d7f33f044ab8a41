export {
  LAUNCHER_HOTPLUG_DIR,
  toLibvirtDisk,
  diskXml,
  prepareLibvirtDisk,
  hotplugSourcePath,
  probeDirectIO,
} from './converter.js';
export type { HotplugDiskInput, LibvirtDisk, DirectIOProbe } from './converter.js';

export {
  TargetPrefix,
  MAX_TARGET_INDEX,
  isHotplugBus,
  targetPrefix,
  targetName,
  parseTarget,
  targetIndex,
  allocateTargets,
} from './targets.js';
export type { HotplugBus, ExistingTarget, WantedTarget } from './targets.js';

export { parseDomainDisks, parseDiskXml, domainDiskElement } from './domain-xml.js';
export type { DomainDisk } from './domain-xml.js';

export {
  HypervisorReason,
  DeviceEventType,
  EventHub,
  isDiskXml,
  classifyLibvirtError,
} from './driver.js';
export type {
  DomainDriver,
  DeviceEvent,
  LifecycleEvent,
  DomainEvent,
  CallOptions,
} from './driver.js';

export { createSimulatedDriver, readSimulatedDomains } from './simulated.js';
export type { SimulatedDomainState, SimulatedDriver, SimulatedDriverOptions } from './simulated.js';

export { createLibvirtDriver, parseVirshEventLine, DEFAULT_LIBVIRT_URI } from './libvirt.js';
export type { LibvirtDriverOptions, ConfigMode } from './libvirt.js';

export {
  USER_ALIAS_PREFIX,
  domainNameOf,
  parseDomainName,
  aliasOf,
  volumeOfAlias,
} from './names.js';

export { el, renderXml, escapeText, escapeAttribute } from './xml.js';
export type { XmlElement } from './xml.js';
