import { describe, expect, it } from 'vitest';
import type { AddVolumeFlags, ValidationResult } from '../src/index.js';
import {
  InvalidRequestError,
  RequestMessage,
  addVolumeOptionsFromFlags,
  validateAddVolume,
  validateHotplugDisk,
  validateRemoveVolume,
} from '../src/index.js';
import {
  addBody,
  hotplugPvcVolume,
  vm,
  vmi,
  withHotplugPVC,
  withPhase,
  withVolume,
} from './builders.js';

const NAME = 'data-disk-4k9';
const label63 = `a${'b'.repeat(61)}c`;
const label64 = `a${'b'.repeat(62)}c`;
const disk = (d: Record<string, unknown>) => addBody({ disk: d });
const flags = (f: Partial<AddVolumeFlags> = {}): AddVolumeFlags => ({
  volumeName: 'pvc-data-4k9',
  source: 'pvc',
  ...f,
});

type Rejection = [status: number, field: string, rule: string, message: string | RegExp];

const rejections: [string, () => ValidationResult<unknown>, Rejection][] = [
  // 400: the body, as virt-api's handler checks it
  ['no body', () => validateAddVolume(undefined), [400, 'body', 'required', RequestMessage.noBody]],
  ['null body', () => validateAddVolume(null), [400, 'body', 'required', RequestMessage.noBody]],
  [
    'empty text body',
    () => validateAddVolume(''),
    [400, 'body', 'required', RequestMessage.noBody],
  ],
  [
    'empty byte body',
    () => validateAddVolume(new Uint8Array()),
    [400, 'body', 'required', RequestMessage.noBody],
  ],
  [
    'truncated JSON',
    () => validateAddVolume('{"name":'),
    [400, 'body', 'json', /^Can not unmarshal Request body to struct, error: /],
  ],
  [
    'invalid UTF-8',
    () => validateAddVolume(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])),
    [400, 'body', 'json', /^Can not unmarshal Request body to struct, error: /],
  ],
  [
    'a JSON array',
    () => validateAddVolume('[]'),
    [400, 'body', 'type', /cannot unmarshal array into an object/],
  ],
  [
    'a number',
    () => validateAddVolume(42),
    [400, 'body', 'type', /cannot unmarshal number into an object/],
  ],
  [
    'no name',
    () => validateAddVolume(addBody({ name: undefined })),
    [400, 'name', 'required', 'AddVolumeOptions requires name to be set'],
  ],
  [
    'empty name',
    () => validateAddVolume(addBody({ name: '' })),
    [400, 'name', 'required', 'AddVolumeOptions requires name to be set'],
  ],
  [
    'numeric name',
    () => validateAddVolume(addBody({ name: 7 })),
    [400, 'name', 'type', /name: cannot unmarshal number into a string/],
  ],
  [
    'no disk',
    () => validateAddVolume(addBody({ disk: undefined })),
    [400, 'disk', 'required', 'AddVolumeOptions requires disk to not be nil'],
  ],
  [
    'null disk',
    () => validateAddVolume(addBody({ disk: null })),
    [400, 'disk', 'required', 'AddVolumeOptions requires disk to not be nil'],
  ],
  [
    'no volumeSource',
    () => validateAddVolume(addBody({ volumeSource: undefined })),
    [400, 'volumeSource', 'required', 'AddVolumeOptions requires VolumeSource to not be nil'],
  ],
  [
    'disk is a string',
    () => validateAddVolume(addBody({ disk: 'scsi' })),
    [400, 'disk', 'type', /disk: cannot unmarshal string into an object/],
  ],
  [
    'volumeSource is an array',
    () => validateAddVolume(addBody({ volumeSource: [] })),
    [400, 'volumeSource', 'type', /cannot unmarshal array/],
  ],
  [
    'claimName is a number',
    () => validateAddVolume(addBody({ volumeSource: { persistentVolumeClaim: { claimName: 1 } } })),
    [400, 'volumeSource.persistentVolumeClaim.claimName', 'type', /cannot unmarshal number/],
  ],
  [
    'serial is a number',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: 12 })),
    [400, 'disk.serial', 'type', /disk.serial: cannot unmarshal number/],
  ],
  [
    'dryRun is a string',
    () => validateAddVolume(addBody({ dryRun: 'All' })),
    [400, 'dryRun', 'type', /dryRun: cannot unmarshal string into a list of strings/],
  ],
  [
    'unknown dryRun directive',
    () => validateAddVolume(addBody({ dryRun: ['Server'] })),
    [400, 'dryRun', 'enum', 'dryRun must be ["All"] when set'],
  ],
  [
    'remove: no body',
    () => validateRemoveVolume(undefined),
    [400, 'body', 'required', RequestMessage.noBody],
  ],
  [
    'remove: no name',
    () => validateRemoveVolume({}),
    [400, 'name', 'required', 'RemoveVolumeOptions requires name to be set'],
  ],
  [
    'remove: empty name',
    () => validateRemoveVolume('{"name":""}'),
    [400, 'name', 'required', 'RemoveVolumeOptions requires name to be set'],
  ],

  // 409: conflicts virt-api finds before patching
  [
    'VMI not running',
    () => validateAddVolume(addBody(), vmi(withPhase('Scheduling'))),
    [409, 'vmi.status.phase', 'vmi-running', 'VMI is not running'],
  ],
  [
    'VMI without status',
    () => validateAddVolume(addBody(), { ...vmi(), status: undefined }),
    [409, 'vmi.status.phase', 'vmi-running', 'VMI is not running'],
  ],
  [
    'name exists on the VMI',
    () => validateAddVolume(addBody(), vmi(withHotplugPVC(NAME, 'other-pvc'))),
    [
      409,
      'name',
      'volume-name-exists',
      `Unable to add volume [${NAME}] because volume with that name already exists`,
    ],
  ],
  [
    'name exists in the VM template',
    () => validateAddVolume(addBody(), undefined, vm(withHotplugPVC(NAME, 'other-pvc'))),
    [
      409,
      'name',
      'volume-name-exists',
      `Unable to add volume [${NAME}] because volume with that name already exists`,
    ],
  ],
  [
    'source already used by another volume',
    () => validateAddVolume(addBody(), vmi(withHotplugPVC('older', 'pvc-data-4k9'))),
    [
      409,
      'volumeSource',
      'volume-source-exists',
      'Unable to add volume source [pvc-data-4k9] because it already exists',
    ],
  ],
  [
    'conflict wins over a disk rule (KubeVirt checks it first)',
    () => validateAddVolume(disk({ disk: { bus: 'sata' } }), vmi(withHotplugPVC(NAME))),
    [409, 'name', 'volume-name-exists', RequestMessage.nameExists(NAME)],
  ],
  [
    'remove a boot volume',
    () => validateRemoveVolume({ name: 'rootdisk' }, vmi()),
    [
      409,
      'name',
      'hotpluggable',
      'Unable to remove volume [rootdisk] because it is not hotpluggable',
    ],
  ],
  [
    'remove a PVC that is not hotpluggable, by claim name',
    () =>
      validateRemoveVolume(
        { name: 'pvc-x' },
        vmi(withVolume(hotplugPvcVolume('vol-x', 'pvc-x', false))),
      ),
    [409, 'name', 'hotpluggable', 'Unable to remove volume [vol-x] because it is not hotpluggable'],
  ],
  [
    'remove a volume that does not exist',
    () => validateRemoveVolume({ name: 'ghost' }, vmi()),
    [409, 'name', 'volume-exists', 'Unable to remove volume [ghost] because it does not exist'],
  ],
  [
    'remove from a VM template that lacks it',
    () => validateRemoveVolume({ name: 'ghost' }, undefined, vm()),
    [409, 'name', 'volume-exists', 'Unable to remove volume [ghost] because it does not exist'],
  ],
  [
    'remove from a VMI that is not running',
    () => validateRemoveVolume({ name: NAME }, vmi(withHotplugPVC(NAME), withPhase('Succeeded'))),
    [409, 'vmi.status.phase', 'vmi-running', 'VMI is not running'],
  ],

  // 422: the webhook's rules on names and disks
  [
    'name of 64 characters',
    () => validateAddVolume(addBody({ name: label64 })),
    [422, 'name', 'max-length', /must be no more than 63 characters/],
  ],
  [
    'upper-case name',
    () => validateAddVolume(addBody({ name: 'Data' })),
    [422, 'name', 'dns1123-label', /RFC 1123 label/],
  ],
  [
    'name with ../',
    () => validateAddVolume(addBody({ name: '../etc' })),
    [422, 'name', 'dns1123-label', /RFC 1123 label/],
  ],
  [
    'Unicode name',
    () => validateAddVolume(addBody({ name: 'dätä' })),
    [422, 'name', 'dns1123-label', /RFC 1123 label/],
  ],
  [
    'name with a dot',
    () => validateAddVolume(addBody({ name: 'my.disk' })),
    [422, 'name', 'dns1123-label', /RFC 1123 label/],
  ],
  [
    'name ending in -',
    () => validateAddVolume(addBody({ name: 'disk-' })),
    [422, 'name', 'dns1123-label', /RFC 1123 label/],
  ],
  [
    'disk on bus sata',
    () => validateAddVolume(disk({ disk: { bus: 'sata' } })),
    [
      422,
      'disk.disk.bus',
      'hotplug-disk-bus',
      `Hotplug configuration for disk [${NAME}] requires bus to be 'scsi' or 'virtio'. [sata] is not permitted.`,
    ],
  ],
  [
    'disk without a bus',
    () => validateAddVolume(disk({ disk: {} })),
    [422, 'disk.disk.bus', 'hotplug-disk-bus', RequestMessage.diskBus(NAME, '')],
  ],
  [
    'LUN on bus virtio',
    () => validateAddVolume(disk({ lun: { bus: 'virtio' } })),
    [
      422,
      'disk.lun.bus',
      'hotplug-lun-bus',
      `Hotplug configuration for LUN [${NAME}] requires bus to be 'scsi'. [virtio] is not permitted.`,
    ],
  ],
  [
    'a CD-ROM',
    () => validateAddVolume(disk({ cdrom: { bus: 'scsi' } })),
    [
      422,
      'disk',
      'hotplug-disk-device',
      `Hotplug configuration for [${NAME}] requires diskDevice of type 'disk' or 'lun' to be used.`,
    ],
  ],
  [
    'no device type',
    () => validateAddVolume(disk({})),
    [422, 'disk', 'hotplug-disk-device', RequestMessage.diskDevice(NAME)],
  ],
  [
    'disk and lun together',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, lun: { bus: 'scsi' } })),
    [422, 'disk', 'single-target', 'disk can only have a single target type defined'],
  ],
  [
    'dedicated IO thread on scsi',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, dedicatedIOThread: true })),
    [
      422,
      'disk.dedicatedIOThread',
      'io-thread-bus',
      `Hotplug configuration for [${NAME}] requires virtio bus for IOThreads.`,
    ],
  ],
  [
    'boot order 0',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, bootOrder: 0 })),
    [422, 'disk.bootOrder', 'boot-order', 'disk must have a boot order > 0, if supplied'],
  ],
  [
    'serial with XML metacharacters',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: '<serial>&"x"' })),
    [
      422,
      'disk.serial',
      'serial-charset',
      'disk must be made up of the following characters [A-Za-z0-9_.+-], if specified',
    ],
  ],
  [
    'serial with an XML apostrophe',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: "it's" })),
    [422, 'disk.serial', 'serial-charset', RequestMessage.serialCharset('disk')],
  ],
  [
    'serial with ../',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: '../../etc' })),
    [422, 'disk.serial', 'serial-charset', RequestMessage.serialCharset('disk')],
  ],
  [
    'Unicode serial',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: 'sérial' })),
    [422, 'disk.serial', 'serial-charset', RequestMessage.serialCharset('disk')],
  ],
  [
    'serial with a space',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: 'a b' })),
    [422, 'disk.serial', 'serial-charset', RequestMessage.serialCharset('disk')],
  ],
  [
    'serial of 257 characters',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: 'x'.repeat(257) })),
    [
      422,
      'disk.serial',
      'max-length',
      'disk must be less than or equal to 256 in length, if specified',
    ],
  ],
  [
    'cache unsafe',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, cache: 'unsafe' })),
    [422, 'disk.cache', 'enum', 'disk.cache has invalid value unsafe'],
  ],
  [
    'cache directsync (not one of KubeVirt’s three)',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, cache: 'directsync' })),
    [422, 'disk.cache', 'enum', 'disk.cache has invalid value directsync'],
  ],
  [
    'io io_uring',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, io: 'io_uring' })),
    [
      422,
      'disk.io',
      'enum',
      'Disk IO mode for disk is not supported. Supported modes are: native, threads.',
    ],
  ],
  [
    'error policy panic',
    () => validateAddVolume(disk({ disk: { bus: 'scsi' }, errorPolicy: 'panic' })),
    [422, 'disk.errorPolicy', 'enum', 'disk.errorPolicy has invalid value "panic"'],
  ],
  [
    'a source that is neither PVC nor DataVolume',
    () => validateAddVolume(addBody({ volumeSource: { hostDisk: { path: '/' } } })),
    [422, 'volumeSource', 'pvc-or-datavolume', `volume ${NAME} is not a PVC or DataVolume`],
  ],
  [
    'both PVC and DataVolume',
    () =>
      validateAddVolume(
        addBody({
          volumeSource: { persistentVolumeClaim: { claimName: 'a' }, dataVolume: { name: 'b' } },
        }),
      ),
    [422, 'volumeSource', 'one-of', /only one of persistentVolumeClaim and dataVolume/],
  ],
  [
    'empty claim name',
    () =>
      validateAddVolume(addBody({ volumeSource: { persistentVolumeClaim: { claimName: '' } } })),
    [422, 'volumeSource.persistentVolumeClaim.claimName', 'dns1123-subdomain', /must not be empty/],
  ],
  [
    'claim name with an underscore',
    () => validateAddVolume(addBody({ volumeSource: { dataVolume: { name: 'my_dv' } } })),
    [422, 'volumeSource.dataVolume.name', 'dns1123-subdomain', /RFC 1123 subdomain/],
  ],
  [
    'a disk checked on its own, with its own name',
    () => validateHotplugDisk({ name: 'Bad Name', disk: { bus: 'scsi' } }),
    [422, 'disk.name', 'dns1123-label', /RFC 1123 label/],
  ],

  // virtctl's client-side rules
  [
    'virtctl: no --volume-name',
    () => addVolumeOptionsFromFlags(flags({ volumeName: '' })),
    [400, '--volume-name', 'required', 'required flag(s) "volume-name" not set'],
  ],
  [
    'virtctl: --disk-type cdrom',
    () => addVolumeOptionsFromFlags(flags({ diskType: 'cdrom' })),
    [400, '--disk-type', 'enum', "Invalid disk type 'cdrom'. Only LUN and Disk are supported."],
  ],
  [
    'virtctl: lun on virtio',
    () => addVolumeOptionsFromFlags(flags({ diskType: 'lun', bus: 'virtio' })),
    [400, '--bus', 'enum', "Invalid bus 'virtio' for disk type 'lun'. Supported: scsi."],
  ],
  [
    'virtctl: disk on sata',
    () => addVolumeOptionsFromFlags(flags({ bus: 'sata' })),
    [400, '--bus', 'enum', "Invalid bus 'sata' for disk type 'disk'. Supported: scsi, virtio."],
  ],
  [
    'virtctl: cache default (server-side only)',
    () => addVolumeOptionsFromFlags(flags({ cache: 'default' })),
    [400, '--cache', 'enum', 'error adding volume, invalid cache value default'],
  ],
  [
    'virtctl: --disk-name of 64 characters',
    () => addVolumeOptionsFromFlags(flags({ diskName: label64 })),
    [400, '--disk-name', 'max-length', /must be no more than 63 characters/],
  ],
  [
    'virtctl: a serial the server refuses',
    () => addVolumeOptionsFromFlags(flags({ serial: '<bad>' })),
    [422, 'disk.serial', 'serial-charset', RequestMessage.serialCharset('disk')],
  ],
];

describe('request validation: rejections', () => {
  it('has a table of at least 40 cases', () => {
    expect(rejections.length).toBeGreaterThanOrEqual(40);
  });

  it.each(rejections)('%s', (_title, run, [status, field, rule, message]) => {
    const result = run();
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const { error } = result;
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.name).toBe('InvalidRequestError');
    expect(error.status).toBe(status);
    expect(error.field).toBe(field);
    expect(error.rule).toBe(rule);
    if (typeof message === 'string') expect(error.message).toBe(message);
    else expect(error.message).toMatch(message);
    expect(error.reason).toBe({ 400: 'BadRequest', 409: 'Conflict', 422: 'Invalid' }[status]);
  });
});

describe('request validation: acceptances', () => {
  const accepted: [string, () => ValidationResult<unknown>][] = [
    ['name of 63 characters', () => validateAddVolume(addBody({ name: label63 }))],
    [
      'serial of 256 characters',
      () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: 'x'.repeat(256) })),
    ],
    [
      'serial of every allowed character',
      () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: 'Az09_.+-' })),
    ],
    ['empty serial (unset)', () => validateAddVolume(disk({ disk: { bus: 'scsi' }, serial: '' }))],
    [
      'virtio disk with a dedicated IO thread',
      () => validateAddVolume(disk({ disk: { bus: 'virtio' }, dedicatedIOThread: true })),
    ],
    ['LUN on scsi', () => validateAddVolume(disk({ lun: { bus: 'scsi' } }))],
    [
      'each cache mode',
      () => validateAddVolume(disk({ disk: { bus: 'scsi' }, cache: 'writeback', io: 'native' })),
    ],
    [
      'raw JSON bytes',
      () => validateAddVolume(new TextEncoder().encode(JSON.stringify(addBody()))),
    ],
    ['a running VMI without the volume', () => validateAddVolume(addBody(), vmi())],
    [
      'a VM whose VMI is not running (the VM path does not ask)',
      () => validateAddVolume(addBody(), vmi(withPhase('Pending')), vm()),
    ],
    [
      'remove by volume name',
      () => validateRemoveVolume({ name: NAME }, vmi(withHotplugPVC(NAME, 'pvc-z'))),
    ],
    [
      'remove by claim name',
      () => validateRemoveVolume({ name: 'pvc-z' }, vmi(withHotplugPVC(NAME, 'pvc-z'))),
    ],
    ['remove without a target', () => validateRemoveVolume({ name: NAME, dryRun: ['All'] })],
  ];
  it.each(accepted)('%s', (_title, run) => {
    const result = run();
    if (!result.ok) throw result.error;
    expect(result.ok).toBe(true);
  });

  it('normalises as virt-api does: disk.name = name, hotpluggable = true, unknown fields dropped', () => {
    const result = validateAddVolume({
      name: NAME,
      disk: { name: 'something-else', disk: { bus: 'virtio' }, serial: 'S1' },
      volumeSource: { dataVolume: { name: 'dv-1', hotpluggable: false }, extra: 1 },
      dryRun: ['All'],
      unknown: true,
    });
    expect(result).toEqual({
      ok: true,
      value: {
        name: NAME,
        disk: { name: NAME, disk: { bus: 'virtio' }, serial: 'S1' },
        volumeSource: { dataVolume: { name: 'dv-1', hotpluggable: true } },
        dryRun: ['All'],
      },
    });
  });

  it('does not mutate the request it validates', () => {
    const body = addBody();
    const before = structuredClone(body);
    validateAddVolume(body);
    expect(body).toEqual(before);
  });

  it('virtctl defaults: disk on scsi, serial = name, PVC source hotpluggable', () => {
    expect(addVolumeOptionsFromFlags(flags())).toEqual({
      ok: true,
      value: {
        name: 'pvc-data-4k9',
        disk: { name: 'pvc-data-4k9', disk: { bus: 'scsi' }, serial: 'pvc-data-4k9' },
        volumeSource: { persistentVolumeClaim: { claimName: 'pvc-data-4k9', hotpluggable: true } },
      },
    });
  });

  it('virtctl: --disk-name, lun, cache, serial, dry run, DataVolume', () => {
    const result = addVolumeOptionsFromFlags(
      flags({
        diskName: 'scratch',
        diskType: 'lun',
        cache: 'writethrough',
        serial: 'SER-1',
        dryRun: true,
        source: 'dataVolume',
      }),
    );
    expect(result).toEqual({
      ok: true,
      value: {
        name: 'scratch',
        disk: { name: 'scratch', lun: { bus: 'scsi' }, serial: 'SER-1', cache: 'writethrough' },
        volumeSource: { dataVolume: { name: 'pvc-data-4k9', hotpluggable: true } },
        dryRun: ['All'],
      },
    });
  });

  it('virtctl: a --disk-name of exactly 63 characters is accepted', () => {
    expect(addVolumeOptionsFromFlags(flags({ diskName: label63 })).ok).toBe(true);
  });
});
