// A nats-server with two users, an admin and a stage whose permissions a test changes.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startNats, tempDir, type NatsServer, type TempDir } from '@plugline/testkit';
import { connectBus, provision, type Bus, type ProvisionOptions } from '../src/index.js';

const STAGE_USER = 'stage';
const ADMIN_USER = 'admin';

/** The stage user's permissions block, as nats-server's configuration writes it. */
export type Permissions = string;

export const ALL_ALLOWED: Permissions = '{ publish: ">", subscribe: ">" }';

/** A server whose `stage` user's permissions change with a configuration reload. */
export interface StageUserServer {
  readonly nats: NatsServer;
  /** Connected as the admin user (everything allowed); the server is provisioned through it. */
  readonly admin: Bus;
  /** Connected as the stage user. */
  readonly stage: Bus;
  /** Gives the stage user `permissions` and resolves once the server has reloaded them. */
  permit(permissions: Permissions): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * The server's configuration. A reload must keep what the command line set (`-n`, `-js -sd`):
 * nats-server refuses another name and turns JetStream off when the file does not have it.
 */
function natsConf(permissions: Permissions, server?: NatsServer): string {
  const kept =
    server === undefined
      ? ''
      : `server_name: ${server.name}\njetstream { store_dir: ${JSON.stringify(join(server.storeDir, 'js'))} }\n`;
  return `${kept}authorization {
  users = [
    { user: ${STAGE_USER}, password: stage-pw, permissions: ${permissions} }
    { user: ${ADMIN_USER}, password: admin-pw }
  ]
}
`;
}

/** Starts the server with every permission, provisions it as the admin, connects both users. */
export async function startStageUserServer(
  provisioning: ProvisionOptions,
  stageApiTimeoutMs: number,
): Promise<StageUserServer> {
  const dir: TempDir = await tempDir('plugline-stage-user-');
  const confPath = join(dir.path, 'nats.conf');
  await writeFile(confPath, natsConf(ALL_ALLOWED));
  const nats = await startNats({ args: ['-c', confPath] });
  const buses: Bus[] = [];
  const dispose = async (): Promise<void> => {
    await Promise.allSettled(buses.map((bus) => bus.close()));
    await nats.stop();
    await dir.remove();
  };
  try {
    const admin = await connectBus({
      servers: nats.url,
      name: 'admin',
      user: ADMIN_USER,
      pass: 'admin-pw',
    });
    buses.push(admin);
    await provision(admin, provisioning);
    const stage = await connectBus({
      servers: nats.url,
      name: 'stage',
      user: STAGE_USER,
      pass: 'stage-pw',
      apiTimeoutMs: stageApiTimeoutMs,
    });
    buses.push(stage);
    return {
      nats,
      admin,
      stage,
      async permit(permissions) {
        await writeFile(confPath, natsConf(permissions, nats));
        await nats.reload();
      },
      [Symbol.asyncDispose]: dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}
