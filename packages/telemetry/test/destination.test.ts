import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';

const FIXTURE = fileURLToPath(new URL('./fixtures/log-until-sigterm.ts', import.meta.url));

interface Run {
  child: ChildProcessWithoutNullStreams;
  lines: () => Record<string, unknown>[];
  exited: Promise<number | null>;
}

const runs: Run[] = [];

function run(count: number): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, String(count)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // Every line must be whole JSON: JSON.parse throws on a torn one.
  const lines = () =>
    out
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const r = { child, lines, exited };
  runs.push(r);
  return r;
}

afterEach(async () => {
  for (const r of runs.splice(0)) {
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    await r.exited;
  }
});

describe('the default (buffered) stdout destination', () => {
  it('delivers lines while the process runs, without waiting for a full buffer', async () => {
    const r = run(0);
    await vi.waitFor(() => expect(r.lines().map((l) => l.msg)).toEqual(['started']), {
      timeout: 60_000,
      interval: 50,
    });
    r.child.stdin.write('tick\n');
    await vi.waitFor(() => expect(r.lines().map((l) => l.msg)).toEqual(['started', 'tick']), {
      timeout: 10_000,
      interval: 20,
    });
    expect(r.child.exitCode).toBeNull();
  }, 90_000);

  it('writes every buffered line, whole and in order, when SIGTERM ends in process.exit', async () => {
    // More than one buffer's worth, so some batches were written on the way.
    const r = run(300);
    await vi.waitFor(() => expect(r.lines().at(-1)?.msg).toBe('started'), {
      timeout: 60_000,
      interval: 50,
    });
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
    // 'stopping' is logged in the same tick as process.exit: only the exit flush can write it.
    const lines = r.lines();
    expect(lines.map((l) => l.msg)).toEqual([
      ...Array<string>(300).fill('line'),
      'started',
      'stopping',
    ]);
    expect(lines.slice(0, 300).map((l) => l.i)).toEqual([...Array(300).keys()]);
  }, 90_000);
});
