/** The machine a run was measured on. */
import { execFile } from 'node:child_process';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function output(command: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(command, args, { timeout: 10_000 });
    return (stdout || stderr).trim();
  } catch {
    return 'unknown';
  }
}

export async function machineInfo() {
  const cpu = cpus();
  return {
    cores: cpu.length,
    cpuModel: cpu[0]?.model ?? 'unknown',
    memoryMiB: Math.round(totalmem() / 2 ** 20),
    kernel: release(),
    node: process.version,
    natsServer: await output('/usr/sbin/nats-server', ['--version']),
    // `+changes` when the tree differs from the commit (tracked files), so a figure is not
    // taken for the commit's own.
    gitCommit: await output('git', ['describe', '--always', '--dirty=+changes', '--abbrev=7']),
    loadAverageAtStart: loadavg().map((l) => Math.round(l * 100) / 100),
    note: 'the 2 cores were shared with other jobs during the run (see loadAverageAtStart and speedProbe)',
  };
}
