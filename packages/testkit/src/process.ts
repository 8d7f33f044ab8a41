import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { trackPid } from './cleanup.js';
import { childEnv } from './config.js';
import { StartupError } from './errors.js';
import { waitFor } from './wait.js';

export interface SpawnServiceOptions {
  args?: readonly string[];
  cwd?: string;
  /** Extra environment, merged over the parent's (see {@link childEnv}). */
  env?: Readonly<Record<string, string>>;
  /** Resolve `spawnService` only once the output matches (default: right after spawn). */
  readyPattern?: RegExp;
  /** How long to wait for `readyPattern` (default 10 s). */
  readyTimeout?: number;
  /** Signal used by dispose/stop before escalating to SIGKILL (default SIGTERM). */
  stopSignal?: NodeJS.Signals;
  /** Grace period before SIGKILL on stop (default 5 s). */
  stopTimeout?: number;
}

/** A child process whose stdout+stderr are captured; killed on dispose. */
export interface ServiceProcess extends AsyncDisposable {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /** Polls the output until it matches; returns the match. */
  waitForOutput(pattern: RegExp, timeout?: number): Promise<RegExpMatchArray>;
  /** Resolves with the exit code (or signal) once the process exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends a signal to the process group (the command and its children) without waiting. */
  kill(signal?: NodeJS.Signals): void;
  /** Stops gracefully (stopSignal, then SIGKILL after stopTimeout) and waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Spawns a command as a child process, capturing its output, and registers it for cleanup so a
 * failing test never leaves it running. Dispose with `await using`.
 */
export async function spawnService(
  command: string,
  options: SpawnServiceOptions = {},
): Promise<ServiceProcess> {
  const child = spawn(command, options.args ?? [], {
    cwd: options.cwd,
    env: childEnv(options.env),
    stdio: ['ignore', 'pipe', 'pipe'],
    // its own process group, so a signal reaches wrappers' children too (tsx, sh -c, npx)
    detached: true,
  });
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  const spawnError = once(child, 'spawn').then(
    () => undefined,
    (err: unknown) => err,
  );
  const failed = await spawnError;
  if (failed !== undefined || child.pid === undefined) {
    throw new StartupError(`could not spawn ${command}`, { cause: failed });
  }
  const pid = child.pid;
  // SIGKILL goes to the whole process group, so a wrapper's child (tsx runs the script in one)
  // dies too. A graceful signal goes to the leader only: wrappers relay it, and sending it to the
  // group as well would deliver it to the real process twice.
  const signalGroup = (signal: NodeJS.Signals): void => {
    try {
      if (signal === 'SIGKILL') process.kill(-pid, signal);
      else child.kill(signal);
    } catch {
      child.kill(signal);
    }
  };
  const untrack = trackPid(-pid);
  void exited.then(untrack);

  const waitForOutput = async (pattern: RegExp, timeout = 10_000): Promise<RegExpMatchArray> =>
    waitFor(
      () => {
        const match = out.match(pattern);
        if (match) return match;
        if (exitInfo) {
          throw new StartupError(
            `${command} exited (${exitInfo.code ?? exitInfo.signal}) before printing ${pattern}:\n${out}`,
          );
        }
        return undefined;
      },
      { timeout, description: `${command} output ${pattern}` },
    );

  const stop = async (): Promise<void> => {
    if (exitInfo) return;
    signalGroup(options.stopSignal ?? 'SIGTERM');
    const timer = setTimeout(() => signalGroup('SIGKILL'), options.stopTimeout ?? 5000);
    await exited;
    clearTimeout(timer);
    signalGroup('SIGKILL'); // anything left in the group (a wrapper's orphaned child)
  };

  const service: ServiceProcess = {
    child,
    pid: child.pid,
    output: () => out,
    waitForOutput,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (!exitInfo) signalGroup(signal);
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
  if (options.readyPattern) {
    try {
      await waitForOutput(options.readyPattern, options.readyTimeout);
    } catch (err) {
      signalGroup('SIGKILL');
      throw err;
    }
  }
  return service;
}
