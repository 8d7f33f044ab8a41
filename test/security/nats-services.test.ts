/**
 * The four services as real processes, each connected as ITS OWN user of
 * deploy/nats/plugline.conf on a real nats-server (kube-sim, real mounts in this private mount
 * namespace): a volume is plugged (`Ready`) and unplugged (gone) without one permission
 * violation, and a service given another stage's credentials is refused and does not start.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { addVolume, createPvc, ensureNamespace, removeVolume, serviceMain } from '@plugline/cli';
import { ServiceName } from '@plugline/cli';
import {
  spawnService,
  startNats,
  tempDir,
  type NatsServer,
  type ServiceProcess,
  type TempDir,
} from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  isRoot,
  loopDevicesUnder,
  mountsUnder,
  startChain,
  volumeStatus,
  type ChainFixture,
} from '../chain/helpers.js';
import { renderNatsConf, type NatsUser, type RenderedConf } from './nats-conf.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TSX_LOADER = pathToFileURL(
  createRequire(join(REPO_ROOT, 'package.json')).resolve('tsx'),
).href;
const NODE = 'node-1';
const WAIT = { timeout: 60_000, interval: 100 };

/** Each service and the user it runs as (the conf's users are for the node `node-1`). */
const SERVICES: readonly { name: ServiceName; user: NatsUser; node?: string }[] = [
  { name: ServiceName.SpecWatcher, user: 'spec-watcher' },
  { name: ServiceName.AttachmentOrchestrator, user: 'attachment-orchestrator' },
  { name: ServiceName.NodeMounter, user: 'node-mounter-node-1', node: NODE },
  { name: ServiceName.DomainUpdater, user: 'domain-updater-node-1', node: NODE },
];

let dir: TempDir;
let conf: RenderedConf;
let nats: NatsServer;
let f: ChainFixture | undefined;
/** Every process started (stopped after the tests); the chain's four are the first. */
const running: ServiceProcess[] = [];

/** Starts `name` (its node's variables when it runs per node) connecting as `user`. */
async function startService(
  name: ServiceName,
  user: NatsUser,
  password: string,
  node?: string,
): Promise<ServiceProcess> {
  const stack = f!.stack;
  const env: Record<string, string> = {
    NATS_URL: nats.url,
    NATS_USER: user,
    NATS_PASSWORD: password,
    NATS_TOKEN: '',
    NATS_CREDS: '',
    KUBECONFIG: stack.kubeconfigPath,
    KUBELET_ROOT: stack.kubeletRoot,
    LOG_LEVEL: 'info',
    LOG_PRETTY: 'false',
    HEALTH_PORT: '0',
    HEALTH_HOST: '127.0.0.1',
    PLUGLINE_STREAM_REPLICAS: '1',
  };
  if (node !== undefined) {
    env.NODE_NAME = node;
    env.PLUGLINE_STATE_DIR = join(stack.dir, 'state', `${name}-${node}`);
    if (name === ServiceName.DomainUpdater) {
      env.PLUGLINE_HYPERVISOR = 'simulated';
      env.PLUGLINE_SIM_STATE_FILE = join(stack.dir, 'state', `hypervisor-${node}.json`);
    }
  }
  const proc = await spawnService(process.execPath, {
    args: ['--import', TSX_LOADER, serviceMain(name)],
    cwd: REPO_ROOT,
    env,
    stopSignal: 'SIGTERM',
    stopTimeout: 10_000,
  });
  running.push(proc);
  return proc;
}

/** The nats-server's permission violations (it logs each with the user and the subject). */
function violations(): string[] {
  return nats
    .output()
    .split('\n')
    .filter((l) => /violation/i.test(l));
}

/** The user each named client connection authenticated as (`/connz?auth=true`). */
async function connectionUsers(): Promise<Record<string, string>> {
  const res = await fetch(`${nats.monitorUrl}/connz?auth=true`);
  const body = (await res.json()) as {
    connections?: { name?: string; authorized_user?: string }[];
  };
  return Object.fromEntries(
    (body.connections ?? []).map((c) => [c.name ?? '', c.authorized_user ?? '']),
  );
}

beforeAll(async () => {
  dir = await tempDir('plugline-nats-services-');
  conf = await renderNatsConf(dir.path);
  nats = await startNats({ args: ['-c', conf.path] });
  if (!isRoot) return;
  f = await startChain({ natsUrl: nats.url, services: [], demo: false });
  await Promise.all(
    SERVICES.map(async (s) => {
      const proc = await startService(s.name, s.user, conf.passwords.get(s.user)!, s.node);
      await proc.waitForOutput(/"msg":"ready"/, 90_000);
    }),
  );
}, 240_000);

afterAll(async () => {
  await Promise.allSettled(running.map((p) => p.stop()));
  const stackDir = f?.stack.dir;
  await f?.stop();
  await nats?.stop();
  await dir?.remove();
  if (stackDir !== undefined) {
    expect(loopDevicesUnder(stackDir)).toEqual([]);
    expect(mountsUnder(stackDir)).toEqual([]);
  }
}, 120_000);

describe.skipIf(!isRoot)('each service on NATS as its own user (deploy/nats/plugline.conf)', () => {
  it('connects every service as its own user', async () => {
    const users = await connectionUsers();
    expect(users).toMatchObject({
      'spec-watcher': 'spec-watcher',
      [`node-mounter@${NODE}`]: 'node-mounter-node-1',
      [`domain-updater@${NODE}`]: 'domain-updater-node-1',
    });
    expect(
      Object.entries(users).filter(([name]) => name.startsWith('attachment-orchestrator@')),
    ).toEqual([[expect.any(String), 'attachment-orchestrator']]);
  });

  it('plugs a volume to Ready and unplugs it, without a permission violation', async () => {
    const ns = 'nats-users';
    const client = f!.client;
    await ensureNamespace(f!.stack.kc, ns);
    await f!.stack.createVmi({ namespace: ns, name: 'vm' });
    await createPvc(f!.stack.kc, { namespace: ns, name: 'data', mode: 'Filesystem' });

    await addVolume(client, { namespace: ns, vmi: 'vm', flags: { volumeName: 'data' } });
    await vi.waitFor(async () => {
      expect(await volumeStatus(client, ns, 'vm', 'data')).toMatchObject({
        phase: 'Ready',
        target: 'sda',
      });
    }, WAIT);

    await removeVolume(client, { namespace: ns, vmi: 'vm', volumeName: 'data' });
    await vi.waitFor(async () => {
      expect(await volumeStatus(client, ns, 'vm', 'data')).toBeUndefined();
    }, WAIT);

    expect(violations()).toEqual([]);
    for (const proc of running.slice(0, SERVICES.length)) {
      expect(proc.output()).not.toMatch(/permission|authorization/i);
    }
  }, 150_000);

  it("refuses a node-mounter started with domain-updater's credentials: it does not start", async () => {
    const proc = await startService(
      ServiceName.NodeMounter,
      'domain-updater-node-1',
      conf.passwords.get('domain-updater-node-1')!,
      NODE,
    );
    const { code } = await proc.exited;
    expect(code).toBe(1);
    expect(proc.output()).not.toMatch(/"msg":"ready"/);
    // Its fatal line names the refusal: the node-mounter's consumer is not the user's to touch.
    expect(proc.output()).toMatch(
      /node-mounter failed to start.*Permissions Violation for Publish to .*PLUGLINE_WORK\.node-mounter-node-1/,
    );
    expect(violations()).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/User "domain-updater-node-1".*PLUGLINE_WORK\.node-mounter-node-1/),
      ]),
    );
  }, 150_000);

  it("refuses a spec-watcher with another user's password: it does not start", async () => {
    const proc = await startService(
      ServiceName.SpecWatcher,
      'spec-watcher',
      conf.passwords.get('attachment-orchestrator')!,
    );
    const { code } = await proc.exited;
    expect(code).toBe(1);
    expect(proc.output()).not.toMatch(/"msg":"ready"/);
    expect(proc.output()).toMatch(/spec-watcher failed to start.*Authorization Violation/i);
  }, 150_000);
});
