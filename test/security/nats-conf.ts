/**
 * deploy/nats/plugline.conf made runnable for a test: each `$PLUGLINE_NATS_PASS_*` variable gets
 * a fresh random password (as the deployment's secrets would), written to a copy in `dir`.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { connectBus, type Bus } from '@plugline/bus';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** `node --import <this>` runs a service's main.ts from source, as the tests spawn them. */
export const TSX_LOADER = pathToFileURL(
  createRequire(join(REPO_ROOT, 'package.json')).resolve('tsx'),
).href;

export const NATS_CONF = fileURLToPath(new URL('../../deploy/nats/plugline.conf', import.meta.url));

/** The conf's users (services for the node `node-1`) and the suffix of their password variable. */
export const NATS_USERS = {
  'spec-watcher': 'SPEC_WATCHER',
  'attachment-orchestrator': 'ATTACHMENT_ORCHESTRATOR',
  'node-mounter-node-1': 'NODE_MOUNTER',
  'domain-updater-node-1': 'DOMAIN_UPDATER',
  plugctl: 'PLUGCTL',
  'plugline-janitor': 'JANITOR',
} as const;
export type NatsUser = keyof typeof NATS_USERS;

export interface RenderedConf {
  /** The conf with the passwords filled in. */
  readonly path: string;
  readonly passwords: ReadonlyMap<NatsUser, string>;
}

export async function renderNatsConf(dir: string): Promise<RenderedConf> {
  let conf = await readFile(NATS_CONF, 'utf8');
  const passwords = new Map<NatsUser, string>();
  for (const [user, suffix] of Object.entries(NATS_USERS) as [NatsUser, string][]) {
    const variable = `$PLUGLINE_NATS_PASS_${suffix}`;
    if (!conf.includes(variable)) throw new Error(`${NATS_CONF} has no ${variable}`);
    const password = randomBytes(12).toString('hex');
    conf = conf.replaceAll(variable, `"${password}"`);
    passwords.set(user, password);
  }
  const path = join(dir, 'plugline.conf');
  await writeFile(path, conf, { mode: 0o600 });
  return { path, passwords };
}

/** A bus connected as `user` with its password, that does not reconnect (a refusal is final). */
export function connectAs(url: string, user: NatsUser, password: string): Promise<Bus> {
  return connectBus({ servers: url, name: user, user, pass: password, maxReconnectAttempts: 0 });
}
