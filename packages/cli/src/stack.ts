/**
 * The embedded default: NATS, kube-sim (API server + kubelet simulator), and the four services,
 * each as its own process, on one machine. `plugctl up` runs it; chain tests start one per file.
 */
import { execFile } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, type WriteStream } from 'node:fs';
import { promisify } from 'node:util';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { connectBus, Secret, startWorkJanitor } from '@plugline/bus';
import { encodeToken } from '@plugline/contracts';
import { spawnService, startNats, type NatsServer, type ServiceProcess } from '@plugline/testkit';
import { parse, stringify } from 'yaml';
import { bundlePath, DEFAULT_BUNDLE_DIR } from './bundle.js';
import { createRunningVmi, seedDemo, DEMO, type SeededVmi, type VmiSpecOptions } from './demo.js';
import { StackError } from './errors.js';

/** The four services, in chain order. */
export const ServiceName = {
  SpecWatcher: 'spec-watcher',
  AttachmentOrchestrator: 'attachment-orchestrator',
  NodeMounter: 'node-mounter',
  DomainUpdater: 'domain-updater',
} as const;
export type ServiceName = (typeof ServiceName)[keyof typeof ServiceName];
export const SERVICE_NAMES: readonly ServiceName[] = Object.values(ServiceName);
const NODE_SERVICES: ReadonlySet<ServiceName> = new Set([
  ServiceName.NodeMounter,
  ServiceName.DomainUpdater,
]);

/**
 * How the services run: `source` through tsx's loader (no build step; tests and development),
 * `bundled` as the `pnpm build` output with plain `node` (`plugctl up`: less memory, faster start).
 */
export const ServiceRuntime = { Source: 'source', Bundled: 'bundled' } as const;
export type ServiceRuntime = (typeof ServiceRuntime)[keyof typeof ServiceRuntime];

export const Hypervisor = { Simulated: 'simulated', Libvirt: 'libvirt' } as const;
export type Hypervisor = (typeof Hypervisor)[keyof typeof Hypervisor];

// --- guest tier hook (added by the guest-truth work, issue 8) ---
/**
 * A libvirt for the node services (the guest harness's `LibvirtDaemons` from `@plugline/testkit`
 * fits): domain-updater gets its URI, and node-mounter and domain-updater run inside its mount
 * namespace, so QEMU sees the bind mounts node-mounter makes there.
 */
export interface LibvirtHost {
  readonly uri: string;
  inNamespace(command: string, args?: readonly string[]): { command: string; args: string[] };
}
// --- end of the guest tier hook ---

/**
 * NATS with one least-privilege user per service (deploy/nats/plugline.conf). Each service
 * connects as its own user (`<service>`, `<service>-<node>` for the node services), the client
 * environment (`clientEnv()`, `<dir>/env`) as `plugctl`, and the cleanup identity
 * `plugline-janitor` removes work items the server keeps (`startWorkJanitor`), which the
 * services may not.
 */
export interface StackNatsUsers {
  /** The nats-server config with the users, passwords filled in (the stack starts NATS with it). */
  readonly path: string;
  /** The password of every user the stack needs, by user name. */
  readonly passwords: ReadonlyMap<string, string>;
  /** Between the janitor's checks, ms (default 5000). */
  readonly janitorIntervalMs?: number;
}

/** The NATS user of a service (on `node` for a node service), as deploy/nats/plugline.conf names it. */
export function natsUserOf(name: ServiceName, node?: string): string {
  return node === undefined ? name : `${name}-${encodeToken(node)}`;
}

/** `NATS_USER` and `NATS_PASSWORD` for `user`; throws when the stack was given no password for it. */
function natsCredentials(users: StackNatsUsers, user: string): Record<string, string> {
  const password = users.passwords.get(user);
  if (password === undefined) {
    throw new StackError(`no NATS password for the user ${user} (natsUsers.passwords)`);
  }
  return { NATS_USER: user, NATS_PASSWORD: password };
}

export interface StackOptions {
  /** Where everything goes: kubeconfig, env, logs, kubelet root, state (created; default `.plugline`). */
  dir: string;
  /** Use this NATS server instead of starting one. */
  natsUrl?: string;
  /**
   * Per-service NATS users (default none: every process connects unauthenticated). Without
   * `natsUrl` the stack starts NATS with `natsUsers.path`; with it, that server must run it.
   */
  natsUsers?: StackNatsUsers;
  /** Nodes of the simulated cluster; a node-mounter and a domain-updater run per node. Default `node-1`. */
  nodes?: readonly string[];
  hypervisor?: Hypervisor;
  /** With `hypervisor: 'libvirt'`: the libvirt to use and join (default: the machine's, as is). */
  libvirt?: LibvirtHost;
  /** Seed the demo namespace (default true). */
  demo?: boolean;
  /** Which services to run (default all four). */
  services?: readonly ServiceName[];
  /** `LOG_LEVEL` of the processes (default `info`). */
  logLevel?: string;
  /** Extra environment for every service (e.g. a shorter resync period in tests). */
  serviceEnv?: Readonly<Record<string, string>>;
  /** kube-sim's default import time of a DataVolume, ms. */
  importMs?: number;
  /** kube-sim's pod start latency, ms (default 30). */
  podStartLatencyMs?: number;
  /** How long each process may take to report ready (default 60 s). */
  readyTimeoutMs?: number;
  /**
   * Processes per cluster-side service (default 1): `spec-watcher` and `attachment-orchestrator`
   * scale out by sharing their consumers; extra replicas get ids `spec-watcher#2`, ... (benchmark).
   */
  replicas?: Partial<Record<ServiceName, number>>;
  /** How the services run (default `source`); `bundled` needs a current `pnpm build`. */
  runtime?: ServiceRuntime;
  /** With `runtime: 'bundled'`: where the bundles are (default `<repo>/dist`). */
  bundleDir?: string;
  /** Extra `node` arguments per service, before the script (e.g. `--cpu-prof`; benchmark). */
  nodeArgs?: Partial<Record<ServiceName, readonly string[]>>;
  /** Called when a process exits while the stack runs (not during stop). */
  onExit?: (name: string, code: number | null, signal: NodeJS.Signals | null) => void;
}

/** A service process of the stack. */
export interface StackService {
  /** `spec-watcher`, `node-mounter@node-1`, ... */
  readonly id: string;
  readonly name: ServiceName;
  readonly node: string | undefined;
  readonly pid: number;
  /** `http://127.0.0.1:<port>` (`/healthz`, `/readyz`, `/metrics`). */
  readonly healthUrl: string;
  readonly logFile: string;
  /** Everything it printed. */
  output(): string;
  running(): boolean;
  /** Stops it (SIGTERM, then SIGKILL after a bound). */
  stop(): Promise<void>;
  /** Kills it at once (a crash). */
  kill(signal?: NodeJS.Signals): void;
}

export interface HealthRow {
  id: string;
  pid: number;
  healthUrl: string;
  healthy: boolean;
  ready: boolean;
}

export interface Stack extends AsyncDisposable {
  readonly dir: string;
  readonly natsUrl: string;
  /** The monitoring endpoint (`/varz`, `/jsz`) of the NATS server the stack started. */
  readonly natsMonitorUrl: string | undefined;
  readonly kubeconfigPath: string;
  readonly kubeletRoot: string;
  readonly apiUrl: string;
  readonly nodes: readonly string[];
  readonly hypervisor: Hypervisor;
  readonly services: readonly StackService[];
  /** The client configuration the stack's kubeconfig describes. */
  readonly kc: KubeConfig;
  /** The environment for a client (`KUBECONFIG`, `NATS_URL`). */
  clientEnv(): Record<string, string>;
  /** The demo objects, when seeded. */
  readonly demo: SeededVmi | undefined;
  /** Creates a running VMI with its launcher pod (domain-updater defines its simulated domain). */
  createVmi(options: Omit<VmiSpecOptions, 'node'> & { node?: string }): Promise<SeededVmi>;
  /** `/healthz` and `/readyz` of every service. */
  health(): Promise<HealthRow[]>;
  /** Restarts one stopped or running service with the same environment. */
  restartService(id: string): Promise<StackService>;
  stop(): Promise<void>;
}

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const require = createRequire(import.meta.url);
const TSX_LOADER = pathToFileURL(require.resolve('tsx')).href;
const SERVICE_STOP_MS = 10_000;
const KUBE_SIM_STOP_MS = 20_000;

/** `node --import tsx <file>` arguments. */
function tsxArgs(file: string, args: readonly string[] = []): string[] {
  return ['--import', TSX_LOADER, file, ...args];
}

/** The main module of a service in this repository. */
export function serviceMain(name: ServiceName): string {
  return join(REPO_ROOT, 'services', name, 'src', 'main.ts');
}

/**
 * V8 flags of every service. A service's live heap is small (~45 MiB tracking 5,000 volumes,
 * heap snapshots, issue 10), but after a busy stretch V8 lets the old generation grow to up to
 * four times what survived the last full GC, so RSS while tracking 10,000 volumes read 290-310
 * MiB. Growing it by half instead keeps that near the live set; in the throughput run the extra
 * full GCs cost nothing measurable. `--optimize-for-size` shrank RSS as far but cost 15-35 %
 * more CPU per plug; `--max-semi-space-size=1` saved ~3 MiB idle. `nodeArgs` come after these,
 * so a caller can override them.
 */
export const SERVICE_V8_FLAGS: readonly string[] = ['--heap-growing-percent=50'];

/** The `node` arguments that run `spec`'s service: its script (bundle or source) and flags. */
function serviceArgs(spec: ServiceSpec): { main: string; args: string[] } {
  const flags = [...SERVICE_V8_FLAGS, ...(spec.nodeArgs ?? [])];
  if (spec.runtime === ServiceRuntime.Bundled) {
    const main = bundlePath(spec.name, spec.bundleDir);
    return { main, args: [...flags, main] };
  }
  const main = serviceMain(spec.name);
  return { main, args: [...flags, ...tsxArgs(main)] };
}

interface ReadyLine {
  msg?: unknown;
  healthUrl?: unknown;
}

/** The `healthUrl` of the first `{"msg":"ready","healthUrl":...}` line in `text`. */
export function findReadyLine(text: string): string | undefined {
  for (const line of text.split('\n')) {
    if (!line.includes('"ready"')) continue;
    try {
      const parsed = JSON.parse(line) as ReadyLine;
      if (parsed.msg === 'ready' && typeof parsed.healthUrl === 'string') return parsed.healthUrl;
    } catch {
      // not a JSON log line
    }
  }
  return undefined;
}

async function probe(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

function pipeToLog(proc: ServiceProcess, file: WriteStream): void {
  proc.child.stdout?.on('data', (chunk: Buffer) => file.write(chunk));
  proc.child.stderr?.on('data', (chunk: Buffer) => file.write(chunk));
  // On `close`, not `exit`: output still in the pipes arrives after the exit, and a write after
  // the end threw in the process running the stack (seen once in ~40 runs of the guest test).
  proc.child.once('close', () => file.end());
}

interface ServiceSpec {
  id: string;
  name: ServiceName;
  node: string | undefined;
  env: Record<string, string>;
  /** Extra `node` arguments (before the script). */
  nodeArgs?: readonly string[];
  runtime: ServiceRuntime;
  bundleDir: string;
  /** Rewrites the command line (runs it inside the libvirt host's mount namespace). */
  wrap?: (command: string, args: string[]) => { command: string; args: string[] };
}

class RunningService implements StackService {
  stopping = false;
  constructor(
    readonly spec: ServiceSpec,
    readonly proc: ServiceProcess,
    readonly healthUrl: string,
    readonly logFile: string,
  ) {}
  get id(): string {
    return this.spec.id;
  }
  get name(): ServiceName {
    return this.spec.name;
  }
  get node(): string | undefined {
    return this.spec.node;
  }
  get pid(): number {
    return this.proc.pid;
  }
  output(): string {
    return this.proc.output();
  }
  running(): boolean {
    return this.proc.child.exitCode === null && this.proc.child.signalCode === null;
  }
  async stop(): Promise<void> {
    this.stopping = true;
    await this.proc.stop();
  }
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.stopping = true;
    this.proc.kill(signal);
  }
}

async function startServiceProcess(
  spec: ServiceSpec,
  logDir: string,
  readyTimeoutMs: number,
  onExit: StackOptions['onExit'],
): Promise<RunningService> {
  const { main, args } = serviceArgs(spec);
  if (!existsSync(main)) {
    const hint = spec.runtime === ServiceRuntime.Bundled ? ' (run `pnpm build`)' : '';
    throw new StackError(`${spec.id}: ${main} does not exist${hint}`);
  }
  const logFile = join(logDir, `${spec.id.replace('@', '-')}.log`);
  const launch = spec.wrap?.(process.execPath, args) ?? { command: process.execPath, args };
  const proc = await spawnService(launch.command, {
    args: launch.args,
    cwd: REPO_ROOT,
    env: spec.env,
    stopSignal: 'SIGTERM',
    stopTimeout: SERVICE_STOP_MS,
  });
  const log = createWriteStream(logFile, { flags: 'a' });
  pipeToLog(proc, log);
  const deadline = Date.now() + readyTimeoutMs;
  let healthUrl: string | undefined;
  while (healthUrl === undefined) {
    healthUrl = findReadyLine(proc.output());
    if (healthUrl !== undefined) break;
    const exited = proc.child.exitCode !== null || proc.child.signalCode !== null;
    if (exited || Date.now() > deadline) {
      await proc.stop();
      const tail = proc.output().split('\n').slice(-15).join('\n');
      throw new StackError(
        `${spec.id} ${exited ? 'exited' : `did not report ready within ${readyTimeoutMs} ms`} (log: ${logFile}):\n${tail}`,
      );
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const service = new RunningService(spec, proc, healthUrl, logFile);
  void proc.exited.then(({ code, signal }) => {
    if (!service.stopping) onExit?.(spec.id, code, signal);
  });
  return service;
}

/** Mount points at or under `dir` in this mount namespace, deepest first. */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => (line.split(' ')[4] ?? '').replace(/\\040/g, ' '))
    .filter((p) => p === dir || p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

/**
 * Unmounts what node-mounter left under the kubelet root (it keeps its mounts across its own
 * restarts, as virt-handler does): the node "reboots" when the stack stops, so kube-sim can
 * tear the pods' folders down and detach its loop devices.
 */
async function unmountUnder(dir: string): Promise<void> {
  const run = promisify(execFile);
  for (const mountPoint of mountsUnder(dir)) {
    await run('umount', ['-l', mountPoint]).catch(() => undefined);
  }
}

interface KubeSimProcess {
  proc: ServiceProcess;
  url: string;
  kubeconfig: string;
  kubeletRoot: string;
}

async function startKubeSimProcess(
  dir: string,
  nodes: readonly string[],
  options: StackOptions,
): Promise<KubeSimProcess> {
  const args = [
    '--kubeconfig',
    join(dir, 'kubeconfig'),
    '--kubelet-root',
    join(dir, 'kubelet'),
    '--nodes',
    nodes.join(','),
  ];
  if (options.importMs !== undefined) args.push('--import-ms', String(options.importMs));
  if (options.podStartLatencyMs !== undefined) {
    args.push('--pod-start-latency-ms', String(options.podStartLatencyMs));
  }
  const proc = await spawnService(process.execPath, {
    args: tsxArgs(join(REPO_ROOT, 'packages', 'kube-sim', 'src', 'main.ts'), args),
    cwd: REPO_ROOT,
    env: { LOG_LEVEL: 'warn' },
    stopSignal: 'SIGTERM',
    stopTimeout: KUBE_SIM_STOP_MS,
  });
  const log = createWriteStream(join(dir, 'logs', 'kube-sim.log'), { flags: 'a' });
  pipeToLog(proc, log);
  try {
    const [line] = await proc.waitForOutput(/^\{"url":.*\}$/m, options.readyTimeoutMs ?? 60_000);
    const ready = JSON.parse(line) as { url: string; kubeconfig: string; kubeletRoot: string };
    return { proc, ...ready };
  } catch (err) {
    await proc.stop();
    throw new StackError(`kube-sim did not start: ${proc.output().slice(-2000)}`, { cause: err });
  }
}

/** Sets the kubeconfig's current context namespace (kubectl and plugctl then default to it). */
async function setContextNamespace(path: string, namespace: string): Promise<void> {
  const doc = parse(await readFile(path, 'utf8')) as {
    'current-context'?: string;
    contexts?: { name: string; context: Record<string, unknown> }[];
  };
  for (const c of doc.contexts ?? []) {
    if (c.name === doc['current-context']) c.context.namespace = namespace;
  }
  await writeFile(path, stringify(doc), { mode: 0o600 });
}

/**
 * A service's `PLUGLINE_INSTANCE`: its id as a DNS-1123 subdomain (`node-mounter@node-1` →
 * `node-mounter.node-1`, `spec-watcher#2` → `spec-watcher-2`). A restarted service keeps it, and
 * so takes over the leases its killed predecessor held at once.
 */
function instanceOf(id: string): string {
  return id.replace('#', '-').replace('@', '.');
}

function serviceSpecs(
  options: StackOptions,
  base: Record<string, string>,
  dir: string,
  nodes: readonly string[],
): ServiceSpec[] {
  const wanted = options.services ?? SERVICE_NAMES;
  const specs: Omit<ServiceSpec, 'runtime' | 'bundleDir'>[] = [];
  for (const name of SERVICE_NAMES.filter((n) => wanted.includes(n))) {
    if (!NODE_SERVICES.has(name)) {
      const replicas = Math.max(1, options.replicas?.[name] ?? 1);
      for (let i = 1; i <= replicas; i++) {
        const id = i === 1 ? name : `${name}#${i}`;
        specs.push({
          id,
          name,
          node: undefined,
          env: { ...base, PLUGLINE_INSTANCE: instanceOf(id) },
        });
      }
      continue;
    }
    for (const node of nodes) {
      const env: Record<string, string> = {
        ...base,
        PLUGLINE_INSTANCE: instanceOf(`${name}@${node}`),
        NODE_NAME: node,
        PLUGLINE_STATE_DIR: join(dir, 'state', `${name}-${node}`),
      };
      if (name === ServiceName.DomainUpdater) {
        env.PLUGLINE_HYPERVISOR = options.hypervisor ?? Hypervisor.Simulated;
        env.PLUGLINE_SIM_STATE_DIR = simStateDir(dir, node);
      }
      const libvirt = options.hypervisor === Hypervisor.Libvirt ? options.libvirt : undefined;
      if (libvirt !== undefined) {
        // libvirt on the host: disk sources are host paths of the launcher's hotplug folder.
        if (name === ServiceName.DomainUpdater) {
          env.LIBVIRT_URI = libvirt.uri;
          env.PLUGLINE_DISK_SOURCE_DIR = 'host';
        }
        const wrap = (command: string, args: string[]) => libvirt.inNamespace(command, args);
        specs.push({ id: `${name}@${node}`, name, node, env, wrap });
        continue;
      }
      specs.push({ id: `${name}@${node}`, name, node, env });
    }
  }
  const users = options.natsUsers;
  return specs.map((s) => ({
    ...s,
    env: {
      ...s.env,
      ...(users === undefined ? {} : natsCredentials(users, natsUserOf(s.name, s.node))),
      ...options.serviceEnv,
    },
    nodeArgs: options.nodeArgs?.[s.name],
    runtime: options.runtime ?? ServiceRuntime.Source,
    bundleDir: options.bundleDir ?? DEFAULT_BUNDLE_DIR,
  }));
}

function simStateDir(dir: string, node: string): string {
  return join(dir, 'state', `hypervisor-${node}`);
}

/**
 * Starts the embedded default and resolves once every service reported ready. On failure,
 * everything already started is stopped before the error is thrown.
 */
export async function startStack(options: StackOptions): Promise<Stack> {
  const dir = resolve(options.dir);
  const nodes = options.nodes ?? ['node-1'];
  const hypervisor = options.hypervisor ?? Hypervisor.Simulated;
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  // A fresh run: the previous run's state (checkpoints, domains, kubelet files) is gone with it.
  await rm(join(dir, 'state'), { recursive: true, force: true });
  await rm(join(dir, 'kubelet'), { recursive: true, force: true });
  await mkdir(join(dir, 'logs'), { recursive: true });
  await mkdir(join(dir, 'state'), { recursive: true });

  const cleanups: (() => Promise<void>)[] = [];
  const services: RunningService[] = [];
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      await Promise.allSettled(services.map((s) => s.stop()));
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    })();
    return stopped;
  };

  try {
    let natsUrl = options.natsUrl;
    let natsMonitorUrl: string | undefined;
    if (natsUrl === undefined) {
      const conf = options.natsUsers?.path;
      const nats: NatsServer = await startNats(conf === undefined ? {} : { args: ['-c', conf] });
      cleanups.push(() => nats.stop());
      natsUrl = nats.url;
      natsMonitorUrl = nats.monitorUrl;
    }
    const sim = await startKubeSimProcess(dir, nodes, options);
    cleanups.push(async () => {
      await unmountUnder(sim.kubeletRoot);
      await sim.proc.stop();
    });
    const kubeconfigPath = sim.kubeconfig;
    if (options.demo !== false) await setContextNamespace(kubeconfigPath, DEMO.namespace);
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath);

    const createVmi: Stack['createVmi'] = async (vmiOptions) => {
      const node = vmiOptions.node ?? nodes[0] ?? 'node-1';
      return createRunningVmi(kc, { ...vmiOptions, node });
    };

    let demo: SeededVmi | undefined;
    if (options.demo !== false) {
      demo = await seedDemo(kc, nodes[0] as string);
    }

    const base: Record<string, string> = {
      NATS_URL: natsUrl,
      KUBECONFIG: kubeconfigPath,
      KUBELET_ROOT: sim.kubeletRoot,
      LOG_LEVEL: options.logLevel ?? 'info',
      LOG_PRETTY: 'false',
      HEALTH_PORT: '0',
      HEALTH_HOST: '127.0.0.1',
      PLUGLINE_STREAM_REPLICAS: '1',
      // glibc gives each thread that mallocs its own arena (up to 8 per core) and keeps what is
      // freed there: the Buffers of NATS and HTTP traffic left 100+ MiB of RSS behind while
      // tracking 10,000 volumes. Two arenas: settled RSS 317-350 → 201-265 MiB, no slower
      // (issue 10, measured; the usual setting for Node services in containers).
      MALLOC_ARENA_MAX: '2',
    };
    const specs = serviceSpecs(options, base, dir, nodes);
    const logDir = join(dir, 'logs');
    const started = await Promise.allSettled(
      specs.map(async (spec) => {
        const service = await startServiceProcess(spec, logDir, readyTimeoutMs, options.onExit);
        services.push(service);
        return service;
      }),
    );
    const failed = started.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    if (options.natsUsers?.passwords.has(JANITOR_USER)) {
      const janitor = await startJanitor(natsUrl, options.natsUsers);
      cleanups.push(janitor);
    }

    const client: Record<string, string> = {
      KUBECONFIG: kubeconfigPath,
      NATS_URL: natsUrl,
      ...(options.natsUsers === undefined ? {} : natsCredentials(options.natsUsers, 'plugctl')),
    };
    const envFile = join(dir, 'env');
    await writeFile(envFile, envFileText(client), 'utf8');
    if (options.natsUsers !== undefined) await chmod(envFile, 0o600); // it holds a password

    const specsById = new Map(specs.map((s) => [s.id, s]));
    const stack: Stack = {
      dir,
      natsUrl,
      natsMonitorUrl,
      kubeconfigPath,
      kubeletRoot: sim.kubeletRoot,
      apiUrl: sim.url,
      nodes,
      hypervisor,
      kc,
      demo,
      get services() {
        return services;
      },
      clientEnv: () => ({ ...client }),
      createVmi,
      health: () =>
        Promise.all(
          services.map(async (s) => ({
            id: s.id,
            pid: s.pid,
            healthUrl: s.healthUrl,
            healthy: s.running() && (await probe(`${s.healthUrl}/healthz`)),
            ready: s.running() && (await probe(`${s.healthUrl}/readyz`)),
          })),
        ),
      restartService: async (id) => {
        const spec = specsById.get(id);
        const index = services.findIndex((s) => s.id === id);
        if (spec === undefined || index < 0) throw new StackError(`no service ${id}`);
        await services[index]?.stop();
        const service = await startServiceProcess(spec, logDir, readyTimeoutMs, options.onExit);
        services[index] = service;
        return service;
      },
      stop,
      [Symbol.asyncDispose]: stop,
    };
    return stack;
  } catch (err) {
    await stop();
    throw err;
  }
}

const JANITOR_USER = 'plugline-janitor';

/**
 * Connects as the cleanup identity and runs the work janitor; resolves with its cleanup (stop
 * the loop, close the connection), which runs before NATS stops.
 */
async function startJanitor(natsUrl: string, users: StackNatsUsers): Promise<() => Promise<void>> {
  const { NATS_PASSWORD: password = '' } = natsCredentials(users, JANITOR_USER);
  const bus = await connectBus({
    servers: natsUrl.split(','),
    name: JANITOR_USER,
    auth: { kind: 'user', user: JANITOR_USER, password: new Secret(password) },
  });
  const janitor = startWorkJanitor(bus, { intervalMs: users.janitorIntervalMs ?? 5000 });
  return async () => {
    await janitor.stop();
    await bus.close();
  };
}

/** `<dir>/env`: `export NAME=value` lines for a shell to source, quoted where needed. */
function envFileText(env: Readonly<Record<string, string>>): string {
  const quoted = (v: string): string =>
    /^[\w@%+=:,./-]+$/.test(v) ? v : `'${v.replaceAll("'", `'\\''`)}'`;
  return Object.entries(env)
    .map(([name, value]) => `export ${name}=${quoted(value)}\n`)
    .join('');
}
