/** What a command reads and writes, so tests can run commands in-process. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C (commands that follow a stream stop reading). */
  signal?: AbortSignal;
}

/** An Io on the process's own streams. */
export function processIo(env: NodeJS.ProcessEnv, signal?: AbortSignal): Io {
  return {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    env,
    ...(signal === undefined ? {} : { signal }),
  };
}
