import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import type { Disk, VolumeStatus } from '@plugline/contracts';
import {
  allocateTargets,
  createSimulatedDriver,
  domainNameOf,
  prepareLibvirtDisk,
  volumeOfAlias,
} from '../src/index.js';
import type { DomainEvent, SimulatedDriver } from '../src/index.js';
import { tempDir, validateDisks } from './helpers.js';

let dir: string;
let removeDir: () => Promise<void>;
let driver: SimulatedDriver;

beforeEach(async () => {
  ({ dir, remove: removeDir } = await tempDir('plugline-flow-'));
  driver = createSimulatedDriver({ detachDelayMs: 20 });
});

afterEach(async () => {
  await driver.close();
  await removeDir();
});

/** What the domain-updater does for a set of volumes: allocate, convert, attach. */
async function sync(
  domain: string,
  status: VolumeStatus[],
  disks: Disk[],
): Promise<Map<string, string>> {
  const live = await driver.listDisks(domain);
  const targets = allocateTargets(
    status,
    disks.map((d) => ({ name: d.name, bus: d.disk?.bus === 'virtio' ? 'virtio' : 'scsi' })),
    live.map((d) => d.target),
  );
  const xmls: string[] = [];
  for (const disk of disks) {
    if (live.some((d) => volumeOfAlias(d.alias) === disk.name)) continue;
    await writeFile(path.join(dir, `${disk.name}.img`), Buffer.alloc(512));
    const converted = await prepareLibvirtDisk(
      {
        volumeName: disk.name,
        disk,
        volumeMode: 'Filesystem',
        target: targets.get(disk.name)!,
        hotplugDir: dir,
      },
      { probe: () => Promise.resolve(true) },
    );
    xmls.push(converted.xml);
    await driver.attachDisk(domain, converted.xml);
  }
  if (xmls.length > 0) expect((await validateDisks(xmls)).valid).toBe(true);
  return targets;
}

it('allocates, converts and attaches volumes; a freed letter is reused after the unplug completes', async () => {
  const domain = domainNameOf('flow-ns', 'flow-vm');
  await driver.defineDomain(domain);
  const events: DomainEvent[] = [];
  driver.subscribe((e) => events.push(e));

  const disks: Disk[] = [
    { name: 'a', disk: { bus: 'scsi' } },
    { name: 'b', disk: { bus: 'virtio' } },
    { name: 'c', disk: { bus: 'scsi' } },
  ];
  const first = await sync(domain, [], disks);
  expect(Object.fromEntries(first)).toEqual({ a: 'sda', b: 'vda', c: 'sdb' });
  const status = [...first].map(([name, target]) => ({ name, target }));

  // Unplug a: while it is still in the status and the domain, a new volume does not get sda.
  await driver.detachDisk(domain, 'sda');
  const during = allocateTargets(
    status,
    [{ name: 'd', bus: 'scsi' }],
    (await driver.listDisks(domain)).map((d) => d.target),
  );
  expect(during.get('d')).toBe('sdc');

  await vi.waitFor(() =>
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'device-removed', alias: 'ua-a' }),
    ),
  );
  const remaining = status.filter((s) => s.name !== 'a');
  const after = await sync(domain, remaining, [
    ...disks.slice(1),
    { name: 'd', disk: { bus: 'scsi' } },
  ]);
  expect(Object.fromEntries(after)).toEqual({ b: 'vda', c: 'sdb', d: 'sda' });
  expect((await driver.listDisks(domain)).map((d) => [d.alias, d.target, d.address?.unit])).toEqual(
    [
      ['ua-b', 'vda', undefined],
      ['ua-c', 'sdb', 1],
      ['ua-d', 'sda', 0],
    ],
  );
});
