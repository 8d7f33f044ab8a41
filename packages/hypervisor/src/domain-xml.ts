import { XMLParser } from 'fast-xml-parser';
import { HypervisorError } from '@plugline/contracts';
import { el } from './xml.js';
import type { XmlElement } from './xml.js';

/** One `<disk>` of a domain, as read from its XML. */
export interface DomainDisk {
  /** `file`, `block`, `network`, ... */
  type: string | undefined;
  /** `disk`, `lun`, `cdrom`, `floppy`. */
  device: string;
  /** `target dev`, e.g. `sda`. */
  target: string;
  /** `target bus`, e.g. `scsi`. */
  bus: string | undefined;
  /** `source file` or `source dev` (undefined for an empty cdrom). */
  sourcePath: string | undefined;
  serial: string | undefined;
  alias: string | undefined;
  readonly: boolean;
  shareable: boolean;
  driver: {
    type: string | undefined;
    cache: string | undefined;
    io: string | undefined;
    errorPolicy: string | undefined;
    discard: string | undefined;
  };
  /** The drive address (SCSI), when there is one. */
  address: { controller: number; bus: number; target: number; unit: number } | undefined;
  bootOrder: number | undefined;
}

type Node = Record<string, unknown>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  // Decodes numeric character references too (`&#39;`), not only the five named entities.
  htmlEntities: true,
  isArray: (name, jpath) => name === 'disk' && String(jpath) === 'domain.devices.disk',
});

const parseOne = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  htmlEntities: true,
});

function child(node: Node, name: string): Node | undefined {
  const value = node[name];
  if (Array.isArray(value)) return value[0] as Node | undefined;
  if (value === undefined) return undefined;
  return typeof value === 'object' && value !== null ? (value as Node) : { '#text': value };
}

function attr(node: Node | undefined, name: string): string | undefined {
  const value = node?.[`@_${name}`];
  return typeof value === 'string' ? value : undefined;
}

function text(node: Node, name: string): string | undefined {
  const value = node[name];
  if (typeof value === 'string') return value;
  const inner = child(node, name)?.['#text'];
  return typeof inner === 'string' ? inner : undefined;
}

function num(value: string | undefined): number {
  if (value === undefined) return 0;
  const n = Number(value);
  return Number.isFinite(n) ? n : 0;
}

function toDisk(node: Node): DomainDisk | undefined {
  const targetNode = child(node, 'target');
  const target = attr(targetNode, 'dev');
  if (target === undefined) return undefined;
  const source = child(node, 'source');
  const driver = child(node, 'driver');
  const address = child(node, 'address');
  return {
    type: attr(node, 'type'),
    device: attr(node, 'device') ?? 'disk',
    target,
    bus: attr(targetNode, 'bus'),
    sourcePath: attr(source, 'file') ?? attr(source, 'dev') ?? attr(source, 'name'),
    serial: text(node, 'serial'),
    alias: attr(child(node, 'alias'), 'name'),
    readonly: node.readonly !== undefined,
    shareable: node.shareable !== undefined,
    driver: {
      type: attr(driver, 'type'),
      cache: attr(driver, 'cache'),
      io: attr(driver, 'io'),
      errorPolicy: attr(driver, 'error_policy'),
      discard: attr(driver, 'discard'),
    },
    address:
      attr(address, 'type') === 'drive'
        ? {
            controller: num(attr(address, 'controller')),
            bus: num(attr(address, 'bus')),
            target: num(attr(address, 'target')),
            unit: num(attr(address, 'unit')),
          }
        : undefined,
    bootOrder:
      attr(child(node, 'boot'), 'order') === undefined
        ? undefined
        : num(attr(child(node, 'boot'), 'order')),
  };
}

function parse(p: XMLParser, xml: string, what: string): Node {
  try {
    return p.parse(xml, true) as Node;
  } catch (error) {
    throw new HypervisorError('InvalidXml', `cannot parse ${what} XML`, { cause: error });
  }
}

/** Lists the disks of a domain XML (`virsh dumpxml`), in document order. */
export function parseDomainDisks(domainXml: string): DomainDisk[] {
  const root = child(parse(parser, domainXml, 'domain'), 'domain');
  if (root === undefined) throw new HypervisorError('InvalidXml', 'not a <domain> document');
  const devices = child(root, 'devices');
  const disks = (devices?.disk ?? []) as Node[];
  return disks.map(toDisk).filter((d): d is DomainDisk => d !== undefined);
}

/** Reads one `<disk>` document (what attach/detach take). */
export function parseDiskXml(diskXml: string): DomainDisk {
  const node = child(parse(parseOne, diskXml, 'disk'), 'disk');
  const disk = node === undefined ? undefined : toDisk(node);
  if (disk === undefined) {
    throw new HypervisorError('InvalidXml', 'not a <disk> element with a target dev');
  }
  return disk;
}

/** Builds the `<disk>` element of a parsed disk back (the fields {@link DomainDisk} keeps). */
export function domainDiskElement(disk: DomainDisk): XmlElement {
  const sourceAttr = disk.type === 'block' ? 'dev' : 'file';
  return el(
    'disk',
    { type: disk.type, device: disk.device },
    el('driver', {
      name: 'qemu',
      type: disk.driver.type,
      cache: disk.driver.cache,
      io: disk.driver.io,
      error_policy: disk.driver.errorPolicy,
      discard: disk.driver.discard,
    }),
    disk.sourcePath !== undefined && el('source', { [sourceAttr]: disk.sourcePath }),
    el('target', { dev: disk.target, bus: disk.bus }),
    disk.bootOrder !== undefined && el('boot', { order: disk.bootOrder }),
    disk.readonly && el('readonly'),
    disk.shareable && el('shareable'),
    disk.serial !== undefined && el('serial', {}, disk.serial),
    disk.alias !== undefined && el('alias', { name: disk.alias }),
    disk.address !== undefined && el('address', { type: 'drive', ...disk.address }),
  );
}
