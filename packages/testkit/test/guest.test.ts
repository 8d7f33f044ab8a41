/**
 * The guest harness's pure parts: the console report format, the console follower, the build
 * script's output and the launcher domain XML (checked against libvirt's schema when
 * virt-xml-validate is installed). Booting a guest is the guest tier's job (test/guest).
 */
import { execFile } from 'node:child_process';
import { appendFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import {
  GuestConsole,
  GuestHarnessError,
  hexOf,
  launcherDomainXml,
  parseBuildOutput,
  parseDiskReport,
  parseUevent,
  tempDir,
  waitFor,
} from '../src/index.js';

const run = promisify(execFile);

describe('parseDiskReport', () => {
  it('reads the sequence number and every disk', () => {
    const report = parseDiskReport(
      `PLUGLINE-DISKS 7 sda=PLG-1,${hexOf('PLGWRITEabcdefgh')},- vdb=my%20disk,-,- end`,
    );
    expect(report).toEqual({
      seq: 7,
      disks: [
        { name: 'sda', serial: 'PLG-1', head: hexOf('PLGWRITEabcdefgh'), sector1: undefined },
        { name: 'vdb', serial: 'my disk', head: undefined, sector1: undefined },
      ],
    });
  });

  it('reads a report without disks, and a disk without a serial', () => {
    expect(parseDiskReport('PLUGLINE-DISKS 1 end')).toEqual({ seq: 1, disks: [] });
    expect(parseDiskReport('PLUGLINE-DISKS 2 sda=-,00,00 end\r')?.disks[0]?.serial).toBe(undefined);
  });

  it.each([
    ['kernel output', '[    1.234] sd 0:0:0:0: [sda] Attached SCSI disk'],
    ['a report cut by kernel output', 'PLUGLINE-DISKS 3 sda=PLG-1,00,00'],
    ['a report with kernel output inside', 'PLUGLINE-DISKS 3 sda=PLG-1[  2.1] sd 0:0 end'],
    ['no sequence number', 'PLUGLINE-DISKS sda=PLG-1,00,00 end'],
  ])('ignores %s', (_what, line) => {
    expect(parseDiskReport(line)).toBeUndefined();
  });
});

describe('parseUevent', () => {
  it('reads the action and the device of a block uevent line', () => {
    expect(parseUevent('PLUGLINE-UEVENT add sdb')).toEqual({ action: 'add', device: 'sdb' });
    expect(parseUevent('PLUGLINE-UEVENT remove vdc\r')).toEqual({
      action: 'remove',
      device: 'vdc',
    });
  });

  it.each([
    ['a disk report', 'PLUGLINE-DISKS 1 end'],
    ['no device', 'PLUGLINE-UEVENT add'],
    ['kernel output inside', 'PLUGLINE-UEVENT add sd[  2.1] b'],
  ])('ignores %s', (_what, line) => {
    expect(parseUevent(line)).toBeUndefined();
  });
});

describe('GuestConsole', () => {
  let consoleUnderTest: GuestConsole | undefined;
  afterEach(async () => {
    await consoleUnderTest?.stop();
  });

  it('follows the file, keeps reports in order and waits for a disk to come and go', async () => {
    await using dir = await tempDir('plugline-console-');
    const file = dir.join('console.log');
    consoleUnderTest = new GuestConsole(file, 5);
    consoleUnderTest.start(); // the file does not exist yet
    await writeFile(file, 'SeaBIOS\nPLUGLINE-GUEST up kernel=6.1\nPLUGLINE-DISKS 1 end\n');
    await consoleUnderTest.waitForReport((r) => r.seq === 1, 'the first report', { timeout: 5000 });

    const appeared = consoleUnderTest.waitForDisk('S1', { timeout: 5000 });
    // A line written in two pieces is read as one.
    await appendFile(file, 'PLUGLINE-DISKS 2 sda=S1,');
    await appendFile(file, '00,00 end\n');
    const { disk, report } = await appeared;
    expect(disk).toMatchObject({ name: 'sda', serial: 'S1' });
    expect(report.seq).toBe(2);

    // Losing its serial first is not gone yet: the disk must leave.
    const gone = consoleUnderTest.waitForDiskGone('S1', { timeout: 5000 });
    await appendFile(file, 'PLUGLINE-DISKS 3 sda=-,00,00 end\n');
    await appendFile(file, 'PLUGLINE-DISKS 4 end\n');
    expect((await gone).seq).toBe(4);
    expect(consoleUnderTest.reports.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    await appendFile(file, 'PLUGLINE-UEVENT add sdb\n');
    await waitFor(() => consoleUnderTest!.blockEvents.length === 1, { timeout: 5000 });
    expect(consoleUnderTest.blockEvents[0]).toMatchObject({ action: 'add', device: 'sdb' });
    expect(consoleUnderTest.output()).toContain('PLUGLINE-GUEST up');
  });

  it('times out naming what the guest last reported', async () => {
    await using dir = await tempDir('plugline-console-');
    const file = dir.join('console.log');
    await writeFile(file, 'PLUGLINE-DISKS 1 vda=OTHER,00,00 end\n');
    consoleUnderTest = new GuestConsole(file, 5);
    await expect(consoleUnderTest.waitForDisk('S1', { timeout: 100 })).rejects.toThrow(
      /serial S1 \(last: #1 vda=OTHER\)/,
    );
  });
});

describe('parseBuildOutput', () => {
  it('takes the last key=value lines of the build script', () => {
    expect(
      parseBuildOutput('noise\nkernel-version=6.1.0-1-amd64\nkernel=/c/vmlinuz\ninitrd=/c/i.img\n'),
    ).toEqual({ kernelVersion: '6.1.0-1-amd64', kernel: '/c/vmlinuz', initrd: '/c/i.img' });
  });

  it('refuses output without them', () => {
    expect(() => parseBuildOutput('build-guest: failed')).toThrow(GuestHarnessError);
  });
});

describe('launcherDomainXml', () => {
  const xml = launcherDomainXml({
    name: 'default_demo',
    kernel: '/k/vmlinuz',
    initrd: '/k/initrd.img',
    serialLog: "/tmp/it's/console.log",
    disks: [
      { name: 'rootdisk', bus: 'virtio', target: 'vda', source: '/k/root.img' },
      { name: 'data', bus: 'scsi', target: 'sdb', source: '/k/data.img', serial: 'D1' },
    ],
  });

  it('is a TCG domain with ACPI, a virtio-scsi controller, direct kernel boot and a serial file', () => {
    expect(xml).toContain("<domain type='qemu'>");
    expect(xml).toContain('<name>default_demo</name>');
    expect(xml).toContain('<acpi/>');
    expect(xml).toContain("<controller type='scsi' index='0' model='virtio-scsi'/>");
    expect(xml).toContain('<kernel>/k/vmlinuz</kernel>');
    expect(xml).toContain('console=ttyS0');
    expect(xml).toContain("<source path='/tmp/it&apos;s/console.log'/>");
    expect(xml).not.toContain('<interface');
    expect(xml).toContain("<target dev='vda' bus='virtio'/>");
    expect(xml).toContain("<alias name='ua-rootdisk'/>");
    expect(xml).toContain(
      "<serial>D1</serial><alias name='ua-data'/><address type='drive' controller='0' bus='0' target='0' unit='1'/>",
    );
  });

  it('passes libvirt schema validation', async (context) => {
    await using dir = await tempDir('plugline-domxml-');
    await writeFile(dir.join('domain.xml'), xml);
    try {
      await run('virt-xml-validate', [dir.join('domain.xml'), 'domain']);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        context.skip('virt-xml-validate is not installed');
      }
      throw error;
    }
  });
});
