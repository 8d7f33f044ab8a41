/**
 * `plugctl up` as a user stops it: one Ctrl-C stops the whole stack and leaves nothing behind, also
 * when the interruption reaches both of its processes at once (it re-runs itself in a private mount
 * namespace, and a process manager or `pkill` signals every process). Real processes: NATS,
 * kube-sim and the four services.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childEnv, waitFor } from '@plugline/testkit';
import { afterEach, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../bin/plugctl.mjs', import.meta.url));
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

interface Up {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  /** Where the stack's own temporary folders go (its TMPDIR). */
  tmp: string;
  dir: string;
}

/** What a test leaves to be removed whatever its outcome: folders, and processes to kill. */
const leftovers: { paths: string[]; processes: number[] }[] = [];

afterEach(async () => {
  for (const { paths, processes } of leftovers.splice(0)) {
    for (const pid of processes.filter(alive)) process.kill(pid, 'SIGKILL');
    for (const path of paths) await rm(path, { recursive: true, force: true });
  }
});

async function startUp(): Promise<Up> {
  const tmp = await mkdtemp(join(tmpdir(), 'plugctl-up-tmp-'));
  const dir = await mkdtemp(join(tmpdir(), 'plugctl-up-state-'));
  const left = { paths: [tmp, dir], processes: [] as number[] };
  leftovers.push(left);
  const proc = spawn(process.execPath, [BIN, 'up', '--dir', dir, '--no-demo'], {
    // Not inside the test run's private mount namespace: `up` makes its own, as it does for a user.
    env: childEnv({ PLUGLINE_PRIVATE_MOUNTS: '', TMPDIR: tmp }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  proc.stdout?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  proc.stderr?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const exited = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => resolve(code)),
  );
  left.processes.push(proc.pid!);
  // The description is made once, before any output: on a timeout, say what `up` printed by then.
  await waitFor(() => text.includes('Ctrl-C stops everything'), {
    timeout: 120_000,
    interval: 100,
    description: 'plugctl up ready',
  }).catch((err: unknown) => {
    throw new Error(`plugctl up was not ready; its output:\n${text.slice(-2000)}`, { cause: err });
  });
  left.processes.push(...(await descendants(proc.pid!)));
  return { proc, output: () => text, exited, tmp, dir };
}

/** Every process below `pid`, from /proc. */
async function descendants(pid: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (Number.isFinite(ppid)) parents.set(Number(name), ppid);
  }
  const found: number[] = [];
  const walk = (parent: number): void => {
    for (const [child, ppid] of parents) {
      if (ppid === parent) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function expectStoppedCleanly(up: Up, processes: number[]): Promise<void> {
  await up.exited;
  expect(up.output()).toContain('Stopped: every process, mount and loop device is gone.');
  await waitFor(() => processes.every((pid) => !alive(pid)), {
    timeout: 10_000,
    description: 'every process of the stack gone',
  });
  // tsx keeps its compile cache there (tsx-<uid>): not the stack's.
  expect((await readdir(up.tmp)).filter((name) => !name.startsWith('tsx-'))).toEqual([]);
}

// Root only: `up` re-runs itself in a private mount namespace only as root (the two processes
// the second case signals), and node-mounter's mounts need it. CI runs as root.
describe.runIf(isRoot)('plugctl up, stopped', () => {
  it('stops the whole stack on one Ctrl-C', async () => {
    const up = await startUp();
    const processes = await descendants(up.proc.pid!);
    expect(processes.length).toBeGreaterThanOrEqual(7); // re-exec, NATS, kube-sim, four services
    up.proc.kill('SIGINT');
    await expectStoppedCleanly(up, processes);
  }, 180_000);

  it('stops cleanly when the interruption reaches both of its processes at once', async () => {
    const up = await startUp();
    const processes = await descendants(up.proc.pid!);
    const commands = await Promise.all(
      processes.map(async (pid) => await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')),
    );
    // the re-exec inside its private mount namespace (`unshare` execs node: the same pid)
    const inner = processes.find((_, i) => commands[i]?.includes('plugctl.mjs') === true);
    expect(inner).toBeDefined();
    // As systemd or `pkill plugctl` does: each process gets its own signal.
    up.proc.kill('SIGTERM');
    process.kill(inner!, 'SIGTERM');
    await expectStoppedCleanly(up, processes);
  }, 180_000);
});
