import { describe, expect, it } from 'vitest';
import {
  DeviceEventType,
  domainNameOf,
  el,
  parseDiskXml,
  parseDomainDisks,
  parseDomainName,
  parseVirshEventLine,
  renderXml,
  volumeOfAlias,
  aliasOf,
} from '../src/index.js';

describe('the XML builder', () => {
  it('escapes attribute values and text so values cannot change the structure', () => {
    const value = `a&b<c>d"e'f`;
    const xml = renderXml(el('disk', { type: value }, el('serial', {}, value)), 0);
    expect(xml).toBe(
      "<disk type='a&amp;b&lt;c&gt;d&quot;e&apos;f'><serial>a&amp;b&lt;c&gt;d\"e'f</serial></disk>",
    );
    const parsed = parseDiskXml(
      renderXml(
        el('disk', { type: value }, el('target', { dev: 'sda' }), el('serial', {}, value)),
        0,
      ),
    );
    expect(parsed.type).toBe(value);
    expect(parsed.serial).toBe(value);
  });

  it('keeps line breaks in attributes', () => {
    const xml = renderXml(
      el('disk', {}, el('target', { dev: 'sda' }), el('source', { file: '/a\nb\tc' })),
    );
    expect(parseDiskXml(xml).sourcePath).toBe('/a\nb\tc');
  });

  it('leaves out undefined attributes and false children', () => {
    expect(renderXml(el('a', { x: undefined, y: 1 }, false, undefined), 0)).toBe("<a y='1'/>");
  });

  it('refuses element and attribute names that are not XML names', () => {
    expect(() => el('a b')).toThrow(/not an XML name/);
    expect(() => el('a', { "x='1' y": '2' })).toThrow(/not an XML name/);
  });
});

const LIVE_DOMAIN = `<domain type='qemu' id='1'>
  <name>ns_vm</name>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' error_policy='stop' discard='unmap'/>
      <source file='/var/run/kubevirt/hotplug-disks/data.img' index='1'/>
      <backingStore/>
      <target dev='sda' bus='scsi'/>
      <serial>s-1.x</serial>
      <alias name='ua-data'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <disk type='block' device='lun'>
      <driver name='qemu' type='raw' cache='writethrough' io='threads'/>
      <source dev='/dev/x&amp;y&apos;&#39;' index='2'/>
      <target dev='sdb' bus='scsi'/>
      <readonly/>
      <shareable/>
      <boot order='2'/>
      <alias name='ua-blk'/>
      <address type='drive' controller='0' bus='0' target='0' unit='1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'/>
  </devices>
</domain>`;

describe('parseDomainDisks', () => {
  it('lists every disk with its target, bus, source, serial, alias and device', () => {
    const disks = parseDomainDisks(LIVE_DOMAIN);
    expect(disks.map((d) => [d.target, d.bus, d.device, d.alias])).toEqual([
      ['sda', 'scsi', 'disk', 'ua-data'],
      ['sdb', 'scsi', 'lun', 'ua-blk'],
      ['hdc', 'ide', 'cdrom', undefined],
    ]);
    expect(disks[0]).toMatchObject({
      type: 'file',
      sourcePath: '/var/run/kubevirt/hotplug-disks/data.img',
      serial: 's-1.x',
      readonly: false,
      driver: { cache: 'none', errorPolicy: 'stop', discard: 'unmap', type: 'raw', io: undefined },
      address: { controller: 0, bus: 0, target: 0, unit: 0 },
    });
    expect(disks[1]).toMatchObject({
      type: 'block',
      sourcePath: "/dev/x&y''",
      readonly: true,
      shareable: true,
      bootOrder: 2,
      driver: { cache: 'writethrough', io: 'threads' },
    });
    expect(disks[2]!.sourcePath).toBeUndefined();
  });

  it('handles a domain with a single disk and one without devices', () => {
    const one = `<domain><devices><disk type='file'><target dev='vda' bus='virtio'/><serial>7</serial></disk></devices></domain>`;
    expect(parseDomainDisks(one)).toMatchObject([{ target: 'vda', serial: '7' }]);
    expect(parseDomainDisks('<domain><name>x</name></domain>')).toEqual([]);
  });

  it('refuses what is not a domain', () => {
    expect(() => parseDomainDisks('<domain><devices>')).toThrow(
      expect.objectContaining({ reason: 'InvalidXml' }),
    );
    expect(() => parseDomainDisks('<disk/>')).toThrow(/not a <domain>/);
    expect(() => parseDiskXml('<disk/>')).toThrow(/target dev/);
  });
});

describe('names', () => {
  it('builds and splits domain names like virt-launcher', () => {
    expect(domainNameOf('default', 'vm.one')).toBe('default_vm.one');
    expect(parseDomainName('default_vm.one')).toEqual({ namespace: 'default', vmi: 'vm.one' });
    expect(parseDomainName('plain')).toBeUndefined();
    expect(() => domainNameOf('Bad_NS', 'vm')).toThrow(/namespace/);
    expect(() => domainNameOf('ns', "vm'; x")).toThrow(/vmi/);
  });

  it('maps aliases to volumes', () => {
    expect(aliasOf('data')).toBe('ua-data');
    expect(volumeOfAlias('ua-data')).toBe('data');
    expect(volumeOfAlias('scsi0-0-0-1')).toBeUndefined();
    expect(volumeOfAlias('ua-')).toBeUndefined();
  });
});

describe('parseVirshEventLine', () => {
  it('reads device and lifecycle events as virsh 9 prints them', () => {
    expect(
      parseVirshEventLine(
        "2026-11-22 05:08:10.286+0000: event 'device-added' for domain 'hvx_probe': ua-data",
      ),
    ).toEqual({
      type: DeviceEventType.Added,
      domain: 'hvx_probe',
      alias: 'ua-data',
      time: new Date('2026-11-22T05:08:10.286Z'),
    });
    expect(parseVirshEventLine("event 'device-removed' for domain 'ns_vm': ua-x")).toMatchObject({
      type: 'device-removed',
      domain: 'ns_vm',
      alias: 'ua-x',
    });
    expect(
      parseVirshEventLine(
        "2026-11-22 05:08:10.286+0100: event 'lifecycle' for domain 'd': Started Booted",
      ),
    ).toMatchObject({
      type: 'lifecycle',
      detail: 'Started Booted',
      time: new Date('2026-11-22T04:08:10.286Z'),
    });
  });

  it('ignores other events and noise', () => {
    expect(parseVirshEventLine("event 'reboot' for domain 'd'")).toBeUndefined();
    expect(
      parseVirshEventLine("event 'tray-change' for domain 'd': disk hdc opened"),
    ).toBeUndefined();
    expect(parseVirshEventLine('events received: 3')).toBeUndefined();
    expect(parseVirshEventLine('')).toBeUndefined();
  });
});
