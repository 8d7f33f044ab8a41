import { chmod, mkdir, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { GuestConsole } from './console.js';
import type { ReceivedDiskReport } from './console.js';
import { GuestHarnessError } from './errors.js';
import type { GuestImage } from './image.js';
import type { LibvirtDaemons } from './libvirt.js';

/** A disk the launcher domain starts with (a VMI's own disks, e.g. its `rootdisk`). */
export interface LauncherDisk {
  /** The VMI disk's name (the alias is `ua-<name>`, as virt-launcher names user disks). */
  name: string;
  bus: 'virtio' | 'scsi';
  /** `vda`, `sda`, ... */
  target: string;
  /** An image file. */
  source: string;
  serial?: string;
}

export interface LauncherDomainOptions {
  /** The domain name: virt-launcher's `<namespace>_<vmi>`. */
  name: string;
  kernel: string;
  initrd: string;
  /** The file the guest's serial console (ttyS0) is written to. */
  serialLog: string;
  /** Default 256. */
  memoryMiB?: number;
  /** Extra kernel arguments. */
  cmdline?: string;
  /** Disks present from the start (default none). */
  disks?: readonly LauncherDisk[];
}

function diskXml(disk: LauncherDisk, unit: number): string {
  const serial = disk.serial === undefined ? '' : `<serial>${escapeXml(disk.serial)}</serial>`;
  const address =
    disk.bus === 'scsi'
      ? `<address type='drive' controller='0' bus='0' target='0' unit='${unit}'/>`
      : '';
  return `    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${escapeXml(disk.source)}'/>
      <target dev='${escapeXml(disk.target)}' bus='${disk.bus}'/>
      ${serial}<alias name='ua-${escapeXml(disk.name)}'/>${address}
    </disk>
`;
}

function escapeXml(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll("'", '&apos;')
    .replaceAll('"', '&quot;');
}

/**
 * The launcher domain of a VMI, as small as QEMU allows under TCG (KVM is not usable here):
 * `type='qemu'`, one vCPU, ACPI (the guest needs it to accept and release hot-plugged virtio
 * disks on the i440fx PCI bus), a virtio-scsi controller 0 for SCSI hotplug, direct kernel boot of
 * the test guest, the serial console to a file, and no network, USB, balloon or graphics.
 */
export function launcherDomainXml(options: LauncherDomainOptions): string {
  const cmdline = `console=ttyS0 loglevel=3 panic=-1 ${options.cmdline ?? ''}`.trim();
  return `<domain type='qemu'>
  <name>${escapeXml(options.name)}</name>
  <memory unit='MiB'>${options.memoryMiB ?? 256}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${escapeXml(options.kernel)}</kernel>
    <initrd>${escapeXml(options.initrd)}</initrd>
    <cmdline>${escapeXml(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='scsi' index='0' model='virtio-scsi'/>
${(options.disks ?? []).map((d) => diskXml(d, d.target.charCodeAt(2) - 97)).join('')}    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='${escapeXml(options.serialLog)}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

export interface StartGuestOptions {
  libvirt: LibvirtDaemons;
  image: GuestImage;
  /** The domain name (`<namespace>_<vmi>`). */
  name: string;
  memoryMiB?: number;
  /** How long the boot may take, to the guest's first disk report (default 120 s; ~10 s here). */
  bootTimeoutMs?: number;
  /** The VMI's own disks (empty sparse images are made for them; default none). */
  disks?: readonly LauncherDiskSpec[];
}

/** A disk of the VMI the guest starts with; its image is made by {@link startGuest}. */
export interface LauncherDiskSpec {
  name: string;
  bus: 'virtio' | 'scsi';
  target: string;
  serial?: string;
  /** Default 16. */
  sizeMiB?: number;
}

/** A running guest: a persistent domain (defined, then started) and its console. */
export interface Guest extends AsyncDisposable {
  readonly name: string;
  readonly console: GuestConsole;
  readonly serialLog: string;
  /** From `virsh start` to the guest's first disk report. */
  readonly bootMs: number;
  /** The guest's first report (disks present at boot). */
  readonly firstReport: ReceivedDiskReport;
  /** Destroys and undefines the domain (idempotent; the daemons' teardown does it too). */
  stop(): Promise<void>;
}

/** Defines and starts the launcher domain, and waits for the guest's first report. */
export async function startGuest(options: StartGuestOptions): Promise<Guest> {
  const { libvirt, name } = options;
  const guestDir = path.join(libvirt.dir, 'guests', name);
  await mkdir(guestDir, { recursive: true });
  // QEMU runs as root here, but keep the folder reachable for a QEMU that does not.
  await chmod(libvirt.dir, 0o755);
  const serialLog = path.join(guestDir, 'console.log');
  const xmlFile = path.join(guestDir, 'domain.xml');
  const disks: LauncherDisk[] = [];
  for (const spec of options.disks ?? []) {
    const source = path.join(guestDir, `${spec.name}.img`);
    await writeFile(source, '');
    await truncate(source, (spec.sizeMiB ?? 16) * 1024 * 1024);
    disks.push({
      name: spec.name,
      bus: spec.bus,
      target: spec.target,
      source,
      serial: spec.serial,
    });
  }
  await writeFile(
    xmlFile,
    launcherDomainXml({
      name,
      kernel: options.image.kernel,
      initrd: options.image.initrd,
      serialLog,
      memoryMiB: options.memoryMiB,
      disks,
    }),
  );
  const guestConsole = new GuestConsole(serialLog);
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      await guestConsole.stop();
      await libvirt.virsh(['destroy', name]).catch(() => undefined);
      await libvirt.virsh(['undefine', name]).catch(() => undefined);
    })();
    return stopped;
  };

  try {
    await libvirt.virsh(['define', xmlFile]);
    guestConsole.start();
    const startedAt = Date.now();
    await libvirt.virsh(['start', name]);
    const firstReport = await guestConsole.waitForReport(() => true, 'its first disk report', {
      timeout: options.bootTimeoutMs ?? 120_000,
    });
    const guest: Guest = {
      name,
      console: guestConsole,
      serialLog,
      bootMs: firstReport.receivedAt - startedAt,
      firstReport,
      stop,
      [Symbol.asyncDispose]: stop,
    };
    return guest;
  } catch (error) {
    const text = guestConsole.output().slice(-3000);
    await stop();
    throw new GuestHarnessError(
      `guest ${name} did not boot: ${String(error)}\nconsole:\n${text}\n${await libvirt.diagnostics()}`,
      { cause: error },
    );
  }
}
