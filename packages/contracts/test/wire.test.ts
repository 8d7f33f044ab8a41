/**
 * Wire compatibility with KubeVirt's own schema (test/fixtures, extracted from KubeVirt's OpenAPI
 * document): what the contracts build validates against KubeVirt's definitions, closed against
 * unknown fields, and KubeVirt's example manifests load and validate.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type {
  AddVolumeOptions,
  Disk,
  EventType,
  VirtualMachine,
  VirtualMachineInstance,
  VolumeStatus,
} from '../src/index.js';
import {
  Stage,
  addVolumeOptionsFromFlags,
  applyEventToVolumeStatus,
  buildAddVolumePatch,
  buildEvent,
  buildRemoveVolumePatch,
  buildVolumeStatus,
  validateAddVolume,
  validateRemoveVolume,
} from '../src/index.js';
import { addOptions, vm, vmi, withHotplugPVC } from './builders.js';
import { PatchTestFailed, applyPatch } from './json-patch.js';
import {
  FIXTURES,
  definitions,
  exampleFiles,
  readExample,
  schemaErrors,
} from './kubevirt-schema.js';

function valid(name: string, value: unknown): void {
  expect(schemaErrors(name, value), `${name}: ${JSON.stringify(value)}`).toEqual([]);
}

describe('fixtures', () => {
  it('hold the definitions the contracts need, with KubeVirt’s attribution', () => {
    for (const name of [
      'v1.VirtualMachineInstance',
      'v1.VirtualMachine',
      'v1.Volume',
      'v1.Disk',
      'v1.VolumeStatus',
      'v1.HotplugVolumeStatus',
      'v1.PersistentVolumeClaimInfo',
      'v1.AddVolumeOptions',
      'v1.RemoveVolumeOptions',
    ]) {
      expect(definitions).toHaveProperty([name]);
    }
    const readme = readFileSync(join(FIXTURES, 'README.md'), 'utf8');
    expect(readme).toContain('licensed Apache-2.0 by The KubeVirt Authors');
    expect(readme).toContain('d923fdb815cd2016ddaebdaaa51db04133576d72');
  });

  it('the closed schema refuses a field KubeVirt does not have (the check can fail)', () => {
    expect(schemaErrors('v1.HotplugVolumeStatus', { attachPodUid: 'x' })).not.toEqual([]);
    expect(schemaErrors('v1.VolumeStatus', { name: 'v' })).not.toEqual([]); // target is required
    expect(schemaErrors('v1.Disk', { name: 'd', disk: { bus: 7 } })).not.toEqual([]);
    expect(schemaErrors('v1.AddVolumeOptions', { name: 'x', disk: { name: 'x' } })).not.toEqual([]);
  });
});

describe('every object the contracts build validates against KubeVirt’s definitions', () => {
  it('AddVolumeOptions from a request body, normalised', () => {
    const result = validateAddVolume({
      name: 'data',
      disk: { disk: { bus: 'virtio' }, serial: 'D1', cache: 'none', io: 'native', bootOrder: 3 },
      volumeSource: { persistentVolumeClaim: { claimName: 'pvc-data', readOnly: true } },
      dryRun: ['All'],
    });
    if (!result.ok) throw result.error;
    valid('v1.AddVolumeOptions', result.value);
  });

  it.each([
    [{}],
    [{ diskType: 'lun' }],
    [{ diskName: 'scratch', serial: 'S-1', cache: 'writeback', bus: 'virtio', dryRun: true }],
    [{ source: 'dataVolume' as const }],
  ])('AddVolumeOptions from virtctl flags %j', (extra) => {
    const result = addVolumeOptionsFromFlags({ volumeName: 'pvc-data', source: 'pvc', ...extra });
    if (!result.ok) throw result.error;
    valid('v1.AddVolumeOptions', result.value);
  });

  it('RemoveVolumeOptions', () => {
    const result = validateRemoveVolume({ name: 'data', dryRun: ['All'] });
    if (!result.ok) throw result.error;
    valid('v1.RemoveVolumeOptions', result.value);
  });

  it('a Disk with every field the contracts type', () => {
    const disk: Required<Omit<Disk, 'lun' | 'cdrom'>> = {
      name: 'd',
      disk: { bus: 'virtio', readonly: false, pciAddress: '0000:81:01.1' },
      bootOrder: 1,
      serial: 's',
      dedicatedIOThread: true,
      cache: 'none',
      io: 'threads',
      errorPolicy: 'report',
      shareable: false,
      tag: 't',
    };
    valid('v1.Disk', disk);
    valid('v1.Disk', { name: 'l', lun: { bus: 'scsi', readonly: true, reservation: true } });
    valid('v1.Disk', { name: 'c', cdrom: { bus: 'sata', readonly: true, tray: 'closed' } });
  });

  it('a VolumeStatus with every field the contracts type', () => {
    const status: Required<VolumeStatus> = {
      name: 'data',
      target: 'sda',
      phase: 'Ready',
      reason: 'VolumeReady',
      message: 'Successfully attach hotplugged volume data to VM',
      persistentVolumeClaimInfo: {
        claimName: 'pvc-data',
        accessModes: ['ReadWriteOnce'],
        volumeMode: 'Block',
        capacity: { storage: '1Gi' },
        requests: { storage: '1Gi' },
        preallocated: false,
        filesystemOverhead: '0.055',
      },
      hotplugVolume: { attachPodName: 'hp-volume-abcde', attachPodUID: 'uid-1' },
      size: 1073741824,
    };
    valid('v1.VolumeStatus', status);
    valid('v1.VolumeStatus', buildVolumeStatus({ name: 'data' }));
  });

  it('the status entry of every step of a plug and an unplug', () => {
    const types: EventType[] = [
      'pending',
      'bound',
      'attached-to-node',
      'mounted-to-pod',
      'ready',
      'unmounted-from-pod',
      'detaching',
    ];
    let status: VolumeStatus | undefined;
    const seen: VolumeStatus[] = [];
    for (const type of types) {
      const event = buildEvent({
        namespace: 'ns',
        vmi: 'my.vm',
        volume: 'data',
        type,
        stage: Stage.SpecWatcher,
        id: `e-${type}`,
        data: {
          operationId: 'op-1',
          operation: type === 'unmounted-from-pod' || type === 'detaching' ? 'unplug' : 'plug',
          vmiUID: 'uid-vmi',
          ...(type === 'attached-to-node'
            ? { node: 'node-01', attachPod: { name: 'hp-volume-abcde', uid: 'uid-pod' } }
            : {}),
          ...(type === 'ready' ? { target: 'sda' } : {}),
        },
      });
      const projection = applyEventToVolumeStatus(status, event);
      expect(projection.changed, type).toBe(true);
      status = projection.status;
      valid('v1.VolumeStatus', status);
      seen.push(status!);
    }
    expect(seen.map((s) => [s.phase, s.reason, s.message])).toEqual([
      ['Pending', 'PVCNotReady', 'PVC is in phase Pending'],
      ['Bound', 'PVCNotReady', 'PVC is in phase Bound'],
      [
        'AttachedToNode',
        'SuccessfulCreate',
        'Created hotplug attachment pod hp-volume-abcde, for volume data',
      ],
      ['MountedToPod', 'VolumeMountedToPod', 'Volume data has been mounted in virt-launcher pod'],
      ['Ready', 'VolumeReady', 'Successfully attach hotplugged volume data to VM'],
      [
        'UnMountedFromPod',
        'VolumeUnMountedFromPod',
        'Volume data has been unmounted from virt-launcher pod',
      ],
      [
        'Detaching',
        'SuccessfulDelete',
        'Deleted hotplug attachment pod hp-volume-abcde, for volume data',
      ],
    ]);
    expect(seen[4]).toMatchObject({
      target: 'sda',
      hotplugVolume: { attachPodName: 'hp-volume-abcde', attachPodUID: 'uid-pod' },
    });
  });

  it('a VMI with a hotplug volume added by the add patch', () => {
    const base = parse(readExample('vmi-pvc.yaml')) as VirtualMachineInstance;
    const patched = applyPatch(base, buildAddVolumePatch(base, addOptions('data', 'pvc-data')));
    valid('v1.VirtualMachineInstance', patched);
    patched.status = {
      phase: 'Running',
      volumeStatus: [buildVolumeStatus({ name: 'data', phase: 'Ready', target: 'sda' })],
    };
    valid('v1.VirtualMachineInstance', patched);
  });
});

describe('the add/remove JSON patch', () => {
  it('for a VMI: test ops on what was read, then replace', () => {
    const target = vmi();
    const opts = addOptions('data', 'pvc-data');
    const ops = buildAddVolumePatch(target, opts);
    expect(ops.map((o) => [o.op, o.path])).toEqual([
      ['test', '/spec/volumes'],
      ['test', '/spec/domain/devices/disks'],
      ['replace', '/spec/volumes'],
      ['replace', '/spec/domain/devices/disks'],
    ]);
    expect(ops[0]).toEqual({ op: 'test', path: '/spec/volumes', value: target.spec.volumes });
    const patched = applyPatch(target, ops);
    expect(patched.spec.volumes?.at(-1)).toEqual({
      name: 'data',
      persistentVolumeClaim: { claimName: 'pvc-data', hotpluggable: true },
    });
    expect(patched.spec.domain.devices.disks?.at(-1)).toEqual({ ...opts.disk, name: 'data' });
    // Remove undoes it.
    expect(applyPatch(patched, buildRemoveVolumePatch(patched, 'data')).spec).toEqual(target.spec);
  });

  it('for a VM: the same under /spec/template/spec', () => {
    const target = vm();
    const ops = buildAddVolumePatch(target, addOptions());
    expect(ops.every((o) => o.path.startsWith('/spec/template/spec/'))).toBe(true);
    const patched = applyPatch(target, ops);
    valid('v1.VirtualMachine', patched);
    expect(patched.spec.template.spec.volumes).toHaveLength(2);
  });

  it('adds (not replaces) lists that were empty, testing them as null', () => {
    const target: VirtualMachineInstance = {
      metadata: { name: 'bare' },
      spec: { domain: { devices: {} } },
    };
    const ops = buildAddVolumePatch(target, addOptions('data'));
    expect(ops).toEqual([
      { op: 'test', path: '/spec/volumes', value: null },
      { op: 'test', path: '/spec/domain/devices/disks', value: null },
      { op: 'add', path: '/spec/volumes', value: [expect.objectContaining({ name: 'data' })] },
      {
        op: 'add',
        path: '/spec/domain/devices/disks',
        value: [expect.objectContaining({ name: 'data' })],
      },
    ]);
    expect(applyPatch(target, ops).spec.volumes).toHaveLength(1);
  });

  it('fails its test op when the volumes changed after they were read', () => {
    const read = vmi();
    const ops = buildAddVolumePatch(read, addOptions('data'));
    const concurrent = vmi(withHotplugPVC('someone-else'));
    expect(() => applyPatch(concurrent, ops)).toThrow(PatchTestFailed);
  });

  it('never mutates the object it read', () => {
    const target = vm(withHotplugPVC('x'));
    const before = structuredClone(target);
    buildAddVolumePatch(target, addOptions());
    buildRemoveVolumePatch(target, 'x');
    expect(target).toEqual(before);
  });
});

describe('KubeVirt’s example manifests', () => {
  const files = exampleFiles();
  it('are all there', () => {
    expect(files.length).toBeGreaterThanOrEqual(10);
  });

  it.each(files.map((f) => [f]))('%s parses and validates as its kind', (file) => {
    const manifest = parse(readExample(file)) as VirtualMachine | VirtualMachineInstance;
    expect(manifest.apiVersion).toBe('kubevirt.io/v1');
    valid(`v1.${manifest.kind}`, manifest);
  });

  it.each(files.map((f) => [f]))('%s takes a hotplug volume and validates after', (file) => {
    const manifest = parse(readExample(file)) as VirtualMachine | VirtualMachineInstance;
    const running = { ...manifest, status: { phase: 'Running' } } as VirtualMachineInstance;
    const isVm = manifest.kind === 'VirtualMachine';
    const opts: AddVolumeOptions = addOptions('hotplugged-1', 'pvc-hotplugged-1');
    const check = validateAddVolume(opts, isVm ? undefined : running, isVm ? manifest : undefined);
    if (!check.ok) throw check.error;
    const patched = applyPatch(manifest, buildAddVolumePatch(manifest, check.value));
    valid(`v1.${manifest.kind}`, patched);
  });
});
