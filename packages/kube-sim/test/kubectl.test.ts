/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access -- assertions read API JSON loosely */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Types, startKubeSim } from '../src/index.js';
import type { KubeSim } from '../src/index.js';
import { rand } from './helpers.js';

function findKubectl(): string | undefined {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return 'kubectl';
  } catch {
    return undefined;
  }
}

const kubectl = findKubectl();
if (!kubectl) console.warn('kubectl conformance skipped: no kubectl binary on PATH');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

type Obj = Record<string, any>;

describe.skipIf(!kubectl)('kubectl against kube-sim', () => {
  let sim: KubeSim;
  const ns = rand('kubectl');

  beforeAll(async () => {
    sim = await startKubeSim({ podStartLatencyMs: 10, namespaces: [ns] });
  });

  afterAll(async () => {
    await sim?.stop();
  });

  // The server runs in this process: kubectl must run asynchronously.
  function k(args: string[], input?: string): Promise<Result> {
    return new Promise((resolve) => {
      const child = execFile(
        kubectl!,
        ['--kubeconfig', sim.kubeconfigPath, '-n', ns, ...args],
        { encoding: 'utf8', timeout: 20_000 },
        (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      );
      if (input !== undefined) child.stdin!.end(input);
    });
  }

  const podYaml = (label: string) => `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: ${label}}
spec:
  containers:
  - name: main
    image: busybox
`;

  const vmiYaml = `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: vm1
spec:
  domain:
    devices:
      disks:
      - name: containerdisk
        disk: {bus: virtio}
    resources:
      requests: {memory: 128Mi}
  volumes:
  - name: containerdisk
    containerDisk: {image: quay.io/kubevirt/cirros-container-disk-demo}
`;

  it('applies (create, then configure), gets a table, and describes with events', async () => {
    const created = await k(['apply', '-f', '-'], podYaml('one'));
    expect(created.stderr).toBe('');
    expect(created.stdout.trim()).toBe('pod/web created');
    const configured = await k(['apply', '-f', '-'], podYaml('two'));
    expect(configured.stdout.trim()).toBe('pod/web configured');
    const pod = sim.store.get(Types.pods, ns, 'web');
    expect(pod.metadata?.labels).toEqual({ app: 'web', tier: 'two' });
    expect(
      pod.metadata?.annotations?.['kubectl.kubernetes.io/last-applied-configuration'],
    ).toContain('"two"');
    expect((await k(['apply', '-f', '-'], podYaml('two'))).stdout.trim()).toBe('pod/web unchanged');

    await vi.waitFor(
      async () => {
        const get = await k(['get', 'pods', '-o', 'wide']);
        const [header, row] = get.stdout.trim().split('\n');
        expect(header).toMatch(/^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE/);
        expect(row).toMatch(/^web\s+1\/1\s+Running\s+0\s+\S+\s+10\.244\.\S+\s+node-1/);
      },
      { timeout: 10_000, interval: 100 },
    );

    const described = await k(['describe', 'pod', 'web']);
    expect(described.code).toBe(0);
    expect(described.stdout).toMatch(/Status:\s+Running/);
    expect(described.stdout).toMatch(/Events:[\s\S]*Scheduled[\s\S]*default-scheduler/);

    const applyVmi = await k(['apply', '-f', '-'], vmiYaml);
    expect(applyVmi.stdout.trim()).toBe('virtualmachineinstance.kubevirt.io/vm1 created');
    const vmiJson = JSON.parse((await k(['get', 'vmi', 'vm1', '-o', 'json'])).stdout) as Obj;
    expect(vmiJson.spec.domain.resources.requests.memory).toBe('128Mi');
    const again = await k(['apply', '-f', '-'], vmiYaml.replace('128Mi', '256Mi'));
    expect(again.stdout.trim()).toBe('virtualmachineinstance.kubevirt.io/vm1 configured');
    const invalid = await k(
      ['apply', '-f', '-'],
      vmiYaml.replace('name: vm1', 'name: vm2').replace('bus: virtio', 'bus: 7'),
    );
    expect(invalid.code).not.toBe(0);
    expect(invalid.stderr).toContain('is invalid');
  }, 60_000);

  it('patches with --type json (a failing test is refused) and merge', async () => {
    await k(['apply', '-f', '-'], vmiYaml.replace('name: vm1', 'name: vm3'));
    const ok = await k([
      'patch',
      'vmi',
      'vm3',
      '--type',
      'json',
      '-p',
      '[{"op":"add","path":"/metadata/labels","value":{"stage":"a"}}]',
    ]);
    expect(ok.stdout.trim()).toBe('virtualmachineinstance.kubevirt.io/vm3 patched');
    const refused = await k([
      'patch',
      'vmi',
      'vm3',
      '--type',
      'json',
      '-p',
      '[{"op":"test","path":"/metadata/labels/stage","value":"b"}]',
    ]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('test operation does not apply');
    const merged = await k([
      'patch',
      'vmi',
      'vm3',
      '--type',
      'merge',
      '-p',
      '{"metadata":{"labels":{"stage":"c"}}}',
    ]);
    expect(merged.code).toBe(0);
    expect(sim.store.get(Types.virtualmachineinstances, ns, 'vm3').metadata?.labels).toEqual({
      stage: 'c',
    });
  }, 30_000);

  it('watches with get -w and sees changes, then deletes', async () => {
    await k(['apply', '-f', '-'], vmiYaml.replace('name: vm1', 'name: watched'));
    const child = spawn(
      kubectl!,
      [
        '--kubeconfig',
        sim.kubeconfigPath,
        '-n',
        ns,
        'get',
        'vmi',
        'watched',
        '-w',
        '--output-watch-events',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await vi.waitFor(() => expect(out).toMatch(/ADDED\s+watched/), {
        timeout: 10_000,
        interval: 50,
      });
      const vmi = structuredClone(sim.store.get(Types.virtualmachineinstances, ns, 'watched'));
      vmi.status = { phase: 'Running', nodeName: 'node-1' };
      sim.store.update(Types.virtualmachineinstances, 'watched', vmi, {
        namespace: ns,
        subresource: 'status',
      });
      await vi.waitFor(() => expect(out).toMatch(/MODIFIED\s+watched\s+\S+\s+Running/), {
        timeout: 10_000,
        interval: 50,
      });
      const deleted = await k(['delete', 'vmi', 'watched']);
      expect(deleted.stdout.trim()).toBe('virtualmachineinstance.kubevirt.io "watched" deleted');
      await vi.waitFor(() => expect(out).toMatch(/DELETED\s+watched/), {
        timeout: 10_000,
        interval: 50,
      });
    } finally {
      child.kill();
    }
    const gone = await k(['get', 'vmi', 'watched']);
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toContain('NotFound');
  }, 60_000);

  it('deletes a running pod gracefully: kubectl waits until the kubelet has finished it', async () => {
    await k(['apply', '-f', '-'], podYaml('x').replace('name: web', 'name: doomed'));
    await vi.waitFor(
      () => expect((sim.store.peek(Types.pods, ns, 'doomed')?.status as Obj).phase).toBe('Running'),
      {
        timeout: 10_000,
        interval: 20,
      },
    );
    const deleted = await k(['delete', 'pod', 'doomed']);
    expect(deleted.stdout.trim()).toBe('pod "doomed" deleted');
    expect(sim.store.peek(Types.pods, ns, 'doomed')).toBeUndefined();
  }, 30_000);
});
