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
