/**
 * The four services as real processes, each connected as ITS OWN user of
 * deploy/nats/plugline.conf on a real nats-server (the embedded stack's `natsUsers`; kube-sim,
 * real mounts in this private mount namespace): `plugctl --wait`, as the `plugctl` user, plugs a
 * volume (`Ready`) and unplugs it (gone) without one permission violation; a work item the
 * server kept after its acknowledgement is removed by the cleanup identity (`plugline-janitor`)
 * before a service's reaper, which may not, would try; and a service given another stage's
 * credentials is refused and does not start.
 */
import { join } from 'node:path';
import { connectBus, StreamName } from '@plugline/bus';
import { createPvc, ensureNamespace, serviceMain } from '@plugline/cli';
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
  plugctlProcess,
  startChain,
  volumeStatus,
  type ChainFixture,
} from '../chain/helpers.js';
import {
  renderNatsConf,
  REPO_ROOT,
  TSX_LOADER,
  type NatsUser,
  type RenderedConf,
} from './nats-conf.js';
import { leaveSpecWatcherLeftover } from './work-leftover.js';

const NODE = 'node-1';
const WAIT = { timeout: 60_000, interval: 100 };

let dir: TempDir;
let conf: RenderedConf;
let nats: NatsServer;
let f: ChainFixture | undefined;
/** The work item the server kept after spec-watcher acknowledged it (before the stack started). */
let leftover: string;
/** Processes this file starts beside the stack's (stopped after the tests). */
const running: ServiceProcess[] = [];

/** Starts another `name` (its node's variables when it runs per node) connecting as `user`. */
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
      env.PLUGLINE_SIM_STATE_DIR = join(stack.dir, 'state', `hypervisor-${node}`);
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
  leftover = await leaveSpecWatcherLeftover(nats, conf.passwords.get('spec-watcher')!);
  f = await startChain({
    natsUrl: nats.url,
    natsUsers: { ...conf, janitorIntervalMs: 500 },
    demo: false,
  });
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
      'plugline-janitor': 'plugline-janitor',
    });
    expect(
      Object.entries(users).filter(([name]) => name.startsWith('attachment-orchestrator@')),
    ).toEqual([[expect.any(String), 'attachment-orchestrator']]);
  });

  it('plugs a volume to Ready and unplugs it with plugctl --wait as the plugctl user, without a permission violation', async () => {
    const ns = 'nats-users';
    const stack = f!.stack;
    expect(stack.clientEnv()).toMatchObject({ NATS_USER: 'plugctl' });
    await ensureNamespace(stack.kc, ns);
    await stack.createVmi({ namespace: ns, name: 'vm' });
    await createPvc(stack.kc, { namespace: ns, name: 'data', mode: 'Filesystem' });

    const plug = await plugctlProcess(
      stack,
      'addvolume',
      'vm',
      '--volume-name=data',
      '--wait',
      '-n',
      ns,
    );
    expect(plug.err).toBe('');
    expect(plug.code).toBe(0);
    expect(plug.out).toMatch(/^Volume data is Ready as sda after /m);
    expect(await volumeStatus(f!.client, ns, 'vm', 'data')).toMatchObject({
      phase: 'Ready',
      target: 'sda',
    });

    const unplug = await plugctlProcess(
      stack,
      'removevolume',
      'vm',
      '--volume-name=data',
      '--wait',
      '-n',
      ns,
    );
    expect(unplug.err).toBe('');
    expect(unplug.code).toBe(0);
    expect(unplug.out).toMatch(/^Volume data was removed after /m);
    expect(await volumeStatus(f!.client, ns, 'vm', 'data')).toBeUndefined();

    expect(violations()).toEqual([]);
    for (const service of stack.services) {
      expect(service.output()).not.toMatch(/permission|authorization|not allowed/i);
    }
  }, 150_000);

  it('removes the work item the server kept as the cleanup identity, which the services may not', async () => {
    await using janitor = await connectBus({
      servers: nats.url,
      user: 'plugline-janitor',
      pass: conf.passwords.get('plugline-janitor')!,
      maxReconnectAttempts: 0,
    });
    const held = async (): Promise<number> => {
      const info = await janitor.jsm.streams.info(StreamName.Work, { subjects_filter: leftover });
      return info.state.subjects?.[leftover] ?? 0;
    };
    await vi.waitFor(async () => expect(await held()).toBe(0), WAIT);
    // spec-watcher saw it at start; the janitor removed it before its own check would have asked.
    expect(violations()).toEqual([]);
    const specWatcher = f!.stack.services.find((s) => s.id === 'spec-watcher')!;
    expect(specWatcher.output()).not.toMatch(/not allowed to repair/);
  }, 90_000);

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
