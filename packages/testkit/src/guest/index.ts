export { buildGuest, defaultGuestScript, parseBuildOutput } from './image.js';
export type { GuestImage, BuildGuestOptions } from './image.js';
export { startLibvirt } from './libvirt.js';
export type { LibvirtDaemons, StartLibvirtOptions } from './libvirt.js';
export { launcherDomainXml, startGuest } from './domain.js';
export type {
  LauncherDomainOptions,
  LauncherDisk,
  LauncherDiskSpec,
  StartGuestOptions,
  Guest,
} from './domain.js';
export { GuestConsole, parseDiskReport, parseUevent, hexOf } from './console.js';
export type {
  GuestDisk,
  DiskReport,
  ReceivedDiskReport,
  GuestUevent,
  ConsoleWaitOptions,
} from './console.js';
export { attachLoopDevice } from './loop.js';
export type { LoopDevice } from './loop.js';
export { guestGate, GUEST_TOOLS } from './gate.js';
export type { GuestGate } from './gate.js';
export { startGuestHarness } from './harness.js';
export type { GuestHarness, StartGuestHarnessOptions } from './harness.js';
export { GuestHarnessError } from './errors.js';
