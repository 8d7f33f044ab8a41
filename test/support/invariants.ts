/**
 * The invariants of a quiet Plugline stack, checked against the truth (the API server, the
 * simulated hypervisor's domains, the node's mount table, device nodes and loop devices, and the
 * work stream). Any test can call {@link checkInvariants} (one look) or {@link waitForInvariants}
 * (until they hold, since a stack that just recovered from a crash converges).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, type V1Pod } from '@kubernetes/client-node';
import {
  ATTACHMENT_POD_PREFIX,
  KUBEVIRT_GROUP,
  KUBEVIRT_VERSION,
  type VirtualMachineInstance,
  type Volume,
} from '@plugline/contracts';
import type { Stack } from '@plugline/cli';
import { readSimulatedDomains } from '@plugline/hypervisor';
import { waitFor, WaitTimeoutError } from '@plugline/testkit';

export interface InvariantTarget {
  /** The stack's folder (kubelet root, hypervisor state files, loop device backing files). */
  readonly dir: string;
  readonly kubeletRoot: string;
  readonly nodes: readonly string[];
  readonly kc: Stack['kc'];
}

export interface InvariantOptions {
  /** NATS monitoring URL of a server (`/jsz`): the work stream must be empty. */
  natsMonitorUrl?: string;
}

export interface InvariantReport {
  violations: string[];
  /** Hot-plugged volumes in specs that were checked (all `Ready`). */
  readyVolumes: number;
}

interface DomainDiskState {
  disk: { sourcePath?: string; target?: string; alias?: string };
}

/** The claim (PVC or DataVolume name) of a hotplug volume; undefined for a non-hotplug one. */
function hotplugClaim(v: Volume): string | undefined {
  if (v.persistentVolumeClaim?.hotpluggable === true) return v.persistentVolumeClaim.claimName;
  if (v.dataVolume?.hotpluggable === true) return v.dataVolume.name;
  return undefined;
}

/** The volume a hot-plugged domain disk shows: its source in the hotplug folder. */
function diskVolume(d: DomainDiskState): string | undefined {
  const src = d.disk.sourcePath ?? '';
  if (!src.includes('hotplug-disks/')) return undefined;
  return src.slice(src.lastIndexOf('/') + 1).replace(/\.img$/, '');
}

function loopDevices(dir: string): { device: string; backing: string }[] {
  const out = execFileSync('losetup', ['-a', '-O', 'NAME,BACK-FILE', '-n', '-l'], {
    encoding: 'utf8',
  });
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((p) => p.length >= 2 && (p[1] ?? '').startsWith(dir))
    .map(([device, backing]) => ({ device: device ?? '', backing: backing ?? '' }));
}

function mountPoints(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => (l.split(' ')[4] ?? '').replace(/\\040/g, ' '))
    .filter((p) => p.startsWith(prefix));
}

/** Messages and unacknowledged deliveries of the work stream, from the monitoring endpoint. */
export async function workBacklog(monitorUrl: string): Promise<string[]> {
  const res = await fetch(`${monitorUrl}/jsz?streams=true&consumers=true`, {
    signal: AbortSignal.timeout(3000),
  });
  const jsz = (await res.json()) as {
    account_details?: {
      stream_detail?: {
        name: string;
        state: { messages: number };
        consumer_detail?: { name: string; num_pending: number; num_ack_pending: number }[];
      }[];
    }[];
  };
  const out: string[] = [];
  for (const account of jsz.account_details ?? []) {
    for (const stream of account.stream_detail ?? []) {
      if (stream.name !== 'PLUGLINE_WORK') continue;
      if (stream.state.messages > 0) {
        out.push(`work stream holds ${stream.state.messages} message(s)`);
      }
      for (const c of stream.consumer_detail ?? []) {
        if (c.num_pending + c.num_ack_pending > 0) {
          out.push(
            `consumer ${c.name}: ${c.num_pending} pending, ${c.num_ack_pending} unacknowledged`,
          );
        }
      }
    }
  }
  return out;
}

/** One look at every invariant; `violations` is empty when they all hold. */
export async function checkInvariants(
  stack: InvariantTarget,
  options: InvariantOptions = {},
): Promise<InvariantReport> {
  const violations: string[] = [];
  const custom = stack.kc.makeApiClient(CustomObjectsApi);
  const core = stack.kc.makeApiClient(CoreV1Api);
  const vmis = (
    (await custom.listClusterCustomObject({
      group: KUBEVIRT_GROUP,
      version: KUBEVIRT_VERSION,
      plural: 'virtualmachineinstances',
    })) as { items: VirtualMachineInstance[] }
  ).items;
  const pods = (await core.listPodForAllNamespaces()).items;
  const domains = new Map<string, { disks: DomainDiskState[] }>();
  for (const node of stack.nodes) {
    const held = readSimulatedDomains(join(stack.dir, 'state', `hypervisor-${node}`));
    for (const [name, d] of held) domains.set(name, d);
  }
  const launcherByName = new Map<string, V1Pod>();
  for (const p of pods) launcherByName.set(`${p.metadata?.namespace}/${p.metadata?.name}`, p);

  /** Mount points and device nodes under a launcher's hotplug folder that a spec volume owns. */
  const ownedEntries = new Set<string>();
  /** PVC (`ns/claim`) any spec in that namespace hot-plugs. */
  const claimsInSpecs = new Set<string>();
  /** Attachment pod claims a VMI's spec owns: `ns/<vmi uid>/<claim>`. */
  const ownedByVmi = new Map<string, Set<string>>();
  let readyVolumes = 0;

  for (const vmi of vmis) {
    const ns = vmi.metadata.namespace ?? '';
    const name = vmi.metadata.name ?? '';
    const where = `${ns}/${name}`;
    const hotplug = (vmi.spec.volumes ?? []).filter((v) => hotplugClaim(v) !== undefined);
    const inSpec = new Set(hotplug.map((v) => v.name));
    const claims = new Set(hotplug.map((v) => hotplugClaim(v) as string));
    for (const c of claims) claimsInSpecs.add(`${ns}/${c}`);
    ownedByVmi.set(vmi.metadata.uid ?? '', claims);
    const statuses = vmi.status?.volumeStatus ?? [];
    const domain = domains.get(`${ns}_${name}`);
    const disks = domain?.disks ?? [];
    const launcherName = Object.keys(vmi.status?.activePods ?? {}).length
      ? pods.find(
          (p) =>
            p.metadata?.namespace === ns &&
            p.metadata?.labels?.['kubevirt.io/created-by'] === vmi.metadata.uid &&
            p.metadata?.labels?.['kubevirt.io'] === 'virt-launcher',
        )
      : undefined;
    const hotplugDir =
      launcherName?.metadata?.uid === undefined
        ? undefined
        : join(
            stack.kubeletRoot,
            'pods',
            launcherName.metadata.uid,
            'volumes',
            'kubernetes.io~empty-dir',
            'hotplug-disks',
          );
    for (const v of hotplug) {
      readyVolumes++;
      const entries = statuses.filter((s) => s.name === v.name);
      if (entries.length !== 1) {
        violations.push(`${where}/${v.name}: ${entries.length} status entries`);
        continue;
      }
      const s = entries[0]!;
      if (s.phase !== 'Ready') violations.push(`${where}/${v.name}: phase ${s.phase ?? '-'}`);
      const inDomain = disks.filter((d) => diskVolume(d) === v.name);
      if (inDomain.length !== 1) {
        violations.push(`${where}/${v.name}: ${inDomain.length} disks in the domain`);
      } else if (inDomain[0]!.disk.target !== s.target || s.target === undefined) {
        violations.push(
          `${where}/${v.name}: domain target ${inDomain[0]!.disk.target} but status ${s.target}`,
        );
      }
      if (hotplugDir !== undefined) {
        const fsImg = join(hotplugDir, `${v.name}.img`);
        const block = join(hotplugDir, v.name);
        if (existsSync(fsImg)) ownedEntries.add(fsImg);
        else if (existsSync(block)) ownedEntries.add(block);
        else violations.push(`${where}/${v.name}: nothing in the launcher's hotplug folder`);
      }
    }
    for (const s of statuses) {
      const isHotplug = s.hotplugVolume !== undefined || s.persistentVolumeClaimInfo !== undefined;
      if (isHotplug && !inSpec.has(s.name)) {
        violations.push(`${where}/${s.name}: status entry (${s.phase}) for a volume not in spec`);
      }
    }
    for (const d of disks) {
      const volume = diskVolume(d);
      if (volume !== undefined && !inSpec.has(volume)) {
        violations.push(`${where}: domain disk ${d.disk.target} (${volume}) not in spec`);
      }
    }
    if (hotplugDir !== undefined && existsSync(hotplugDir)) {
      for (const entry of readdirSync(hotplugDir)) {
        const p = join(hotplugDir, entry);
        if (!ownedEntries.has(p)) violations.push(`${where}: ${entry} in the hotplug folder`);
      }
    }
  }

  // Attachment pods reference only volumes of their VMI's spec.
  for (const p of pods) {
    if (!(p.metadata?.name ?? '').startsWith(ATTACHMENT_POD_PREFIX)) continue;
    if (p.metadata?.deletionTimestamp !== undefined) continue;
    const ns = p.metadata?.namespace ?? '';
    const owner = p.metadata?.ownerReferences?.[0];
    const launcher = launcherByName.get(`${ns}/${owner?.name}`);
    const vmiUid = launcher?.metadata?.labels?.['kubevirt.io/created-by'] ?? '';
    const owned = ownedByVmi.get(vmiUid) ?? new Set<string>();
    const claims = (p.spec?.volumes ?? []).flatMap((v) =>
      v.persistentVolumeClaim ? [v.persistentVolumeClaim.claimName] : [],
    );
    if (claims.length === 0)
      violations.push(`${ns}/${p.metadata?.name}: attachment pod with no volume`);
    for (const c of claims) {
      if (!owned.has(c)) violations.push(`${ns}/${p.metadata?.name}: references ${c} not in spec`);
    }
  }

  // No mount under the kubelet root that no spec volume owns (kube-sim itself mounts nothing).
  for (const m of mountPoints(stack.kubeletRoot)) {
    if (!ownedEntries.has(m)) violations.push(`mount ${m} owned by no spec volume`);
  }
  // No loop device whose PV no running pod uses.
  const pvInUse = new Set<string>();
  for (const p of pods) {
    if (p.status?.phase !== 'Running' && p.status?.phase !== 'Pending') continue;
    for (const v of p.spec?.volumes ?? []) {
      if (v.persistentVolumeClaim)
        pvInUse.add(`${p.metadata?.namespace}/${v.persistentVolumeClaim.claimName}`);
    }
  }
  const pvcs = (await core.listPersistentVolumeClaimForAllNamespaces()).items;
  const claimOfPv = new Map(
    pvcs.map((c) => [c.spec?.volumeName ?? '', `${c.metadata?.namespace}/${c.metadata?.name}`]),
  );
  for (const loop of loopDevices(stack.dir)) {
    const pv = loop.backing.split('/').slice(-2, -1)[0] ?? '';
    const claim = claimOfPv.get(pv);
    if (claim === undefined || !pvInUse.has(claim)) {
      violations.push(`loop device ${loop.device} (${pv}) used by no pod`);
    } else if (!claimsInSpecs.has(claim)) {
      violations.push(`loop device ${loop.device} (${claim}) not in any spec`);
    }
  }

  if (options.natsMonitorUrl !== undefined) {
    violations.push(...(await workBacklog(options.natsMonitorUrl)));
  }
  return { violations, readyVolumes };
}

/** Polls {@link checkInvariants} until they hold; throws with the last violations otherwise. */
export async function waitForInvariants(
  stack: InvariantTarget,
  options: InvariantOptions & { timeoutMs?: number } = {},
): Promise<InvariantReport> {
  let last: InvariantReport = { violations: ['not checked'], readyVolumes: 0 };
  const holds = async (): Promise<InvariantReport | undefined> => {
    try {
      last = await checkInvariants(stack, options);
    } catch (err) {
      last = { violations: [`check failed: ${String(err)}`], readyVolumes: 0 };
    }
    return last.violations.length === 0 ? last : undefined;
  };
  try {
    return await waitFor(holds, {
      timeout: options.timeoutMs ?? 120_000,
      interval: 500,
      description: 'the invariants',
    });
  } catch (err) {
    if (!(err instanceof WaitTimeoutError)) throw err;
    throw new Error(`invariants do not hold:\n  ${last.violations.slice(0, 40).join('\n  ')}`, {
      cause: err,
    });
  }
}
