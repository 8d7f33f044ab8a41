import { execFile } from 'node:child_process';
import { GuestHarnessError } from './errors.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; a failure is a GuestHarnessError carrying its stderr. */
export function exec(
  command: string,
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024, env: options.env },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ stdout, stderr });
          return;
        }
        const detail = stderr.trim() || error.message;
        reject(
          new GuestHarnessError(`${command} ${args.join(' ')} failed: ${detail}`, {
            cause: error,
          }),
        );
      },
    );
  });
}
