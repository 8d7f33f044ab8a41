import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HypervisorError } from '@plugline/contracts';
import {
  createSimulatedDriver,
  diskXml,
  domainNameOf,
  parseDomainDisks,
  readSimulatedDomains,
} from '../src/index.js';
import type { DomainEvent, SimulatedDriver, SimulatedDriverOptions } from '../src/index.js';
import { tempDir } from './helpers.js';

const DOMAIN = domainNameOf('plugline-sim-namespace', 'vmi-with-a-long-name-b41c');

let dir: string;
let removeDir: () => Promise<void>;
const drivers: SimulatedDriver[] = [];

beforeEach(async () => {
  ({ dir, remove: removeDir } = await tempDir('plugline-sim-'));
});

afterEach(async () => {
  await Promise.all(drivers.splice(0).map((d) => d.close()));
  await removeDir();
});

async function driverWith(options: SimulatedDriverOptions = {}): Promise<SimulatedDriver> {
  const driver = createSimulatedDriver({ detachDelayMs: 50, ...options });
  drivers.push(driver);
  await driver.defineDomain(DOMAIN);
  return driver;
}

/** Creates the volume's image in the hotplug folder and returns its disk XML. */
async function volume(
  name: string,
  target: string,
  extra: { serial?: string; bus?: 'scsi' | 'virtio'; readonly?: boolean } = {},
): Promise<string> {
  await writeFile(path.join(dir, `${name}.img`), Buffer.alloc(1024));
  return diskXml({
    volumeName: name,
    disk: {
      name,
      disk: { bus: extra.bus ?? 'scsi', readonly: extra.readonly },
      serial: extra.serial,
    },
    volumeMode: 'Filesystem',
    target,
    hotplugDir: dir,
  });
}

function record(driver: SimulatedDriver): DomainEvent[] {
  const seen: DomainEvent[] = [];
  driver.subscribe((event) => seen.push(event));
  return seen;
}

async function rejection(promise: Promise<unknown>): Promise<HypervisorError> {
  const error: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(HypervisorError);
  return error as HypervisorError;
}

describe('simulated driver', () => {
  it('attaches a disk, lists it from the domain XML and emits device-added', async () => {
    const driver = await driverWith();
    const events = record(driver);
    await driver.attachDisk(DOMAIN, await volume('data', 'sda', { serial: 'SER-data' }));
    const disks = await driver.listDisks(DOMAIN);
    expect(disks).toHaveLength(1);
    expect(disks[0]).toMatchObject({
      target: 'sda',
      bus: 'scsi',
      device: 'disk',
      alias: 'ua-data',
      serial: 'SER-data',
      sourcePath: path.join(dir, 'data.img'),
      address: { controller: 0, unit: 0 },
    });
    expect(await driver.domainXml(DOMAIN)).toContain(
      "<controller type='scsi' index='0' model='virtio-scsi'/>",
    );
    await vi.waitFor(() =>
      expect(events).toContainEqual(
        expect.objectContaining({
          type: 'device-added',
          domain: DOMAIN,
          alias: 'ua-data',
          target: 'sda',
        }),
      ),
    );
  });

  it('rejects an attach to a domain that does not exist', async () => {
    const driver = await driverWith();
    const error = await rejection(driver.attachDisk('nope_vm', await volume('data', 'sda')));
    expect(error.reason).toBe('DomainNotFound');
    expect(error.message).toBe("failed to get domain 'nope_vm'");
  });

  it('rejects a duplicate target with libvirt’s text', async () => {
    const driver = await driverWith();
    await driver.attachDisk(DOMAIN, await volume('one', 'sda'));
    const error = await rejection(driver.attachDisk(DOMAIN, await volume('two', 'sda')));
    expect(error.reason).toBe('DuplicateTarget');
    expect(error.message).toBe(
      `XML error: target 'sda' duplicated for disk sources '${dir}/one.img' and '${dir}/two.img'`,
    );
  });

  it('rejects a missing source with libvirt’s text', async () => {
    const driver = await driverWith();
    const xml = diskXml({
      volumeName: 'ghost',
      disk: { name: 'ghost' },
      volumeMode: 'Filesystem',
      target: 'sda',
      hotplugDir: dir,
    });
    const error = await rejection(driver.attachDisk(DOMAIN, xml));
    expect(error.reason).toBe('SourceMissing');
    expect(error.message).toBe(
      `Cannot access storage file '${dir}/ghost.img': No such file or directory`,
    );
    expect(await driver.listDisks(DOMAIN)).toEqual([]);
  });

  it('rejects an image that is already attached (QEMU’s write lock), in any domain', async () => {
    const driver = await driverWith();
    await driver.defineDomain('other_vm');
    const first = await volume('data', 'sda');
    await driver.attachDisk(DOMAIN, first);
    const again = first
      .replace("dev='sda'", "dev='sdb'")
      .replace("unit='0'", "unit='1'")
      .replace('ua-data', 'ua-data2');
    const error = await rejection(driver.attachDisk(DOMAIN, again));
    expect(error.reason).toBe('ImageLocked');
    expect(error.message).toContain('Failed to get "write" lock');
    expect((await rejection(driver.attachDisk('other_vm', first))).reason).toBe('ImageLocked');
  });

  it('lets two read-only attachments share an image', async () => {
    const driver = await driverWith();
    await driver.defineDomain('other_vm');
    const ro = await volume('shared', 'sda', { readonly: true });
    await driver.attachDisk(DOMAIN, ro);
    await driver.attachDisk('other_vm', ro);
    expect(await driver.listDisks('other_vm')).toHaveLength(1);
  });

  it('rejects a serial libvirt calls unsafe', async () => {
    const driver = await driverWith();
    const xml = (await volume('data', 'sda', { serial: 'SAFE' })).replace('SAFE', 'a&amp;b');
    const error = await rejection(driver.attachDisk(DOMAIN, xml));
    expect(error.reason).toBe('InvalidDisk');
    expect(error.message).toBe("internal error: driver serial 'a&b' contains unsafe characters");
  });

  it('rejects the detach of a disk that is not there', async () => {
    const driver = await driverWith();
    const error = await rejection(driver.detachDisk(DOMAIN, 'sdc'));
    expect(error.reason).toBe('DeviceNotFound');
    expect(error.message).toBe('device not found: disk sdc not found');
  });

  it('completes a detach only after the guest’s delay, then emits device-removed', async () => {
    const driver = await driverWith({ detachDelayMs: 150 });
    const events = record(driver);
    const xml = await volume('data', 'sdb');
    await driver.attachDisk(DOMAIN, xml);
    const started = Date.now();
    await driver.detachDisk(DOMAIN, xml);
    // The call returned but the device is still there: the unplug is only requested.
    expect((await driver.listDisks(DOMAIN)).map((d) => d.target)).toEqual(['sdb']);
    // A second detach while one is in flight is accepted, as libvirt does.
    await driver.detachDisk(DOMAIN, 'sdb');
    await vi.waitFor(() => expect(events.map((e) => e.type)).toContain('device-removed'), {
      timeout: 3000,
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(await driver.listDisks(DOMAIN)).toEqual([]);
    expect(events.filter((e) => e.type === 'device-removed')).toEqual([
      expect.objectContaining({ domain: DOMAIN, alias: 'ua-data', target: 'sdb' }),
    ]);
    // Once gone, a detach is refused again and the target is free.
    expect((await rejection(driver.detachDisk(DOMAIN, 'sdb'))).reason).toBe('DeviceNotFound');
    await driver.attachDisk(DOMAIN, xml);
  });

  it('holds on to a device the guest never releases, and lets go when told', async () => {
    const driver = await driverWith({ stuckDevices: ['ua-stuck'] });
    const events = record(driver);
    await driver.attachDisk(DOMAIN, await volume('stuck', 'sda'));
    await driver.attachDisk(DOMAIN, await volume('free', 'sdb'));
    await driver.detachDisk(DOMAIN, 'sda');
    await driver.detachDisk(DOMAIN, 'sdb');
    // Both were asked with the same delay: once the free one is gone, the stuck one would have been too.
    await vi.waitFor(() =>
      expect(events).toContainEqual(
        expect.objectContaining({ type: 'device-removed', alias: 'ua-free' }),
      ),
    );
    expect((await driver.listDisks(DOMAIN)).map((d) => d.alias)).toEqual(['ua-stuck']);
    expect(events.filter((e) => e.type === 'device-removed')).toHaveLength(1);
    await driver.setStuck('ua-stuck', false);
    await vi.waitFor(() =>
      expect(events).toContainEqual(
        expect.objectContaining({ type: 'device-removed', alias: 'ua-stuck' }),
      ),
    );
    expect(await driver.listDisks(DOMAIN)).toEqual([]);
  });

  it('matches stuck devices by target and by domain-scoped names', async () => {
    const driver = await driverWith({ stuckDevices: [`${DOMAIN}/sda`, 'elsewhere_vm/ua-free'] });
    const events = record(driver);
    await driver.attachDisk(DOMAIN, await volume('stuck', 'sda'));
    await driver.attachDisk(DOMAIN, await volume('free', 'sdb'));
    await driver.detachDisk(DOMAIN, 'sda');
    await driver.detachDisk(DOMAIN, 'sdb');
    await vi.waitFor(() =>
      expect(events).toContainEqual(
        expect.objectContaining({ type: 'device-removed', alias: 'ua-free' }),
      ),
    );
    expect((await driver.listDisks(DOMAIN)).map((d) => d.target)).toEqual(['sda']);
  });

  it('assigns libvirt-style aliases and SCSI units when the XML has none', async () => {
    const driver = await driverWith();
    await writeFile(path.join(dir, 'raw.img'), '');
    await driver.attachDisk(
      DOMAIN,
      `<disk type='file' device='disk'><source file='${dir}/raw.img'/><target dev='sdd' bus='scsi'/></disk>`,
    );
    expect(await driver.listDisks(DOMAIN)).toMatchObject([
      { alias: 'scsi0-0-0-0', address: { unit: 0 } },
    ]);
  });

  it('streams events through an async iterator that ends on abort', async () => {
    const driver = await driverWith();
    const controller = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const event of driver.events({ signal: controller.signal })) {
        seen.push(event.type);
        if (event.type === 'device-added') controller.abort();
      }
    })();
    await driver.attachDisk(DOMAIN, await volume('data', 'sda'));
    await reading;
    expect(seen).toEqual(['device-added']);
  });

  it('refuses calls whose signal is aborted and calls after close', async () => {
    const driver = await driverWith();
    const error = await rejection(driver.listDisks(DOMAIN, { signal: AbortSignal.abort() }));
    expect(error.reason).toBe('Aborted');
    await driver.close();
    expect((await rejection(driver.listDisks(DOMAIN))).reason).toBe('Unavailable');
  });

  it('keeps domains in a state folder, so a restarted process sees them and finishes unplugs', async () => {
    const stateDir = path.join(dir, 'hypervisor');
    const first = await driverWith({ stateDir, detachDelayMs: 100 });
    await first.attachDisk(DOMAIN, await volume('kept', 'sda'));
    await first.attachDisk(DOMAIN, await volume('leaving', 'sdb'));
    await first.detachDisk(DOMAIN, 'sdb');
    await first.close();

    const second = createSimulatedDriver({ stateDir, detachDelayMs: 100 });
    drivers.push(second);
    expect(await second.listDomains()).toEqual([DOMAIN]);
    await vi.waitFor(async () =>
      expect((await second.listDisks(DOMAIN)).map((d) => d.alias)).toEqual(['ua-kept']),
    );
    // The new process enforces the same rules on what it restored.
    expect((await rejection(second.attachDisk(DOMAIN, await volume('other', 'sda')))).reason).toBe(
      'DuplicateTarget',
    );
    // Written atomically: no temporary files are left behind.
    expect((await readdir(stateDir)).filter((f) => f.includes('.tmp'))).toEqual([]);
  });

  it('answers each of many concurrent calls only once its change is on disk, a failed one apart', async () => {
    const stateDir = path.join(dir, 'hypervisor');
    const driver = await driverWith({ stateDir });
    const names = Array.from({ length: 12 }, (_, i) => `burst-${i}`);
    const xmls = await Promise.all(names.map((n, i) => volume(n, `sd${'abcdefghijkl'[i]}`)));
    const onDisk = () =>
      (readSimulatedDomains(stateDir).get(DOMAIN)?.disks ?? []).map((d) => d.disk.alias);
    const seenWhenAnswered = new Map<string, readonly (string | undefined)[]>();
    const calls = names.map((n, i) =>
      driver.attachDisk(DOMAIN, xmls[i]!).then(() => seenWhenAnswered.set(n, onDisk())),
    );
    // A call that fails in the same turn is answered with its own error; the others go on.
    const duplicate = rejection(driver.attachDisk(DOMAIN, xmls[0]!));
    await Promise.all(calls);
    expect((await duplicate).reason).toBe('DuplicateTarget');
    for (const n of names) expect(seenWhenAnswered.get(n)).toContain(`ua-${n}`);
    expect(onDisk().sort()).toEqual(names.map((n) => `ua-${n}`).sort());
  });

  it('fails the calls whose write fails, emits none of their events, and writes again once it can', async () => {
    const stateDir = path.join(dir, 'hypervisor');
    const driver = await driverWith({ stateDir });
    const events = record(driver);
    const xmls = await Promise.all(['x', 'y', 'z'].map((n, i) => volume(n, `sd${'abc'[i]}`)));
    await rm(stateDir, { recursive: true });
    await writeFile(stateDir, 'not a folder');
    const failures = await Promise.all(
      xmls.map((xml) => rejection(driver.attachDisk(DOMAIN, xml))),
    );
    expect(failures.map((f) => f.reason)).toEqual([
      'HypervisorFailed',
      'HypervisorFailed',
      'HypervisorFailed',
    ]);
    expect(events.filter((e) => e.type === 'device-added')).toEqual([]);

    await rm(stateDir);
    await driver.attachDisk(DOMAIN, await volume('w', 'sdd'));
    expect(
      (readSimulatedDomains(stateDir).get(DOMAIN)?.disks ?? []).map((d) => d.disk.alias).sort(),
    ).toEqual(['ua-w', 'ua-x', 'ua-y', 'ua-z']);
  });

  it('writes only the changed domain, and removes the file of an undefined one', async () => {
    const stateDir = path.join(dir, 'hypervisor');
    const driver = await driverWith({ stateDir });
    const other = domainNameOf('plugline-sim-namespace', 'other-vmi');
    await driver.defineDomain(other);
    const files = async () => (await readdir(stateDir)).sort();
    const otherFile = (await files()).find((f) => f.includes('other-vmi'));
    expect(otherFile).toBeDefined();
    const before = (await stat(path.join(stateDir, otherFile!))).mtimeMs;
    await driver.attachDisk(DOMAIN, await volume('data', 'sda'));
    expect((await stat(path.join(stateDir, otherFile!))).mtimeMs).toBe(before);

    await driver.undefineDomain(other);
    expect(await files()).toEqual([expect.stringContaining('vmi-with-a-long-name')]);
    // A name cannot leave the folder: a dotted or slashed name is encoded in its file name.
    await driver.defineDomain('../escape');
    expect((await files()).some((f) => f.startsWith('%2E%2E%2Fescape'))).toBe(true);
    expect(await readdir(dir)).not.toContain('escape.domain.json');
  });

  it('lists the same disks as its domain XML holds', async () => {
    const defined = domainNameOf('plugline-sim-namespace', 'defined-disks');
    const driver = await driverWith();
    await driver.defineDomain(
      defined,
      `<domain type='qemu'><name>${defined}</name><devices>` +
        `<disk type='file' device='disk'><source file='/var/lib/boot.img'/><target dev='vda' bus='virtio'/></disk>` +
        `<controller type='scsi' index='0' model='virtio-scsi'/></devices></domain>`,
    );
    for (const [i, domain] of [DOMAIN, defined].entries()) {
      await driver.attachDisk(domain, await volume(`data${i}`, 'sda', { serial: 'SER-data' }));
      await driver.attachDisk(domain, await volume(`logs${i}`, 'sdb', { readonly: true }));
      await driver.attachDisk(domain, await volume(`fast${i}`, 'vdb', { bus: 'virtio' }));
      await driver.detachDisk(domain, 'sdb');
      const listed = await driver.listDisks(domain);
      expect(listed).toEqual(parseDomainDisks(await driver.domainXml(domain)));
      expect(listed.map((d) => d.target)).toContain('sdb'); // until the guest lets go
    }
    // A copy: changing what was listed changes nothing in the domain.
    const changed = (await driver.listDisks(DOMAIN))[0]!;
    changed.target = 'sdz';
    changed.driver.cache = 'unsafe';
    const again = (await driver.listDisks(DOMAIN))[0]!;
    expect(again.target).toBe('sda');
    expect(again.driver.cache).not.toBe('unsafe');
  });

  it('persists nothing without a state file', async () => {
    const first = await driverWith();
    await first.attachDisk(DOMAIN, await volume('data', 'sda'));
    const second = createSimulatedDriver();
    drivers.push(second);
    expect(await second.listDomains()).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual(['data.img']);
  });

  it('undefines a domain and reports it gone', async () => {
    const driver = await driverWith();
    const events = record(driver);
    await driver.undefineDomain(DOMAIN);
    expect((await rejection(driver.listDisks(DOMAIN))).reason).toBe('DomainNotFound');
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'lifecycle', detail: 'Stopped Destroyed' }),
    );
  });
});
