/**
 * The only place the testkit reads the environment. Values are read once, when first asked for.
 */
export interface TestkitEnv {
  /** Path of the nats-server binary (`NATS_SERVER_BIN`); otherwise PATH and /usr/sbin are searched. */
  natsServerBin: string | undefined;
  /** `DOCKER_HOST` when set to a `unix://` socket. */
  dockerHost: string | undefined;
  /** `PATH`, split. */
  path: readonly string[];
}

let cached: TestkitEnv | undefined;

export function testkitEnv(): TestkitEnv {
  cached ??= Object.freeze({
    natsServerBin: process.env.NATS_SERVER_BIN || undefined,
    dockerHost: process.env.DOCKER_HOST || undefined,
    path: (process.env.PATH ?? '').split(':').filter((p) => p.length > 0),
  });
  return cached;
}

/**
 * What a shell session may point at a running stack (what `.plugline/env` exports): a user who
 * ran `source .plugline/env` and then `pnpm test` would otherwise hand every process a test starts
 * the NATS and API server of their own stack, or of one they stopped since. Tests name these.
 */
const SESSION_VARIABLES = ['NATS_URL', 'KUBECONFIG'] as const;

/**
 * The environment for a child process a test starts: this process's without the session's
 * {@link SESSION_VARIABLES}, with `extra` over it.
 */
export function childEnv(extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of SESSION_VARIABLES) delete env[name];
  return { ...env, ...extra };
}
