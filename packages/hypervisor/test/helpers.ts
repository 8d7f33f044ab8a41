import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { el, renderXml } from '../src/index.js';

const run = promisify(execFile);

/** A minimal domain around the given `<disk>` elements (XML text made by the code under test). */
export function wrapInDomain(diskXmls: readonly string[]): string {
  const skeleton = renderXml(
    el(
      'domain',
      { type: 'qemu' },
      el('name', {}, 'plugline-validate'),
      el('memory', { unit: 'MiB' }, '64'),
      el('os', {}, el('type', { arch: 'x86_64' }, 'hvm')),
      el('devices', {}, el('controller', { type: 'scsi', index: 0, model: 'virtio-scsi' })),
    ),
  );
  const close = skeleton.lastIndexOf('</devices>');
  return `${skeleton.slice(0, close)}${diskXmls.join('\n')}\n${skeleton.slice(close)}`;
}

export interface Validation {
  valid: boolean;
  output: string;
}

/** Runs `virt-xml-validate <file> domain` on a minimal domain holding the disks. */
export async function validateDisks(diskXmls: readonly string[]): Promise<Validation> {
  const dir = await mkdtemp(path.join(tmpdir(), 'plugline-xmlv-'));
  try {
    const file = path.join(dir, 'domain.xml');
    await writeFile(file, wrapInDomain(diskXmls));
    try {
      const { stdout, stderr } = await run('virt-xml-validate', [file, 'domain']);
      return { valid: true, output: `${stdout}${stderr}` };
    } catch (error) {
      const e = error as { code?: unknown; stdout?: string; stderr?: string };
      if (e.code === 'ENOENT') {
        throw new Error('virt-xml-validate is missing: install libvirt-clients (scripts/install)');
      }
      return { valid: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function tempDir(
  prefix: string,
): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Runs `virsh -c <uri> ...` for a test (domain set-up and checks the driver does not offer). */
export async function virsh(uri: string, args: string[]): Promise<string> {
  const { stdout } = await run('virsh', ['-q', '-c', uri, ...args], { timeout: 60_000 });
  return stdout;
}

/**
 * A tiny domain QEMU can run without any OS: TCG, 64 MiB, a virtio-scsi controller, ACPI (for PCI
 * hotplug of virtio disks). SeaBIOS finds nothing to boot and loops, which is enough for hotplug.
 */
export function tinyDomainXml(name: string): string {
  return renderXml(
    el(
      'domain',
      { type: 'qemu' },
      el('name', {}, name),
      el('memory', { unit: 'MiB' }, '64'),
      el('vcpu', {}, '1'),
      el('os', {}, el('type', { arch: 'x86_64' }, 'hvm')),
      el('features', {}, el('acpi')),
      el('devices', {}, el('controller', { type: 'scsi', index: 0, model: 'virtio-scsi' })),
    ),
  );
}

export interface TestDomain {
  name: string;
  /** `virsh destroy` (and `undefine` when persistent); safe to call twice. */
  remove: () => Promise<void>;
}

/** Starts a tiny domain: transient (`virsh create`) or persistent (`define` + `start`). */
export async function startTinyDomain(
  uri: string,
  name: string,
  dir: string,
  persistent = false,
): Promise<TestDomain> {
  const file = path.join(dir, `${name}.xml`);
  await writeFile(file, tinyDomainXml(name));
  const remove = async (): Promise<void> => {
    await virsh(uri, ['destroy', name]).catch(() => undefined);
    if (persistent) await virsh(uri, ['undefine', name]).catch(() => undefined);
  };
  try {
    if (persistent) {
      await virsh(uri, ['define', file]);
      await virsh(uri, ['start', name]);
    } else {
      await virsh(uri, ['create', file]);
    }
  } catch (error) {
    await remove();
    throw error;
  }
  return { name, remove };
}
