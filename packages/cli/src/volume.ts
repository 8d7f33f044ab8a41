/**
 * virtctl's `addvolume` / `removevolume` as functions: the volume source is looked up (a
 * DataVolume first, then a PVC), the request validated against the VM's template (when the VMI
 * has a VM) or the running VMI, and sent as a JSON patch guarded by `test` operations, retried
 * on conflict up to 15 times as virtctl does.
 */
import {
  ConflictError,
  NotFoundError,
  addVolumeOptionsFromFlags,
  buildAddVolumePatch,
  buildRemoveVolumePatch,
  validateAddVolume,
  validateRemoveVolume,
  type AddVolumeFlags,
  type AddVolumeOptions,
  type InvalidRequestError,
  type JsonPatchOperation,
  type VirtualMachine,
  type VirtualMachineInstance,
} from '@plugline/contracts';
import { retryOnConflict, type KubeClient } from '@plugline/kube';
import { CliError } from './errors.js';

/** virtctl retries a conflicting patch this many times. */
export const MAX_RETRIES = 15;

/** A request KubeVirt would reject; the message is KubeVirt's, prefixed as virtctl prints it. */
export class RequestRejectedError extends CliError {
  override name = 'RequestRejectedError';
  constructor(
    verb: 'adding' | 'removing',
    readonly rejection: InvalidRequestError,
  ) {
    const prefix = `error ${verb} volume, `;
    const text = rejection.message.startsWith(prefix)
      ? rejection.message
      : `${prefix}${rejection.message}`;
    super(text, 1, rejection.reason, { cause: rejection });
  }
}

/** The API's own words from a mapped client error (`patch x ns/n: <message>` → `<message>`). */
function apiMessage(err: Error): string {
  const m = /^(?:get|patch|create|delete|list) [\w./]+ [^:]*: (.*)$/s.exec(err.message);
  return m?.[1] ?? err.message;
}

/** Rewords any failure as virtctl prints it: `error adding volume, <why>`. */
async function asVirtctlError<T>(verb: 'adding' | 'removing', run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof CliError) throw err;
    if (err instanceof ConflictError) {
      throw new CliError(`error ${verb} volume after ${MAX_RETRIES} retries`, 1, 'Conflict', {
        cause: err,
      });
    }
    const why = err instanceof Error ? apiMessage(err) : String(err);
    throw new CliError(`error ${verb} volume, ${why}`, 1, 'RequestFailed', { cause: err });
  }
}

export type TargetKind = 'VirtualMachine' | 'VirtualMachineInstance';

export interface VolumeRequestResult {
  /** Where the request was written: the VM's template, or the VMI. */
  target: TargetKind;
  /** The volume name (the disk name). */
  name: string;
  patch: JsonPatchOperation[];
  dryRun: boolean;
  /** Conflicting attempts before the patch went through. */
  retries: number;
  options?: AddVolumeOptions;
}

async function optional<T>(read: Promise<T>): Promise<T | undefined> {
  try {
    return await read;
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

/**
 * What `--volume-name` names: a DataVolume if one exists, else a PVC (virtctl's order). Both are
 * read at once (virtctl reads the PVC only after the DataVolume's 404): the same answer, one
 * round trip sooner for the common case, a PVC.
 */
export async function volumeSourceKind(
  client: KubeClient,
  namespace: string,
  name: string,
): Promise<'dataVolume' | 'pvc'> {
  const pvc = optional(client.getPvc(namespace, name));
  // Awaited only when no DataVolume answers; its failure must not go unhandled meanwhile.
  pvc.catch(() => undefined);
  if ((await optional(client.getDataVolume(namespace, name))) !== undefined) return 'dataVolume';
  if ((await pvc) !== undefined) return 'pvc';
  throw new CliError(
    `error adding volume, Volume ${name} is not a DataVolume or PersistentVolumeClaim`,
    1,
    'VolumeSourceNotFound',
  );
}

interface Targets {
  vm: VirtualMachine | undefined;
  vmi: VirtualMachineInstance | undefined;
}

/** Reads the VM and the VMI of that name; NotFound (as the API words it) when neither exists. */
async function readTargets(client: KubeClient, namespace: string, name: string): Promise<Targets> {
  const [vm, vmi] = await Promise.all([
    optional(client.getVm(namespace, name)),
    optional(client.getVmi(namespace, name)),
  ]);
  if (vm === undefined && vmi === undefined) {
    throw new NotFoundError(`virtualmachineinstances.kubevirt.io "${name}" not found`);
  }
  return { vm, vmi };
}

async function send(
  client: KubeClient,
  where: { namespace: string; name: string },
  targets: Targets,
  patch: JsonPatchOperation[],
  dryRun: boolean,
): Promise<TargetKind> {
  const { namespace, name } = where;
  if (targets.vm !== undefined) {
    await client.patchVm(namespace, name, patch, { dryRun });
    return 'VirtualMachine';
  }
  await client.patchVmi(namespace, name, patch, { dryRun });
  return 'VirtualMachineInstance';
}

export interface AddVolumeRequest {
  namespace: string;
  /** The VMI (or VM) name. */
  vmi: string;
  flags: Omit<AddVolumeFlags, 'source'>;
}

/** `virtctl addvolume`. @throws RequestRejectedError with KubeVirt's message */
export async function addVolume(
  client: KubeClient,
  request: AddVolumeRequest,
): Promise<VolumeRequestResult> {
  const { namespace, vmi: name, flags } = request;
  const source =
    flags.volumeName === ''
      ? 'pvc'
      : await asVirtctlError('adding', () => volumeSourceKind(client, namespace, flags.volumeName));
  const built = addVolumeOptionsFromFlags({ ...flags, source });
  if (!built.ok) throw new RequestRejectedError('adding', built.error);
  let retries = 0;
  return asVirtctlError('adding', () =>
    retryOnConflict(
      async (attempt) => {
        retries = attempt - 1;
        const targets = await readTargets(client, namespace, name);
        const checked = validateAddVolume(built.value, targets.vmi, targets.vm);
        if (!checked.ok) throw new RequestRejectedError('adding', checked.error);
        const patch = buildAddVolumePatch(
          (targets.vm ?? targets.vmi) as VirtualMachine | VirtualMachineInstance,
          checked.value,
        );
        const dryRun = checked.value.dryRun !== undefined;
        const target = await send(client, { namespace, name }, targets, patch, dryRun);
        return { target, name: checked.value.name, patch, dryRun, retries, options: checked.value };
      },
      { steps: MAX_RETRIES, baseMs: 2, factor: 1.5, capMs: 50 },
    ),
  );
}

export interface RemoveVolumeRequest {
  namespace: string;
  vmi: string;
  /** `--volume-name`: the volume's name. */
  volumeName: string;
  dryRun?: boolean;
}

/** `virtctl removevolume`. @throws RequestRejectedError with KubeVirt's message */
export async function removeVolume(
  client: KubeClient,
  request: RemoveVolumeRequest,
): Promise<VolumeRequestResult> {
  const { namespace, vmi: name, volumeName } = request;
  if (volumeName === '') {
    throw new CliError('required flag(s) "volume-name" not set', 1, 'Usage');
  }
  let retries = 0;
  return asVirtctlError('removing', () =>
    retryOnConflict(
      async (attempt) => {
        retries = attempt - 1;
        const targets = await readTargets(client, namespace, name);
        const body = request.dryRun ? { name: volumeName, dryRun: ['All'] } : { name: volumeName };
        const checked = validateRemoveVolume(body, targets.vmi, targets.vm);
        if (!checked.ok) throw new RequestRejectedError('removing', checked.error);
        const target = (targets.vm ?? targets.vmi) as VirtualMachine | VirtualMachineInstance;
        const volumes =
          targets.vm !== undefined
            ? (targets.vm.spec.template.spec.volumes ?? [])
            : (targets.vmi?.spec.volumes ?? []);
        // `--volume-name` may name the volume or its claim/DataVolume, as in KubeVirt.
        const volume =
          volumes.find((v) => v.name === volumeName) ??
          volumes.find(
            (v) =>
              v.persistentVolumeClaim?.claimName === volumeName ||
              v.dataVolume?.name === volumeName,
          );
        const volName = volume?.name ?? volumeName;
        const patch = buildRemoveVolumePatch(target, volName);
        const dryRun = checked.value.dryRun !== undefined;
        const kind = await send(client, { namespace, name }, targets, patch, dryRun);
        return { target: kind, name: volName, patch, dryRun, retries };
      },
      { steps: MAX_RETRIES, baseMs: 2, factor: 1.5, capMs: 50 },
    ),
  );
}
