/**
 * Validation of `addvolume` / `removevolume` requests, with the outcome class (400 / 409 / 422)
 * and the message KubeVirt gives for the same request:
 * - 400 and the body checks: virt-api `pkg/virt-api/rest/volumes.go`;
 * - 409 and the conflicts: `verifyVolumeOption` in the same file (checked before the patch);
 * - 422 and the disk rules: the VMI/VM admission webhooks (`ValidateHotplugDiskConfiguration`,
 *   `ValidateDisks`), which reject the patch virt-api sends.
 * Every function here is pure and never throws for bad input: it returns a result.
 */
import type { RequestErrorStatus } from './errors.js';
import { InvalidRequestError } from './errors.js';
import type {
  AddVolumeOptions,
  Disk,
  DiskBus,
  HotplugVolumeSource,
  RemoveVolumeOptions,
  VirtualMachine,
  VirtualMachineInstance,
  VirtualMachineInstanceSpec,
  Volume,
} from './kubevirt.js';
import {
  DiskErrorPolicy,
  DriverCache,
  DriverIO,
  HOTPLUG_DISK_BUSES,
  HOTPLUG_LUN_BUSES,
  VirtualMachineInstancePhase,
  isHotpluggable,
} from './kubevirt.js';
import { MAX_LABEL_LENGTH, nameProblem } from './names.js';

export type ValidationResult<T> =
  { ok: true; value: T } | { ok: false; error: InvalidRequestError };

/** KubeVirt's longest disk serial (`maxStrLen` in the VMI admitter), counted in characters. */
export const MAX_SERIAL_LENGTH = 256;
/** KubeVirt's disk serial charset (`isValidExpression` in the VMI admitter). */
export const SERIAL_PATTERN = /^[A-Za-z0-9_.+-]+$/;
/** The only `dryRun` directive the API knows. */
export const DRY_RUN_ALL = 'All';

/** Message texts, word for word KubeVirt's where KubeVirt has one. */
export const RequestMessage = {
  noBody: 'Request with no body, a new name is expected as the request body',
  unmarshal: (detail: string) => `Can not unmarshal Request body to struct, error: ${detail}`,
  addRequiresName: 'AddVolumeOptions requires name to be set',
  addRequiresDisk: 'AddVolumeOptions requires disk to not be nil',
  addRequiresVolumeSource: 'AddVolumeOptions requires VolumeSource to not be nil',
  removeRequiresName: 'RemoveVolumeOptions requires name to be set',
  vmiNotRunning: 'VMI is not running',
  nameExists: (name: string) =>
    `Unable to add volume [${name}] because volume with that name already exists`,
  sourceExists: (source: string) =>
    `Unable to add volume source [${source}] because it already exists`,
  notHotpluggable: (name: string) =>
    `Unable to remove volume [${name}] because it is not hotpluggable`,
  doesNotExist: (name: string) => `Unable to remove volume [${name}] because it does not exist`,
  notPvcOrDataVolume: (name: string) => `volume ${name} is not a PVC or DataVolume`,
  diskBus: (name: string, bus: string) =>
    `Hotplug configuration for disk [${name}] requires bus to be 'scsi' or 'virtio'. [${bus}] is not permitted.`,
  lunBus: (name: string, bus: string) =>
    `Hotplug configuration for LUN [${name}] requires bus to be 'scsi'. [${bus}] is not permitted.`,
  diskDevice: (name: string) =>
    `Hotplug configuration for [${name}] requires diskDevice of type 'disk' or 'lun' to be used.`,
  ioThreads: (name: string) =>
    `Hotplug configuration for [${name}] requires virtio bus for IOThreads.`,
  singleTarget: (field: string) => `${field} can only have a single target type defined`,
  bootOrder: (field: string) => `${field} must have a boot order > 0, if supplied`,
  serialCharset: (field: string) =>
    `${field} must be made up of the following characters [A-Za-z0-9_.+-], if specified`,
  serialLength: (field: string) =>
    `${field} must be less than or equal to ${MAX_SERIAL_LENGTH} in length, if specified`,
  cache: (field: string, value: string) => `${field} has invalid value ${value}`,
  io: (field: string) =>
    `Disk IO mode for ${field} is not supported. Supported modes are: native, threads.`,
  errorPolicy: (field: string, value: string) => `${field} has invalid value "${value}"`,
} as const;

type Json = Record<string, unknown>;

function reject<T>(
  status: RequestErrorStatus,
  field: string,
  rule: string,
  message: string,
): ValidationResult<T> {
  return { ok: false, error: new InvalidRequestError(status, field, rule, message) };
}

const isObject = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Go's name for a JSON value's type, as `encoding/json` reports a mismatch. */
function jsonTypeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'object' ? 'object' : typeof v;
}

function typeMismatch<T>(field: string, expected: string, value: unknown): ValidationResult<T> {
  return reject(
    400,
    field,
    'type',
    RequestMessage.unmarshal(`${field}: cannot unmarshal ${jsonTypeName(value)} into ${expected}`),
  );
}

/** A request body as it may arrive: already parsed, or raw JSON text / bytes. */
function parseBody(body: unknown): ValidationResult<Json> {
  if (body === undefined || body === null || body === '') {
    return reject(400, 'body', 'required', RequestMessage.noBody);
  }
  let value: unknown = body;
  if (typeof body === 'string' || body instanceof Uint8Array) {
    if (body instanceof Uint8Array && body.byteLength === 0) {
      return reject(400, 'body', 'required', RequestMessage.noBody);
    }
    try {
      const text =
        typeof body === 'string' ? body : new TextDecoder('utf-8', { fatal: true }).decode(body);
      value = JSON.parse(text);
    } catch (err) {
      const detail = err instanceof Error ? err.message : 'invalid JSON';
      return {
        ok: false,
        error: new InvalidRequestError(400, 'body', 'json', RequestMessage.unmarshal(detail), {
          cause: err,
        }),
      };
    }
  }
  if (!isObject(value)) return typeMismatch('body', 'an object', value);
  return { ok: true, value };
}

function checkDryRun(o: Json): ValidationResult<string[] | undefined> {
  const dryRun = o.dryRun;
  if (dryRun === undefined || dryRun === null) return { ok: true, value: undefined };
  if (!Array.isArray(dryRun) || dryRun.some((d) => typeof d !== 'string')) {
    return typeMismatch('dryRun', 'a list of strings', dryRun);
  }
  // KubeVirt ignores unknown directives (and panics on an empty list); an unknown directive
  // must not turn a dry run into a real one, so it is refused here.
  if (dryRun.length > 1 || (dryRun.length === 1 && dryRun[0] !== DRY_RUN_ALL)) {
    return reject(400, 'dryRun', 'enum', `dryRun must be ["${DRY_RUN_ALL}"] when set`);
  }
  return { ok: true, value: dryRun.length === 0 ? undefined : [DRY_RUN_ALL] };
}

// ---------------------------------------------------------------------------------------------
// Disk rules

function busOf(disk: Json): { device: 'disk' | 'lun' | 'cdrom' | undefined; bus: unknown } {
  for (const device of ['disk', 'lun', 'cdrom'] as const) {
    const target = disk[device];
    if (isObject(target)) return { device, bus: target.bus };
  }
  return { device: undefined, bus: undefined };
}

function checkDeviceTargets(disk: Json, name: string, field: string): ValidationResult<undefined> {
  let count = 0;
  for (const device of ['disk', 'lun', 'cdrom'] as const) {
    const target = disk[device];
    if (target === undefined || target === null) continue;
    if (!isObject(target)) return typeMismatch(`${field}.${device}`, 'an object', target);
    if (target.bus !== undefined && typeof target.bus !== 'string') {
      return typeMismatch(`${field}.${device}.bus`, 'a string', target.bus);
    }
    count += 1;
  }
  if (count > 1) {
    return reject(422, field, 'single-target', RequestMessage.singleTarget(field));
  }
  const { device, bus } = busOf(disk);
  const busText = typeof bus === 'string' ? bus : '';
  if (device === 'disk' && !HOTPLUG_DISK_BUSES.includes(busText as DiskBus)) {
    return reject(
      422,
      `${field}.disk.bus`,
      'hotplug-disk-bus',
      RequestMessage.diskBus(name, busText),
    );
  }
  if (device === 'lun' && !HOTPLUG_LUN_BUSES.includes(busText as DiskBus)) {
    return reject(422, `${field}.lun.bus`, 'hotplug-lun-bus', RequestMessage.lunBus(name, busText));
  }
  if (device !== 'disk' && device !== 'lun') {
    return reject(422, field, 'hotplug-disk-device', RequestMessage.diskDevice(name));
  }
  if (disk.dedicatedIOThread === true && busText !== 'virtio') {
    return reject(
      422,
      `${field}.dedicatedIOThread`,
      'io-thread-bus',
      RequestMessage.ioThreads(name),
    );
  }
  return { ok: true, value: undefined };
}

function checkScalarTypes(disk: Json, field: string): ValidationResult<undefined> {
  const strings = ['serial', 'cache', 'io', 'errorPolicy', 'tag'] as const;
  for (const key of strings) {
    if (disk[key] !== undefined && typeof disk[key] !== 'string') {
      return typeMismatch(`${field}.${key}`, 'a string', disk[key]);
    }
  }
  for (const key of ['dedicatedIOThread', 'shareable'] as const) {
    if (disk[key] !== undefined && typeof disk[key] !== 'boolean') {
      return typeMismatch(`${field}.${key}`, 'a boolean', disk[key]);
    }
  }
  if (disk.bootOrder !== undefined && !Number.isSafeInteger(disk.bootOrder)) {
    return typeMismatch(`${field}.bootOrder`, 'an integer', disk.bootOrder);
  }
  return { ok: true, value: undefined };
}

function checkDiskValues(disk: Json, field: string): ValidationResult<undefined> {
  if (typeof disk.bootOrder === 'number' && disk.bootOrder < 1) {
    return reject(422, `${field}.bootOrder`, 'boot-order', RequestMessage.bootOrder(field));
  }
  const serial = disk.serial;
  if (typeof serial === 'string' && serial !== '') {
    // Length is counted in characters (Go counts runes), and checked before the charset so an
    // overlong serial reports its length.
    if ([...serial].length > MAX_SERIAL_LENGTH) {
      return reject(422, `${field}.serial`, 'max-length', RequestMessage.serialLength(field));
    }
    if (!SERIAL_PATTERN.test(serial)) {
      return reject(422, `${field}.serial`, 'serial-charset', RequestMessage.serialCharset(field));
    }
  }
  const enums = [
    ['cache', Object.values(DriverCache), RequestMessage.cache],
    ['errorPolicy', Object.values(DiskErrorPolicy), RequestMessage.errorPolicy],
  ] as const;
  for (const [key, allowed, message] of enums) {
    const value = disk[key];
    if (
      typeof value === 'string' &&
      value !== '' &&
      !(allowed as readonly string[]).includes(value)
    ) {
      return reject(422, `${field}.${key}`, 'enum', message(`${field}.${key}`, value));
    }
  }
  const io = disk.io;
  if (typeof io === 'string' && io !== '' && !(Object.values(DriverIO) as string[]).includes(io)) {
    return reject(422, `${field}.io`, 'enum', RequestMessage.io(field));
  }
  return { ok: true, value: undefined };
}

function checkVolumeName(name: string, field: string): ValidationResult<undefined> {
  const problem = nameProblem(name, 'label');
  if (problem === undefined) return { ok: true, value: undefined };
  const rule = name.length > MAX_LABEL_LENGTH ? 'max-length' : 'dns1123-label';
  return reject(422, field, rule, `${field} ${JSON.stringify(name)}: ${problem}`);
}

/**
 * Checks a disk as a hotplugged disk: `disk` (bus scsi|virtio) or `lun` (bus scsi), serial,
 * cache, io, error policy, boot order, dedicated IO thread, and its name as a DNS-1123 label.
 * `name` is the volume name the disk will carry (defaults to `disk.name`).
 */
export function validateHotplugDisk(
  disk: unknown,
  name?: string,
  field = 'disk',
): ValidationResult<Disk> {
  if (!isObject(disk)) return typeMismatch(field, 'an object', disk);
  if (disk.name !== undefined && typeof disk.name !== 'string') {
    return typeMismatch(`${field}.name`, 'a string', disk.name);
  }
  const diskName = name ?? disk.name ?? '';
  const steps = [
    () => checkScalarTypes(disk, field),
    () => checkVolumeName(diskName, name === undefined ? `${field}.name` : 'name'),
    () => checkDeviceTargets(disk, diskName, field),
    () => checkDiskValues(disk, field),
  ];
  for (const step of steps) {
    const result = step();
    if (!result.ok) return result;
  }
  return { ok: true, value: { ...(structuredClone(disk) as unknown as Disk), name: diskName } };
}

// ---------------------------------------------------------------------------------------------
// Volume source

function checkSourceObject(
  source: Json,
  key: 'persistentVolumeClaim' | 'dataVolume',
): ValidationResult<Json | undefined> {
  const value = source[key];
  if (value === undefined || value === null) return { ok: true, value: undefined };
  const field = `volumeSource.${key}`;
  if (!isObject(value)) return typeMismatch(field, 'an object', value);
  const nameKey = key === 'persistentVolumeClaim' ? 'claimName' : 'name';
  const bools = key === 'persistentVolumeClaim' ? ['readOnly', 'hotpluggable'] : ['hotpluggable'];
  if (value[nameKey] !== undefined && typeof value[nameKey] !== 'string') {
    return typeMismatch(`${field}.${nameKey}`, 'a string', value[nameKey]);
  }
  for (const b of bools) {
    if (value[b] !== undefined && typeof value[b] !== 'boolean') {
      return typeMismatch(`${field}.${b}`, 'a boolean', value[b]);
    }
  }
  return { ok: true, value };
}

function checkVolumeSource(source: unknown, name: string): ValidationResult<HotplugVolumeSource> {
  if (!isObject(source)) return typeMismatch('volumeSource', 'an object', source);
  const pvc = checkSourceObject(source, 'persistentVolumeClaim');
  if (!pvc.ok) return pvc;
  const dv = checkSourceObject(source, 'dataVolume');
  if (!dv.ok) return dv;
  if (pvc.value === undefined && dv.value === undefined) {
    return reject(
      422,
      'volumeSource',
      'pvc-or-datavolume',
      RequestMessage.notPvcOrDataVolume(name),
    );
  }
  if (pvc.value !== undefined && dv.value !== undefined) {
    return reject(
      422,
      'volumeSource',
      'one-of',
      'volumeSource: only one of persistentVolumeClaim and dataVolume may be specified',
    );
  }
  const [field, claim] =
    pvc.value !== undefined
      ? ['volumeSource.persistentVolumeClaim.claimName', pvc.value.claimName]
      : ['volumeSource.dataVolume.name', dv.value?.name];
  const problem = nameProblem(claim ?? '', 'subdomain');
  if (problem !== undefined) {
    return reject(
      422,
      field,
      'dns1123-subdomain',
      `${field} ${JSON.stringify(claim ?? '')}: ${problem}`,
    );
  }
  if (pvc.value !== undefined) {
    const { claimName, readOnly } = pvc.value as { claimName: string; readOnly?: boolean };
    return {
      ok: true,
      value: {
        persistentVolumeClaim: {
          claimName,
          ...(readOnly === undefined ? {} : { readOnly }),
          hotpluggable: true,
        },
      },
    };
  }
  return { ok: true, value: { dataVolume: { name: claim as string, hotpluggable: true } } };
}

// ---------------------------------------------------------------------------------------------
// Conflicts with the target (the VM's template, or the running VMI)

interface Target {
  volumes: Volume[];
  /** Only the VMI subresource requires a running VMI. */
  vmi?: VirtualMachineInstance;
}

function targetOf(vmi?: VirtualMachineInstance, vm?: VirtualMachine): Target | undefined {
  if (vm !== undefined) return { volumes: vm.spec?.template?.spec?.volumes ?? [] };
  if (vmi !== undefined) return { volumes: vmi.spec?.volumes ?? [], vmi };
  return undefined;
}

function checkRunning(target: Target): ValidationResult<undefined> {
  if (
    target.vmi !== undefined &&
    target.vmi.status?.phase !== VirtualMachineInstancePhase.Running
  ) {
    return reject(409, 'vmi.status.phase', 'vmi-running', RequestMessage.vmiNotRunning);
  }
  return { ok: true, value: undefined };
}

function sourceMatches(volume: Volume, sourceName: string): boolean {
  return (
    (volume.dataVolume !== undefined && volume.dataVolume.name === sourceName) ||
    (volume.persistentVolumeClaim !== undefined &&
      volume.persistentVolumeClaim.claimName === sourceName)
  );
}

/** The claim or DataVolume name of a (type-checked) source, as KubeVirt's `volumeSourceName`. */
function rawSourceName(source: unknown): string {
  if (!isObject(source)) return '';
  const dv = source.dataVolume;
  if (isObject(dv)) return typeof dv.name === 'string' ? dv.name : '';
  const pvc = source.persistentVolumeClaim;
  if (isObject(pvc)) return typeof pvc.claimName === 'string' ? pvc.claimName : '';
  return '';
}

function checkAddConflicts(
  target: Target,
  name: string,
  sourceName: string,
): ValidationResult<undefined> {
  const running = checkRunning(target);
  if (!running.ok) return running;
  // Volume by volume, name before source: the first hit decides the message, as in KubeVirt.
  for (const volume of target.volumes) {
    if (volume.name === name) {
      return reject(409, 'name', 'volume-name-exists', RequestMessage.nameExists(name));
    }
    if (sourceMatches(volume, sourceName)) {
      return reject(
        409,
        'volumeSource',
        'volume-source-exists',
        RequestMessage.sourceExists(sourceName),
      );
    }
  }
  return { ok: true, value: undefined };
}

function checkRemoveConflicts(target: Target, name: string): ValidationResult<undefined> {
  const running = checkRunning(target);
  if (!running.ok) return running;
  for (const volume of target.volumes) {
    if (volume.name === name || sourceMatches(volume, name)) {
      if (!isHotpluggable(volume)) {
        return reject(409, 'name', 'hotpluggable', RequestMessage.notHotpluggable(volume.name));
      }
      return { ok: true, value: undefined };
    }
  }
  return reject(409, 'name', 'volume-exists', RequestMessage.doesNotExist(name));
}

// ---------------------------------------------------------------------------------------------
// The two requests

function checkAddShape(o: Json): ValidationResult<undefined> {
  if (o.name !== undefined && o.name !== null && typeof o.name !== 'string') {
    return typeMismatch('name', 'a string', o.name);
  }
  if (o.name === undefined || o.name === null || o.name === '') {
    return reject(400, 'name', 'required', RequestMessage.addRequiresName);
  }
  if (o.disk === undefined || o.disk === null) {
    return reject(400, 'disk', 'required', RequestMessage.addRequiresDisk);
  }
  if (o.volumeSource === undefined || o.volumeSource === null) {
    return reject(400, 'volumeSource', 'required', RequestMessage.addRequiresVolumeSource);
  }
  if (!isObject(o.disk)) return typeMismatch('disk', 'an object', o.disk);
  return { ok: true, value: undefined };
}

/**
 * Validates an `addvolume` body (a parsed object, or raw JSON text or bytes) against KubeVirt's
 * rules and, when given, the target: `vm` (its template; the VM subresource) or else `vmi` (must
 * be running; the VMI subresource). The value is normalised as virt-api does it: `disk.name` =
 * `name`, the source `hotpluggable: true`, `dryRun` only when `["All"]`.
 */
export function validateAddVolume(
  body: unknown,
  vmi?: VirtualMachineInstance,
  vm?: VirtualMachine,
): ValidationResult<AddVolumeOptions> {
  const parsed = parseBody(body);
  if (!parsed.ok) return parsed;
  const o = parsed.value;
  const shape = checkAddShape(o);
  if (!shape.ok) return shape;
  const name = o.name as string;
  const dryRun = checkDryRun(o);
  if (!dryRun.ok) return dryRun;
  // Malformed JSON (400) first; then the conflicts virt-api checks before patching (409); then
  // the webhook's rules (422), in the order KubeVirt meets them.
  const source = checkVolumeSource(o.volumeSource, name);
  if (!source.ok && source.error.status === 400) return source;
  const disk = validateHotplugDisk(o.disk, name);
  if (!disk.ok && disk.error.status === 400) return disk;
  const target = targetOf(vmi, vm);
  if (target !== undefined) {
    const conflict = checkAddConflicts(target, name, rawSourceName(o.volumeSource));
    if (!conflict.ok) return conflict;
  }
  if (!source.ok) return source;
  if (!disk.ok) return disk;
  const value: AddVolumeOptions = { name, disk: disk.value, volumeSource: source.value };
  if (dryRun.value !== undefined) value.dryRun = dryRun.value;
  return { ok: true, value };
}

/** Validates a `removevolume` body; with a target, the volume must exist and be hotpluggable. */
export function validateRemoveVolume(
  body: unknown,
  vmi?: VirtualMachineInstance,
  vm?: VirtualMachine,
): ValidationResult<RemoveVolumeOptions> {
  const parsed = parseBody(body);
  if (!parsed.ok) return parsed;
  const o = parsed.value;
  if (o.name !== undefined && o.name !== null && typeof o.name !== 'string') {
    return typeMismatch('name', 'a string', o.name);
  }
  if (o.name === undefined || o.name === null || o.name === '') {
    return reject(400, 'name', 'required', RequestMessage.removeRequiresName);
  }
  const name = o.name;
  const dryRun = checkDryRun(o);
  if (!dryRun.ok) return dryRun;
  const target = targetOf(vmi, vm);
  if (target !== undefined) {
    const conflict = checkRemoveConflicts(target, name);
    if (!conflict.ok) return conflict;
  }
  const value: RemoveVolumeOptions = { name };
  if (dryRun.value !== undefined) value.dryRun = dryRun.value;
  return { ok: true, value };
}

// ---------------------------------------------------------------------------------------------
// virtctl flags

export interface AddVolumeFlags {
  /** `--volume-name`: the PVC or DataVolume name. */
  volumeName: string;
  /** `--disk-name`: overrides the disk/volume name. */
  diskName?: string;
  /** `--serial`: defaults to the volume's name. */
  serial?: string;
  /** `--cache`: none | writethrough | writeback. */
  cache?: string;
  /** `--disk-type`: disk (default) | lun. */
  diskType?: string;
  /** `--bus`: scsi (default) | virtio (disk only). */
  bus?: string;
  /** `--dry-run`: sends `dryRun: ["All"]`. */
  dryRun?: boolean;
  /** What `--volume-name` names (virtctl looks up a DataVolume first, then a PVC). */
  source: 'pvc' | 'dataVolume';
}

/** Client-side cache modes virtctl accepts. */
export const VIRTCTL_CACHE_MODES: readonly string[] = [
  DriverCache.None,
  DriverCache.WriteThrough,
  DriverCache.WriteBack,
];

function checkFlags(
  flags: AddVolumeFlags,
): ValidationResult<{ diskType: 'disk' | 'lun'; bus: string }> {
  if (typeof flags.volumeName !== 'string' || flags.volumeName === '') {
    return reject(400, '--volume-name', 'required', 'required flag(s) "volume-name" not set');
  }
  const diskType = flags.diskType ?? 'disk';
  if (diskType !== 'disk' && diskType !== 'lun') {
    return reject(
      400,
      '--disk-type',
      'enum',
      `Invalid disk type '${diskType}'. Only LUN and Disk are supported.`,
    );
  }
  const bus = flags.bus ?? 'scsi';
  const buses: readonly string[] = diskType === 'lun' ? HOTPLUG_LUN_BUSES : HOTPLUG_DISK_BUSES;
  if (!buses.includes(bus)) {
    return reject(
      400,
      '--bus',
      'enum',
      `Invalid bus '${bus}' for disk type '${diskType}'. Supported: ${buses.join(', ')}.`,
    );
  }
  if (
    flags.cache !== undefined &&
    flags.cache !== '' &&
    !VIRTCTL_CACHE_MODES.includes(flags.cache)
  ) {
    return reject(
      400,
      '--cache',
      'enum',
      `error adding volume, invalid cache value ${flags.cache}`,
    );
  }
  if (flags.source !== 'pvc' && flags.source !== 'dataVolume') {
    return reject(400, 'source', 'enum', `source must be pvc or dataVolume`);
  }
  return { ok: true, value: { diskType, bus } };
}

/**
 * Builds the `AddVolumeOptions` virtctl sends for its flags, with virtctl's client rules, then
 * applies the server's rules (`validateAddVolume`) so a bad serial or name is caught here too.
 */
export function addVolumeOptionsFromFlags(
  flags: AddVolumeFlags,
): ValidationResult<AddVolumeOptions> {
  const checked = checkFlags(flags);
  if (!checked.ok) return checked;
  const { diskType, bus } = checked.value;
  const name =
    flags.diskName !== undefined && flags.diskName !== '' ? flags.diskName : flags.volumeName;
  const field = name === flags.diskName ? '--disk-name' : '--volume-name';
  if (name.length > MAX_LABEL_LENGTH) {
    return reject(
      400,
      field,
      'max-length',
      `${field} ${JSON.stringify(name)}: must be no more than ${MAX_LABEL_LENGTH} characters`,
    );
  }
  const disk: Disk = {
    name,
    ...(diskType === 'lun' ? { lun: { bus: bus as DiskBus } } : { disk: { bus: bus as DiskBus } }),
    serial: flags.serial !== undefined && flags.serial !== '' ? flags.serial : name,
  };
  if (flags.cache !== undefined && flags.cache !== '') disk.cache = flags.cache as DriverCache;
  const volumeSource: HotplugVolumeSource =
    flags.source === 'pvc'
      ? { persistentVolumeClaim: { claimName: flags.volumeName, hotpluggable: true } }
      : { dataVolume: { name: flags.volumeName, hotpluggable: true } };
  const body: AddVolumeOptions = { name, disk, volumeSource };
  if (flags.dryRun === true) body.dryRun = [DRY_RUN_ALL];
  return validateAddVolume(body);
}

// ---------------------------------------------------------------------------------------------
// Applying a request, and the JSON patch virt-api sends

/** An RFC 6902 operation, of the kinds these patches use. */
export type JsonPatchOperation =
  | { op: 'test'; path: string; value: unknown }
  | { op: 'add'; path: string; value: unknown }
  | { op: 'replace'; path: string; value: unknown }
  | { op: 'remove'; path: string };

/**
 * The spec after an add: the volume (source `hotpluggable: true`) and its disk (named after the
 * volume) appended. Unchanged when a volume of that name exists. Never mutates its input.
 */
export function applyAddVolumeToSpec(
  spec: VirtualMachineInstanceSpec,
  opts: AddVolumeOptions,
): VirtualMachineInstanceSpec {
  const next = structuredClone(spec);
  next.domain ??= { devices: {} };
  next.domain.devices ??= {};
  if ((next.volumes ?? []).some((v) => v.name === opts.name)) return next;
  const volume: Volume = { name: opts.name };
  const pvc = opts.volumeSource.persistentVolumeClaim;
  const dv = opts.volumeSource.dataVolume;
  if (pvc !== undefined) volume.persistentVolumeClaim = { ...pvc, hotpluggable: true };
  else if (dv !== undefined) volume.dataVolume = { ...dv, hotpluggable: true };
  next.volumes = [...(next.volumes ?? []), volume];
  next.domain.devices.disks = [
    ...(next.domain.devices.disks ?? []),
    { ...structuredClone(opts.disk), name: opts.name },
  ];
  return next;
}

/** The spec after a remove: the volume and the disk of that name dropped. Never mutates. */
export function applyRemoveVolumeFromSpec(
  spec: VirtualMachineInstanceSpec,
  name: string,
): VirtualMachineInstanceSpec {
  const next = structuredClone(spec);
  next.domain ??= { devices: {} };
  next.domain.devices ??= {};
  next.volumes = (next.volumes ?? []).filter((v) => v.name !== name);
  next.domain.devices.disks = (next.domain.devices.disks ?? []).filter((d) => d.name !== name);
  return next;
}

function isVirtualMachine(
  target: VirtualMachineInstance | VirtualMachine,
): target is VirtualMachine {
  return (
    target.kind === 'VirtualMachine' ||
    (target.spec as { template?: unknown }).template !== undefined
  );
}

function specOf(target: VirtualMachineInstance | VirtualMachine): {
  prefix: string;
  spec: VirtualMachineInstanceSpec;
} {
  if (isVirtualMachine(target))
    return { prefix: '/spec/template/spec', spec: target.spec.template.spec };
  return { prefix: '/spec', spec: target.spec };
}

function volumePatch(
  target: VirtualMachineInstance | VirtualMachine,
  apply: (spec: VirtualMachineInstanceSpec) => VirtualMachineInstanceSpec,
): JsonPatchOperation[] {
  const { prefix, spec } = specOf(target);
  const volumesPath = `${prefix}/volumes`;
  const disksPath = `${prefix}/domain/devices/disks`;
  const before = { volumes: spec.volumes, disks: spec.domain?.devices?.disks };
  const after = apply(spec);
  const write = (path: string, old: unknown[] | undefined, value: unknown): JsonPatchOperation =>
    old !== undefined && old.length > 0
      ? { op: 'replace', path, value }
      : { op: 'add', path, value };
  return [
    { op: 'test', path: volumesPath, value: before.volumes ?? null },
    { op: 'test', path: disksPath, value: before.disks ?? null },
    write(volumesPath, before.volumes, after.volumes ?? []),
    write(disksPath, before.disks, after.domain.devices.disks ?? []),
  ];
}

/**
 * The JSON patch virt-api sends for an add: `test` ops on the volumes and disks it read (so a
 * concurrent change makes the patch fail), then `replace` (or `add` when the list was empty).
 * For a VM the paths are under `/spec/template/spec`.
 */
export function buildAddVolumePatch(
  target: VirtualMachineInstance | VirtualMachine,
  opts: AddVolumeOptions,
): JsonPatchOperation[] {
  return volumePatch(target, (spec) => applyAddVolumeToSpec(spec, opts));
}

/** The JSON patch virt-api sends for a remove (see `buildAddVolumePatch`). */
export function buildRemoveVolumePatch(
  target: VirtualMachineInstance | VirtualMachine,
  name: string,
): JsonPatchOperation[] {
  return volumePatch(target, (spec) => applyRemoveVolumeFromSpec(spec, name));
}
