import { rmSync } from 'node:fs';

/**
 * Last-resort cleanup: whatever the testkit starts is registered here and killed/removed when the
 * test process exits, even when a test failed before its `await using` disposer ran.
 */
const pids = new Set<number>();
const dirs = new Set<string>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  process.once('exit', () => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** Tracks a pid (or, negative, a process group) to SIGKILL at exit. */
export function trackPid(pid: number): () => void {
  install();
  pids.add(pid);
  return () => pids.delete(pid);
}

export function trackDir(dir: string): () => void {
  install();
  dirs.add(dir);
  return () => dirs.delete(dir);
}
