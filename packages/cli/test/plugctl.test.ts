/**
 * plugctl as a user runs it: a real process (bin/plugctl.mjs), its output and exit codes,
 * against kube-sim. Every KubeVirt rejection is checked word for word. (`--wait` is covered by
 * the chain tests in test/chain, which run the services.)
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import type { VirtualMachineInstance } from '@plugline/contracts';
import { startKubeSim, type KubeSim } from '@plugline/kube-sim';
import { KubeClient } from '@plugline/kube';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataVolume, createPvc, createRunningVmi, ensureNamespace } from '../src/index.js';

const BIN = fileURLToPath(new URL('../bin/plugctl.mjs', import.meta.url));
const NS = 'plugctl-user-namespace-with-a-long-name';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let sim: KubeSim;
let kc: KubeConfig;
let client: KubeClient;

function plugctl(...args: string[]): Promise<Result> {
  return plugctlWith({}, ...args);
}

function plugctlWith(env: NodeJS.ProcessEnv, ...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: {
          ...process.env,
          KUBECONFIG: sim.kubeconfigPath,
          NATS_URL: 'nats://127.0.0.1:1',
          ...env,
        },
        timeout: 30_000,
      },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const vmiOf = (name: string): Promise<VirtualMachineInstance> => client.getVmi(NS, name);

beforeAll(async () => {
  sim = await startKubeSim({ nodes: ['node-a'], podStartLatencyMs: 5 });
  const { KubeConfig: Kc } = await import('@kubernetes/client-node');
  kc = new Kc();
  kc.loadFromFile(sim.kubeconfigPath);
  client = new KubeClient({ kc, fieldManager: 'test' });
  await ensureNamespace(kc, NS);
  await createRunningVmi(kc, { namespace: NS, name: 'vm-running', node: 'node-a' });
  await createPvc(kc, { namespace: NS, name: 'claim-fs', mode: 'Filesystem' });
  await createPvc(kc, { namespace: NS, name: 'claim-block', mode: 'Block' });
  await createDataVolume(kc, { namespace: NS, name: 'dv-one', importMs: 50 });
  // A VMI that is not running (status.phase Scheduling), and a VM with its template.
  const custom = kc.makeApiClient(CustomObjectsApi);
  await custom.createNamespacedCustomObject({
    group: 'kubevirt.io',
    version: 'v1',
    plural: 'virtualmachineinstances',
    namespace: NS,
    body: {
      apiVersion: 'kubevirt.io/v1',
      kind: 'VirtualMachineInstance',
      metadata: { name: 'vm-stopped', namespace: NS },
      spec: { domain: { devices: {} } },
    },
  });
  await custom.createNamespacedCustomObject({
    group: 'kubevirt.io',
    version: 'v1',
    plural: 'virtualmachines',
    namespace: NS,
    body: {
      apiVersion: 'kubevirt.io/v1',
      kind: 'VirtualMachine',
      metadata: { name: 'vm-with-template', namespace: NS },
      spec: {
        runStrategy: 'Always',
        template: {
          spec: {
            domain: { devices: { disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }] } },
            volumes: [
              { name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/alpine:3.20' } },
            ],
          },
        },
      },
    },
  });
}, 60_000);

afterAll(async () => {
  await sim?.stop();
});

describe('plugctl addvolume / removevolume (a real process)', () => {
  it('adds a PVC to a running VMI as a hotpluggable volume with its disk, and says so as virtctl does', async () => {
    const r = await plugctl(
      'addvolume',
      'vm-running',
      '--volume-name=claim-fs',
      '--serial=SER-1',
      '--cache=writethrough',
      '-n',
      NS,
    );
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toBe(
      'Successfully submitted add volume request to VM vm-running for volume claim-fs\n',
    );
    const vmi = await vmiOf('vm-running');
    expect(vmi.spec.volumes).toContainEqual({
      name: 'claim-fs',
      persistentVolumeClaim: { claimName: 'claim-fs', hotpluggable: true },
    });
    expect(vmi.spec.domain.devices.disks).toContainEqual({
      name: 'claim-fs',
      disk: { bus: 'scsi' },
      serial: 'SER-1',
      cache: 'writethrough',
    });
  }, 30_000);

  it('names a DataVolume as a dataVolume source (DataVolume first), with --disk-name, virtio and lun', async () => {
    const dv = await plugctl(
      'addvolume',
      'vm-running',
      '--volume-name=dv-one',
      '--disk-name=data-disk',
      '--bus=virtio',
      '-n',
      NS,
    );
    expect(dv.code).toBe(0);
    const lun = await plugctl(
      'addvolume',
      'vm-running',
      '--volume-name=claim-block',
      '--disk-type=lun',
      '-n',
      NS,
    );
    expect(lun.code).toBe(0);
    const vmi = await vmiOf('vm-running');
    expect(vmi.spec.volumes).toContainEqual({
      name: 'data-disk',
      dataVolume: { name: 'dv-one', hotpluggable: true },
    });
    expect(vmi.spec.domain.devices.disks).toContainEqual({
      name: 'data-disk',
      disk: { bus: 'virtio' },
      serial: 'data-disk',
    });
    expect(vmi.spec.domain.devices.disks).toContainEqual({
      name: 'claim-block',
      lun: { bus: 'scsi' },
      serial: 'claim-block',
    });
  }, 30_000);

  it('--dry-run validates and changes nothing', async () => {
    const before = await vmiOf('vm-running');
    const r = await plugctl(
      'addvolume',
      'vm-running',
      '--volume-name=claim-fs',
      '--disk-name=dry',
      '--dry-run',
      '-n',
      NS,
    );
    // claim-fs is already used by volume claim-fs: even a dry run is rejected as KubeVirt does
    expect(r.code).toBe(1);
    const ok = await plugctl(
      'removevolume',
      'vm-running',
      '--volume-name=claim-fs',
      '--dry-run',
      '-n',
      NS,
    );
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(
      /^Dry run: the request to remove volume claim-fs from VirtualMachineInstance vm-running is valid; nothing was changed\./,
    );
    const after = await vmiOf('vm-running');
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
    expect(after.spec).toEqual(before.spec);
  }, 30_000);

  it.each([
    [
      'a volume name in use',
      ['addvolume', 'vm-running', '--volume-name=claim-fs'],
      'error adding volume, Unable to add volume [claim-fs] because volume with that name already exists',
    ],
    [
      'a source in use under another name',
      ['addvolume', 'vm-running', '--volume-name=claim-fs', '--disk-name=other'],
      'error adding volume, Unable to add volume source [claim-fs] because it already exists',
    ],
    [
      'removing a volume that does not exist',
      ['removevolume', 'vm-running', '--volume-name=nothing-here'],
      'error removing volume, Unable to remove volume [nothing-here] because it does not exist',
    ],
    [
      'removing a permanent volume',
      ['removevolume', 'vm-running', '--volume-name=rootdisk'],
      'error removing volume, Unable to remove volume [rootdisk] because it is not hotpluggable',
    ],
    [
      'a VMI that is not running',
      ['addvolume', 'vm-stopped', '--volume-name=claim-block', '--disk-name=x'],
      'error adding volume, VMI is not running',
    ],
    [
      'a source that is neither a DataVolume nor a PVC',
      ['addvolume', 'vm-running', '--volume-name=no-such-claim'],
      'error adding volume, Volume no-such-claim is not a DataVolume or PersistentVolumeClaim',
    ],
    [
      'a LUN on the virtio bus',
      [
        'addvolume',
        'vm-running',
        '--volume-name=claim-block',
        '--disk-name=l2',
        '--disk-type=lun',
        '--bus=virtio',
      ],
      "error adding volume, Invalid bus 'virtio' for disk type 'lun'. Supported: scsi.",
    ],
    [
      'a cache mode virtctl does not accept',
      [
        'addvolume',
        'vm-running',
        '--volume-name=claim-block',
        '--disk-name=c2',
        '--cache=directsync',
      ],
      'error adding volume, invalid cache value directsync',
    ],
    [
      'a serial with a character KubeVirt refuses',
      ['addvolume', 'vm-running', '--volume-name=claim-block', '--disk-name=s2', '--serial=a b'],
      'error adding volume, disk must be made up of the following characters [A-Za-z0-9_.+-], if specified',
    ],
    [
      'a VMI that does not exist',
      ['addvolume', 'no-such-vm', '--volume-name=claim-fs'],
      'error adding volume, virtualmachineinstances.kubevirt.io "no-such-vm" not found',
    ],
    [
      'a missing --volume-name',
      ['removevolume', 'vm-running'],
      'required flag(s) "volume-name" not set',
    ],
  ])(
    'rejects %s with KubeVirt words and exit code 1',
    async (_what, args, message) => {
      const r = await plugctl(...args, '-n', NS);
      expect(r.stderr).toBe(`${message}\n`);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
    },
    30_000,
  );

  it('writes to the VM template when the VMI has a VM, and accepts --persist with a warning', async () => {
    const r = await plugctl(
      'addvolume',
      'vm-with-template',
      '--volume-name=claim-block',
      '--persist',
      '-n',
      NS,
    );
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/--persist has been deprecated/);
    const vm = await client.getVm(NS, 'vm-with-template');
    expect(vm.spec.template.spec.volumes).toContainEqual({
      name: 'claim-block',
      persistentVolumeClaim: { claimName: 'claim-block', hotpluggable: true },
    });
  }, 30_000);

  it('removes a hotplugged volume, and works as the kubectl plugin (same binary, kubectl-plugline)', async () => {
    const r = await plugctl('removevolume', 'vm-running', '--volume-name=data-disk', '-n', NS);
    expect(r.stdout).toBe(
      'Successfully submitted remove volume request to VM vm-running for volume data-disk\n',
    );
    expect(r.code).toBe(0);
    const vmi = await vmiOf('vm-running');
    expect(vmi.spec.volumes?.map((v) => v.name)).not.toContain('data-disk');
    expect(vmi.spec.domain.devices.disks?.map((d) => d.name)).not.toContain('data-disk');
  }, 30_000);
});

describe('plugctl status', () => {
  it('lists the volumes, as a table and as JSON', async () => {
    const table = await plugctl('status', 'vm-running', '-n', NS);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^VOLUME\s+PHASE\s+TARGET\s+NODE\s+POD\s+AGE$/);
    expect(lines.find((l) => l.startsWith('rootdisk'))).toMatch(
      /^rootdisk\s+<none>\s+vda\s+node-a\s+<none>\s+<unknown>$/,
    );
    expect(lines.find((l) => l.startsWith('claim-fs'))).toMatch(
      /^claim-fs\s+<none>\s+<none>\s+node-a/,
    );
    const json = await plugctl('status', 'vm-running', '-n', NS, '-o', 'json');
    const doc = JSON.parse(json.stdout) as {
      node: string;
      volumes: { name: string; hotpluggable: boolean }[];
    };
    expect(doc.node).toBe('node-a');
    expect(doc.volumes.find((v) => v.name === 'claim-fs')?.hotpluggable).toBe(true);
    const missing = await plugctl('status', 'nope', '-n', NS);
    expect(missing).toMatchObject({
      code: 1,
      stderr: 'virtualmachineinstances.kubevirt.io "nope" not found\n',
    });
  }, 30_000);

  it('answers the same from the sources as from its bundle (dist/plugctl, when built)', async () => {
    const args = ['status', 'vm-running', '-n', NS, '-o', 'json'];
    const bundled = await plugctl(...args);
    const fromSource = await plugctlWith({ PLUGLINE_CLI_FROM_SOURCE: '1' }, ...args);
    expect(bundled.code, bundled.stderr).toBe(0);
    expect(fromSource).toEqual(bundled);
  }, 30_000);

  it('fails clearly when NATS is unreachable for events', async () => {
    const r = await plugctl('events', '-n', NS);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
  }, 30_000);
});
