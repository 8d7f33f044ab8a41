import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, type VirtualMachineInstance } from '@plugline/contracts';
import { startKubeSim, Types } from '@plugline/kube-sim';
import { placedVmi, spawnService, startNats, tempDir, waitFor } from '@plugline/testkit';
import { chooseTarget, findLauncher, parseConfig, TargetReservations } from '../src/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const env = {
  NATS_URL: 'nats://127.0.0.1:4999',
  KUBECONFIG: '/tmp/kubeconfig',
  NODE_NAME: 'node-a',
  KUBELET_ROOT: '/var/lib/kubelet',
  PLUGLINE_STATE_DIR: '/var/lib/plugline',
};

describe('parseConfig', () => {
  it('applies the defaults and derives the simulated state folder', () => {
    const c = parseConfig(env);
    expect(c).toMatchObject({
      natsUrls: ['nats://127.0.0.1:4999'],
      hypervisor: 'simulated',
      libvirtUri: 'qemu:///system',
      simStateDir: '/var/lib/plugline/simulated-hypervisor',
      simDetachDelayMs: 50,
      detachTimeoutMs: 60_000,
      diskSourceDir: 'host',
      concurrency: 32,
      healthPort: 0,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it.each([
    ['NODE_NAME', undefined],
    ['NATS_URL', ''],
    ['PLUGLINE_HYPERVISOR', 'kvm'],
    ['PLUGLINE_DETACH_TIMEOUT_MS', '1s'],
    ['PLUGLINE_DISK_SOURCE_DIR', 'guest'],
    ['KUBELET_ROOT', 'relative/path'],
  ])('names %s when it is wrong', (name, value) => {
    const bad: NodeJS.ProcessEnv = { ...env, [name]: value };
    if (value === undefined) delete bad[name];
    expect(() => parseConfig(bad)).toThrow(ConfigError);
    expect(() => parseConfig(bad)).toThrow(name);
  });
});

function vmi(status: { name: string; target: string }[]): VirtualMachineInstance {
  return {
    metadata: { name: 'vm', namespace: 'ns', uid: 'u' },
    spec: { domain: { devices: {} } },
    status: { volumeStatus: status },
  };
}
const disk = (target: string, alias: string) =>
  ({ target, alias }) as unknown as Parameters<typeof chooseTarget>[3][number];

describe('chooseTarget', () => {
  it('keeps a status target, skips live and reserved ones, and drops a status target a live disk took', () => {
    expect(chooseTarget(vmi([{ name: 'a', target: 'sdc' }]), 'a', 'scsi', [], [])).toBe('sdc');
    expect(chooseTarget(vmi([]), 'a', 'scsi', [disk('sda', 'ua-x')], ['sdb'])).toBe('sdc');
    expect(
      chooseTarget(vmi([{ name: 'a', target: 'sda' }]), 'a', 'scsi', [disk('sda', 'ua-x')], []),
    ).toBe('sdb');
    expect(chooseTarget(vmi([{ name: 'b', target: 'vda' }]), 'a', 'virtio', [], [])).toBe('vdb');
  });

  it('reservations expire and never block their own volume', () => {
    const r = new TargetReservations(100);
    r.reserve('d', 'a', 'sda', 1000);
    expect(r.heldByOthers('d', 'a', 1050)).toEqual([]);
    expect(r.heldByOthers('d', 'b', 1050)).toEqual(['sda']);
    expect(r.heldByOthers('d', 'b', 1100)).toEqual([]);
  });

  it('finds the running launcher of the VMI on this node only', () => {
    const pod = (uid: string, node: string, phase: string, createdBy = 'vmi-1') => ({
      metadata: {
        uid,
        labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': createdBy },
      },
      spec: { nodeName: node },
      status: { phase },
    });
    const pods = [
      pod('p0', 'node-b', 'Running'),
      pod('p1', 'node-a', 'Pending'),
      pod('p2', 'node-a', 'Running'),
      pod('p3', 'node-a', 'Running', 'vmi-2'),
    ];
    expect(findLauncher(pods, 'vmi-1', 'node-a')?.metadata?.uid).toBe('p2');
    expect(findLauncher(pods, 'vmi-9', 'node-a')).toBeUndefined();
  });
});

describe('main.ts as a process', () => {
  it("starts, logs one ready line with the health URL, answers /readyz, is sent only its own node's VMIs, and exits 0 on SIGTERM", async () => {
    await using nats = await startNats();
    await using sim = await startKubeSim({ nodes: ['node-a'], kubelet: false });
    await using dir = await tempDir('du-main-');
    // One process (`node --import tsx`), so SIGTERM reaches main.ts itself.
    await using proc = await spawnService(process.execPath, {
      args: ['--import', 'tsx', join(root, 'services/domain-updater/src/main.ts')],
      cwd: root,
      env: {
        NATS_URL: nats.url,
        KUBECONFIG: sim.kubeconfigPath,
        NODE_NAME: 'node-a',
        KUBELET_ROOT: sim.kubeletRoot,
        PLUGLINE_STATE_DIR: dir.path,
        PLUGLINE_SIM_STATE_DIR: dir.join(`hv-${randomBytes(3).toString('hex')}`),
      },
      readyPattern: /"msg":"ready"/,
      readyTimeout: 30_000,
    });
    const line = proc
      .output()
      .split('\n')
      .find((l) => l.includes('"msg":"ready"'));
    const { healthUrl } = JSON.parse(line!) as { healthUrl: string };
    expect(healthUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const ready = await fetch(`${healthUrl}/readyz`);
    expect(ready.status).toBe(200);

    // It watches only this node's VMIs, as virt-handler does: the API server sends it none of
    // another node's (counted as the store hands an event to a connection). The last VMI is its
    // own, so once that has been sent (a watch that started late replays the rest in order),
    // nothing else was.
    const sent = () => sim.watchEventsSent('VirtualMachineInstance');
    const before = sent();
    for (const [name, node] of [
      ['elsewhere-1', 'node-b'],
      ['elsewhere-2', 'node-b'],
      ['here', 'node-a'],
    ] as const) {
      sim.store.create(Types.virtualmachineinstances, placedVmi(name, node), {
        namespace: 'default',
      });
    }
    await waitFor(() => sent() - before >= 1);
    expect(sent() - before).toBe(1);
    proc.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
  }, 60_000);
});
