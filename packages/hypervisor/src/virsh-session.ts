import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { HypervisorError } from '@plugline/contracts';
import { HypervisorReason, abortedError, classifyLibvirtError } from './driver.js';

export interface VirshResult {
  stdout: string;
  stderr: string;
}

export interface VirshCallOptions {
  signal?: AbortSignal;
  timeoutMs: number;
}

/** The text of virsh's error lines, the cause first ("Failed to attach device" is only framing). */
export function errorText(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  // virsh prints "error: Failed to attach device from X" and then the cause on its own line.
  const causes = lines.filter((l) => !/^error: Failed to (attach|detach) device/.test(l));
  return (causes.length > 0 ? causes : lines).map((l) => l.replace(/^error: /, '')).join('; ');
}

/**
 * What virsh's shell prints on stderr about its connection, not about the command: it reconnects
 * by itself before the next command after libvirtd went away, and says so with an "error:" line.
 */
const CONNECTION_NOTICE = /^error: (Reconnected to the hypervisor|Disconnected from .*)$/;

/** virsh's shell prompt (`virsh # `; `virsh > ` on a read-only connection). */
const PROMPT = /virsh [#>] /g;

/**
 * Quotes one argument for virsh's own command-line parser (double quotes; `\` escapes `"` and
 * `\`). A line break cannot be passed: the shell reads one command per line.
 */
export function quoteVirshArg(arg: string): string {
  if (/[\r\n]/.test(arg)) {
    throw new HypervisorError(
      HypervisorReason.Failed,
      `a virsh argument cannot contain a line break: ${JSON.stringify(arg)}`,
    );
  }
  return `"${arg.replace(/[\\"]/g, '\\$&')}"`;
}

/**
 * The command's own output from what the shell printed up to our marker: after the prompt (and
 * readline's echo of the command line), before the prompt of the marker's `echo`.
 */
function commandOutput(printed: string, line: string): string {
  const prompts = [...printed.matchAll(PROMPT)].map((m) => m.index);
  if (prompts.length < 2) return printed;
  const start = prompts.at(-2)! + 'virsh # '.length;
  const out = printed.slice(start, prompts.at(-1));
  return out.startsWith(`${line}\n`) ? out.slice(line.length + 1) : out;
}

interface Pending {
  line: string;
  token: string;
  command: string;
  stdout?: string;
  stderr?: string;
  settle: (error: HypervisorError | undefined, result?: VirshResult) => void;
}

/**
 * One long-lived `virsh -q -c <uri>` shell: commands go to its stdin one at a time, so a call
 * costs a round trip to libvirtd instead of a process start and a new connection. After each
 * command the shell runs `echo` to stdout and `echo --err` to stderr with a marker unique to the
 * call; what came before the markers is the command's output. virsh's shell has no exit status:
 * a command failed when it printed an `error:` line (it always does; a connection notice aside),
 * and that text is classified as a one-shot virsh's would be. A timeout or an abort kills the
 * session (the caller starts another), as killing a one-shot virsh would.
 */
export class VirshSession {
  readonly #child: ChildProcess;
  #stdout = '';
  #stderr = '';
  #pending: Pending | undefined;
  #calls = 0;
  #ended = false;
  /** Set when virsh reported a connection change: the session finishes its call and retires. */
  #retire = false;
  readonly #exited: Promise<void>;

  constructor(
    private readonly virsh: string,
    uri: string,
  ) {
    this.#child = spawn(virsh, ['-q', '-c', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#exited = new Promise((resolve) => this.#child.once('close', () => resolve()));
    this.#child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stdout += chunk;
      this.#progress();
    });
    this.#child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr += chunk;
      this.#progress();
    });
    this.#child.stdin!.on('error', () => undefined); // a dead shell: 'close' tells the caller
    this.#child.on('error', (error) => {
      this.#end(
        new HypervisorError(HypervisorReason.Unavailable, `cannot run ${virsh}: ${error.message}`, {
          cause: error,
        }),
      );
    });
    this.#child.on('close', (code, signal) => {
      const text = errorText(this.#stderr);
      const message = text !== '' ? text : `virsh exited (${signal ?? code ?? '?'})`;
      this.#end(new HypervisorError(classifyLibvirtError(message), message));
    });
  }

  /** Whether it can take another call. */
  get usable(): boolean {
    return !this.#ended && !this.#retire && this.#pending === undefined;
  }

  /** Runs `virsh <args>` in the shell; rejects with a classified HypervisorError. */
  run(args: readonly string[], options: VirshCallOptions): Promise<VirshResult> {
    if (!this.usable) {
      return Promise.reject(
        new HypervisorError(HypervisorReason.Failed, 'the virsh session is busy'),
      );
    }
    const line = args.map(quoteVirshArg).join(' ');
    this.#calls += 1;
    const token = `PLUGLINE-DONE-${process.pid}-${this.#calls}-`;
    return new Promise<VirshResult>((resolve, reject) => {
      const { signal, timeoutMs } = options;
      const onAbort = (): void => {
        settle(abortedError(signal?.reason));
        this.#kill();
      };
      const timer = setTimeout(() => {
        settle(
          new HypervisorError(
            HypervisorReason.Failed,
            `virsh ${args[0] ?? ''} did not answer within ${timeoutMs} ms`,
          ),
        );
        this.#kill();
      }, timeoutMs);
      const settle = (error: HypervisorError | undefined, result?: VirshResult): void => {
        if (this.#pending !== pending) return;
        this.#pending = undefined;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (error === undefined) resolve(result!);
        else reject(error);
      };
      const pending: Pending = { line, token, command: args[0] ?? '', settle };
      this.#pending = pending;
      if (signal?.aborted === true) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      // The marker is quoted in the command line and not in its output, so readline's echo of
      // the line never matches it.
      this.#child.stdin!.write(`${line}\necho ${token}"end"\necho --err ${token}"end"\n`);
    });
  }

  /** Ends the shell (its pending call, if any, fails). */
  async close(): Promise<void> {
    this.#retire = true;
    if (!this.#ended) this.#child.stdin!.end();
    const timer = setTimeout(() => this.#kill(), 5000);
    await this.#exited;
    clearTimeout(timer);
  }

  #kill(): void {
    this.#retire = true;
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill('SIGKILL');
    }
  }

  #end(error: HypervisorError): void {
    this.#ended = true;
    this.#pending?.settle(error);
  }

  #progress(): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    const marker = `${pending.token}end`;
    if (pending.stdout === undefined) {
      const at = this.#stdout.indexOf(marker);
      if (at >= 0) {
        pending.stdout = commandOutput(this.#stdout.slice(0, at), pending.line);
        this.#stdout = this.#stdout.slice(at + marker.length);
      }
    }
    if (pending.stderr === undefined) {
      const at = this.#stderr.indexOf(`error: ${marker}\n`);
      if (at >= 0) {
        pending.stderr = this.#stderr.slice(0, at);
        this.#stderr = this.#stderr.slice(at + `error: ${marker}\n`.length);
      }
    }
    if (pending.stdout === undefined || pending.stderr === undefined) return;
    const lines = pending.stderr.split('\n').filter((l) => l.trim() !== '');
    if (lines.some((l) => CONNECTION_NOTICE.test(l.trim()))) this.#retire = true;
    const errors = lines.filter(
      (l) => /^error: /.test(l.trim()) && !CONNECTION_NOTICE.test(l.trim()),
    );
    if (errors.length === 0) {
      pending.settle(undefined, { stdout: pending.stdout, stderr: pending.stderr });
      return;
    }
    const text = errorText(errors.join('\n'));
    pending.settle(new HypervisorError(classifyLibvirtError(text), text));
  }
}
