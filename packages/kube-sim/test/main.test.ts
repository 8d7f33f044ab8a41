import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const pkgDir = fileURLToPath(new URL('..', import.meta.url));

it('runs as its own process: prints url and kubeconfig, serves, and stops cleanly on SIGTERM', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', '--nodes', 'n1,n2'], {
    cwd: pkgDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const first = await new Promise<string>((resolve, reject) => {
      createInterface(child.stdout).once('line', resolve);
      child.once('exit', () => reject(new Error('kube-sim exited before it was ready')));
    });
    const ready = JSON.parse(first) as { url: string; kubeconfig: string; kubeletRoot: string };
    expect(ready.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(readFileSync(ready.kubeconfig, 'utf8')).toContain(ready.url);
    const nodes = (await (await fetch(`${ready.url}/api/v1/nodes`)).json()) as {
      items: { metadata: { name: string } }[];
    };
    expect(nodes.items.map((n) => n.metadata.name)).toEqual(['n1', 'n2']);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(ready.kubeconfig)).toBe(false);
  } finally {
    child.kill('SIGKILL');
  }
}, 30_000);
