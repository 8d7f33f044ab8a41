/** Shared fixtures of the chain tests: a stack per file, plugctl in-process and as a process. */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, type CoreV1Event } from '@kubernetes/client-node';
import type { VolumeStatus } from '@plugline/contracts';
import { run, startStack, type Stack, type StackOptions } from '@plugline/cli';
import { KubeClient } from '@plugline/kube';
import { tempDir, type TempDir } from '@plugline/testkit';
import { afterAll, beforeAll, expect } from 'vitest';

export const PLUGCTL_BIN = fileURLToPath(
  new URL('../../packages/cli/bin/plugctl.mjs', import.meta.url),
);

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * True inside a private mount namespace (scripts/with-private-mounts): ours differs from init's,
 * or (where init's cannot be read from inside a new namespace) the wrapper says it made one.
 */
export function inPrivateMountNamespace(): boolean {
  const own = readlinkSync('/proc/self/ns/mnt');
  try {
    return own !== readlinkSync('/proc/1/ns/mnt');
  } catch {
    return process.env.PLUGLINE_PRIVATE_MOUNTS === '1';
  }
}

export interface ChainFixture {
  stack: Stack;
  dir: TempDir;
  client: KubeClient;
  stop(): Promise<void>;
}

/** A stack in a temp dir; refuses to run outside a private mount namespace (mounts must vanish). */
export async function startChain(options: Partial<StackOptions> = {}): Promise<ChainFixture> {
  if (!inPrivateMountNamespace()) {
    throw new Error(
      'chain tests bind-mount volumes: run them through scripts/with-private-mounts ' +
        '(pnpm test does), never in the host mount namespace',
    );
  }
  const dir = await tempDir('plugline-chain-');
  let stack: Stack;
  try {
    stack = await startStack({ dir: dir.path, demo: false, readyTimeoutMs: 90_000, ...options });
  } catch (err) {
    await dir.remove();
    throw err;
  }
  const client = new KubeClient({ kc: stack.kc, fieldManager: 'chain-test' });
  return {
    stack,
    dir,
    client,
    stop: async () => {
      await stack.stop();
      await dir.remove();
    },
  };
}

/**
 * The file's stack: started before its tests, stopped after them, and then checked to have left
 * no loop device and no mount under its folder. Its `stack` and `client` are read in tests.
 */
export function useChain(
  options: Partial<StackOptions> = {},
): Pick<ChainFixture, 'stack' | 'client'> {
  let started: ChainFixture | undefined;
  beforeAll(async () => {
    started = await startChain(options);
  }, 180_000);
  afterAll(async () => {
    if (started === undefined) return;
    const dir = started.stack.dir;
    await started.stop();
    expect(loopDevicesUnder(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
  }, 60_000);
  const current = (): ChainFixture => {
    if (started === undefined) throw new Error('the chain starts before the tests: use it in one');
    return started;
  };
  return {
    get stack() {
      return current().stack;
    },
    get client() {
      return current().client;
    },
  };
}

/** Loop devices whose backing file is under `dir` (none may be left after a stop). */
export function loopDevicesUnder(dir: string): string[] {
  const out = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(dir));
}

/** Mount points under `dir` in this mount namespace. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(dir));
}

export interface Captured {
  code: number;
  out: string;
  err: string;
}

/** plugctl in-process (same code path as the binary, without a process start-up). */
export async function plugctlIn(stack: Stack, ...args: string[]): Promise<Captured> {
  let out = '';
  let err = '';
  const code = await run(args, {
    out: (t) => (out += t),
    err: (t) => (err += t),
    env: { ...stack.clientEnv(), HOME: '/nonexistent' },
  });
  return { code, out, err };
}

/** plugctl as a user runs it: a real process. */
export function plugctlProcess(stack: Stack, ...args: string[]): Promise<Captured> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [PLUGCTL_BIN, ...args],
      { env: { ...process.env, ...stack.clientEnv() }, timeout: 120_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, out: stdout, err: stderr });
      },
    );
  });
}

export async function volumeStatus(
  client: KubeClient,
  namespace: string,
  vmi: string,
  volume: string,
): Promise<VolumeStatus | undefined> {
  const v = await client.getVmi(namespace, vmi);
  return v.status?.volumeStatus?.find((s) => s.name === volume);
}

/** The Kubernetes Events recorded on an object, oldest first. */
export async function kubeEvents(
  stack: Stack,
  namespace: string,
  name: string,
): Promise<CoreV1Event[]> {
  const core = stack.kc.makeApiClient(CoreV1Api);
  const list = await core.listNamespacedEvent({
    namespace,
    fieldSelector: `involvedObject.name=${name}`,
  });
  return list.items;
}

/** `<kubeletRoot>/pods/<launcherUID>/volumes/kubernetes.io~empty-dir/hotplug-disks` */
export function hotplugDir(stack: Stack, launcherUid: string): string {
  return `${stack.kubeletRoot}/pods/${launcherUid}/volumes/kubernetes.io~empty-dir/hotplug-disks`;
}
