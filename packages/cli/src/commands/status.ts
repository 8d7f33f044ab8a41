import {
  NotFoundError,
  isHotpluggable,
  type VirtualMachineInstance,
  type Volume,
  type VolumeStatus,
} from '@plugline/contracts';
import { stringify } from 'yaml';
import { parseFlags, positionalArgs, str } from '../args.js';
import { kubeFrom } from '../clients.js';
import { parseCliConfig } from '../config.js';
import { CliError, ExitCode, UsageError } from '../errors.js';
import type { Io } from '../io.js';
import { formatAge, formatTable } from '../render.js';
import type { KubeClient } from '@plugline/kube';

export const STATUS_USAGE = `Show the hotplugged volumes of a VMI: phase, guest target, node, attachment pod.

Usage:
  plugctl status VMI [-o json|yaml] [-n NAMESPACE]
`;

const OPTIONS = { output: { type: 'string', short: 'o' } } as const;

/** One row of `plugctl status`. */
export interface VolumeRow {
  name: string;
  /** Volume phase; `<none>` while the request has no status entry yet. */
  phase: string;
  reason?: string;
  message?: string;
  target: string;
  node: string;
  pod: string;
  /** Age of the attachment pod, in ms (undefined without a pod). */
  ageMs?: number;
  hotpluggable: boolean;
  claimName?: string;
}

async function podAge(
  client: KubeClient,
  namespace: string,
  pod: string | undefined,
  now: number,
): Promise<number | undefined> {
  if (pod === undefined || pod === '') return undefined;
  try {
    const created = (await client.getPod(namespace, pod)).metadata?.creationTimestamp;
    return created === undefined ? undefined : now - new Date(created).getTime();
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

/** The rows for a VMI: every volume in its status, plus hotplug requests not in it yet. */
export async function volumeRows(
  client: KubeClient,
  vmi: VirtualMachineInstance,
  now = Date.now(),
): Promise<VolumeRow[]> {
  const namespace = vmi.metadata.namespace ?? 'default';
  const node = vmi.status?.nodeName ?? '';
  const specVolumes = vmi.spec.volumes ?? [];
  const statuses = vmi.status?.volumeStatus ?? [];
  const rows: VolumeRow[] = [];
  for (const s of statuses)
    rows.push(await rowOf(client, s, { namespace, node, now, specVolumes }));
  for (const v of specVolumes) {
    if (!isHotpluggable(v) || statuses.some((s) => s.name === v.name)) continue;
    rows.push({ name: v.name, phase: '<none>', target: '', node, pod: '', hotpluggable: true });
  }
  return rows;
}

async function rowOf(
  client: KubeClient,
  s: VolumeStatus,
  at: { namespace: string; node: string; now: number; specVolumes: Volume[] },
): Promise<VolumeRow> {
  const { namespace, node, now, specVolumes } = at;
  {
    const pod = s.hotplugVolume?.attachPodName;
    const spec = specVolumes.find((v) => v.name === s.name);
    return {
      name: s.name,
      phase: s.phase ?? '<none>',
      ...(s.reason === undefined ? {} : { reason: s.reason }),
      ...(s.message === undefined ? {} : { message: s.message }),
      target: s.target,
      node,
      pod: pod ?? '',
      ...(await podAge(client, namespace, pod, now).then((ageMs) =>
        ageMs === undefined ? {} : { ageMs },
      )),
      hotpluggable: s.hotplugVolume !== undefined || (spec !== undefined && isHotpluggable(spec)),
      ...(s.persistentVolumeClaimInfo?.claimName === undefined
        ? {}
        : { claimName: s.persistentVolumeClaimInfo.claimName }),
    };
  }
}

export async function statusCommand(argv: readonly string[], io: Io): Promise<ExitCode> {
  const { values, positionals } = parseFlags(argv, OPTIONS);
  if (values.help === true) {
    io.out(STATUS_USAGE);
    return ExitCode.Ok;
  }
  const [name] = positionalArgs(positionals, ['vmi']) as [string];
  const output = str(values.output) ?? 'table';
  if (!['table', 'wide', 'json', 'yaml'].includes(output)) {
    throw new UsageError(
      `unable to match a printer suitable for the output format "${output}", allowed formats are: json,yaml`,
    );
  }
  const config = parseCliConfig(values, io.env);
  const kube = kubeFrom(config);
  let vmi: VirtualMachineInstance;
  try {
    vmi = await kube.client.getVmi(kube.namespace, name);
  } catch (err) {
    if (err instanceof NotFoundError) {
      throw new CliError(`virtualmachineinstances.kubevirt.io "${name}" not found`, 1, 'NotFound', {
        cause: err,
      });
    }
    throw err;
  }
  const rows = await volumeRows(kube.client, vmi);
  if (output === 'json' || output === 'yaml') {
    const doc = {
      namespace: kube.namespace,
      vmi: name,
      phase: vmi.status?.phase ?? '',
      node: vmi.status?.nodeName ?? '',
      volumes: rows,
    };
    io.out(output === 'json' ? `${JSON.stringify(doc, null, 2)}\n` : stringify(doc));
    return ExitCode.Ok;
  }
  if (rows.length === 0) {
    io.out(`No volumes on VMI ${kube.namespace}/${name}.\n`);
    return ExitCode.Ok;
  }
  io.out(
    formatTable(
      ['VOLUME', 'PHASE', 'TARGET', 'NODE', 'POD', 'AGE'],
      rows.map((r) => [
        r.name,
        r.phase,
        r.target === '' ? '<none>' : r.target,
        r.node === '' ? '<none>' : r.node,
        r.pod === '' ? '<none>' : r.pod,
        r.ageMs === undefined ? '<unknown>' : formatAge(r.ageMs),
      ]),
    ),
  );
  return ExitCode.Ok;
}
