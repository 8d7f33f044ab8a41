/** Resource use of the stack's processes, from /proc (Linux). */
import { readFileSync } from 'node:fs';

const CLOCK_TICKS = 100;

/** Resident set size in MiB (VmRSS), or NaN when the process is gone. */
export function rssMiB(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return m === null ? Number.NaN : Number(m[1]) / 1024;
  } catch {
    return Number.NaN;
  }
}

/** User + system CPU seconds the process used so far, or NaN when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

export interface ProcRef {
  id: string;
  pid: number;
}

export function rssOf(procs: readonly ProcRef[]): Record<string, number> {
  return Object.fromEntries(procs.map((p) => [p.id, Math.round(rssMiB(p.pid) * 10) / 10]));
}

export function cpuOf(procs: readonly ProcRef[]): Record<string, number> {
  return Object.fromEntries(procs.map((p) => [p.id, cpuSeconds(p.pid)]));
}

/** Child processes of `pid` (direct), from /proc/<pid>/task/<pid>/children. */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}
