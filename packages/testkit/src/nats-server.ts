import { accessSync, constants } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trackDir } from './cleanup.js';
import { testkitEnv } from './config.js';
import { dockerReachable } from './docker.js';
import { NatsServerNotFoundError, StartupError } from './errors.js';
import { spawnService, type ServiceProcess } from './process.js';
import { waitFor } from './wait.js';

/** How the server is run: a local `nats-server` process, or a container through testcontainers. */
export type NatsEngine = 'process' | 'container';

export interface StartNatsOptions {
  /**
   * `process` needs a `nats-server` binary; `container` needs a Docker engine; `auto` (default)
   * uses the binary when there is one, otherwise a reachable Docker engine, otherwise throws
   * {@link NatsServerNotFoundError}.
   */
  engine?: NatsEngine | 'auto';
  /** Path of nats-server (default: `NATS_SERVER_BIN`, then PATH, then /usr/sbin). */
  bin?: string;
  /** Extra command-line arguments. */
  args?: readonly string[];
  /** Milliseconds to wait for the server to accept connections (default 10 s). */
  startTimeout?: number;
  /** Container image for the container engine (default `nats:2.9-alpine`). */
  image?: string;
}

/** A running NATS server with JetStream, owned by a test. Dispose with `await using`. */
export interface NatsServer extends AsyncDisposable {
  readonly engine: NatsEngine;
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** `http://127.0.0.1:<monitor port>` (monitoring endpoints: /varz, /jsz, /healthz). */
  readonly monitorUrl: string;
  /** JetStream store directory (for the process engine; inside the container otherwise). */
  readonly storeDir: string;
  /** Server name (`-n`). */
  readonly name: string;
  /**
   * The server's process id on this machine while it runs (process engine; undefined in a
   * container), for reading its CPU time from /proc.
   */
  readonly pid: number | undefined;
  /** Everything the server printed (process engine). */
  output(): string;
  /** True while the server process runs. */
  running(): boolean;
  /**
   * Stops the server (SIGKILL by default, to model a crash; `SIGTERM` for a clean shutdown) and
   * starts it again on the same ports with the same store.
   */
  restart(signal?: NodeJS.Signals): Promise<void>;
  /** Stops the server but keeps its store, so `start()` can bring it back. */
  halt(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Makes the running server read its configuration file (`-c`) again (SIGHUP), and resolves once
   * it says it did: a test changes the file (users, permissions), then reloads.
   */
  reload(): Promise<void>;
  /** Starts a halted server again on the same ports and store. */
  start(): Promise<void>;
  /** Stops the server and deletes its store. Idempotent. */
  stop(): Promise<void>;
}

interface PortsFile {
  nats?: string[];
  monitoring?: string[];
  cluster?: string[];
}

/** Finds the nats-server executable, or throws a clear {@link NatsServerNotFoundError}. */
export function findNatsServer(bin?: string): string {
  const env = testkitEnv();
  const explicit = bin ?? env.natsServerBin;
  const candidates = explicit
    ? [explicit]
    : [...env.path, '/usr/sbin', '/usr/local/bin', '/usr/bin'].map((dir) =>
        join(dir, 'nats-server'),
      );
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new NatsServerNotFoundError(
    explicit
      ? `nats-server binary ${JSON.stringify(explicit)} is missing or not executable`
      : 'no nats-server binary found on PATH or in /usr/sbin, /usr/local/bin; install it ' +
          '(Debian: apt-get install -y nats-server) or set NATS_SERVER_BIN',
  );
}

/** A TCP port free on loopback right now (for cluster routes, which need known ports). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new StartupError('no port');
  return address.port;
}

function portOf(url: string | undefined): number | undefined {
  if (url === undefined) return undefined;
  const port = Number(new URL(url).port);
  return Number.isInteger(port) && port > 0 ? port : undefined;
}

async function readPorts(dir: string, pid: number): Promise<PortsFile | undefined> {
  const files = await readdir(dir);
  const file = files.find((f) => f.endsWith(`_${pid}.ports`));
  if (file === undefined) return undefined;
  try {
    return JSON.parse(await readFile(join(dir, file), 'utf8')) as PortsFile;
  } catch {
    return undefined; // being written
  }
}

/** True when the server's monitoring `/healthz` reports JetStream healthy. */
export async function natsHealthy(monitorUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${monitorUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  } catch {
    return false;
  }
}

/** What one node of a process-engine server needs to (re)start. */
/**
 * A stream's folder `suffix` in a stopped or running server's store
 * (`<account>/streams/<stream>/<suffix>`: `msgs`, `obs/<consumer>`), for tests that put a store
 * back as a crash would leave it.
 */
export async function streamStoreFolder(
  nats: Pick<NatsServer, 'storeDir'>,
  stream: string,
  suffix: string,
): Promise<string> {
  const entries = await readdir(nats.storeDir, { recursive: true });
  const wanted = join('streams', stream, suffix);
  const found = entries.find((e) => e.endsWith(wanted));
  if (found === undefined) throw new Error(`no ${wanted} in the store ${nats.storeDir}`);
  return join(nats.storeDir, found);
}

/**
 * Runs `meanwhile` on `nats`, then puts the stream's messages back as they were before it, with
 * the server stopped in between: what a crash that lost the stream's last writes leaves, while
 * its consumers keep their later state. `meanwhile` closes its connections; resolves with the
 * server running again.
 */
export async function rollBackStreamAround(
  nats: Pick<NatsServer, 'storeDir' | 'halt' | 'start'>,
  stream: string,
  meanwhile: () => Promise<void>,
): Promise<void> {
  await nats.halt('SIGTERM');
  const messages = await streamStoreFolder(nats, stream, 'msgs');
  const before = `${messages}.before`;
  await cp(messages, before, { recursive: true });
  await nats.start();
  await meanwhile();
  await nats.halt('SIGTERM');
  await rm(messages, { recursive: true });
  await cp(before, messages, { recursive: true });
  await rm(before, { recursive: true });
  await nats.start();
}

export interface NodeSpec {
  name: string;
  /** Extra arguments such as cluster routes. */
  args: readonly string[];
}

/** What nats-server logs once it has read its configuration again. */
const RELOADED = 'Reloaded server configuration';

class ProcessNatsServer implements NatsServer {
  readonly engine = 'process' as const;
  #proc: ServiceProcess | undefined;
  #port = -1;
  #monitorPort = -1;
  #stopped = false;
  #lastOutput = '';
  #untrackStore: () => void;

  constructor(
    private readonly bin: string,
    readonly storeDir: string,
    readonly name: string,
    private readonly extraArgs: readonly string[],
    private readonly startTimeout: number,
  ) {
    this.#untrackStore = trackDir(storeDir);
  }

  get port(): number {
    return this.#port;
  }
  get url(): string {
    return `nats://127.0.0.1:${this.#port}`;
  }
  get monitorUrl(): string {
    return `http://127.0.0.1:${this.#monitorPort}`;
  }
  get pid(): number | undefined {
    return this.#proc?.pid;
  }
  output(): string {
    return this.#proc?.output() ?? this.#lastOutput;
  }
  running(): boolean {
    return this.#proc !== undefined;
  }

  /** Spawns the process and waits for the ports file and a healthy /healthz. */
  async start(options: { waitHealthy?: boolean } = {}): Promise<void> {
    if (this.#proc) return;
    const portsDir = join(this.storeDir, 'ports');
    const args = [
      '-a',
      '127.0.0.1',
      '-p',
      String(this.#port),
      '-m',
      String(this.#monitorPort),
      '-js',
      '-sd',
      join(this.storeDir, 'js'),
      '--ports_file_dir',
      portsDir,
      '-n',
      this.name,
      ...this.extraArgs,
    ];
    await rm(portsDir, { recursive: true, force: true });
    await mkdir(portsDir, { recursive: true });
    const proc = await spawnService(this.bin, { args, stopSignal: 'SIGTERM' });
    this.#proc = proc;
    try {
      const ports = await waitFor(
        async () => {
          if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
            throw new StartupError(`nats-server exited while starting:\n${proc.output()}`);
          }
          const p = await readPorts(portsDir, proc.pid);
          return p?.nats?.length && p.monitoring?.length ? p : undefined;
        },
        { timeout: this.startTimeout, interval: 5, description: 'the nats-server ports file' },
      );
      this.#port = portOf(ports.nats?.[0]) ?? this.#port;
      this.#monitorPort = portOf(ports.monitoring?.[0]) ?? this.#monitorPort;
      if (options.waitHealthy ?? true) await this.waitHealthy();
    } catch (err) {
      await this.halt('SIGKILL');
      throw err instanceof StartupError
        ? err
        : new StartupError(`nats-server did not start: ${this.output()}`, { cause: err });
    }
  }

  async waitHealthy(timeoutMs = this.startTimeout): Promise<void> {
    await waitFor(() => natsHealthy(this.monitorUrl), {
      timeout: timeoutMs,
      interval: 10,
      description: `nats-server ${this.name} /healthz`,
    });
  }

  async halt(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    this.#proc = undefined;
    if (signal === 'SIGKILL') proc.kill('SIGKILL');
    await proc.stop();
    this.#lastOutput = proc.output();
  }

  async restart(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.halt(signal);
    await this.start();
  }

  async reload(): Promise<void> {
    const proc = this.#proc;
    if (!proc) throw new StartupError(`nats-server ${this.name} is not running`);
    const reloaded = () => proc.output().split(RELOADED).length - 1;
    const before = reloaded();
    proc.kill('SIGHUP');
    await waitFor(
      () => {
        if (/\[(ERR|FTL)\].*reload/i.test(proc.output())) {
          throw new StartupError(`nats-server could not reload:\n${proc.output().slice(-2000)}`);
        }
        return reloaded() > before;
      },
      { timeout: this.startTimeout, interval: 10, description: 'the nats-server reload' },
    );
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.halt('SIGKILL');
    await rm(this.storeDir, { recursive: true, force: true });
    this.#untrackStore();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Creates (without starting) a process-engine server with a fresh store directory. */
async function newProcessServer(
  options: StartNatsOptions,
  name: string,
  extraArgs: readonly string[],
): Promise<ProcessNatsServer> {
  const bin = findNatsServer(options.bin);
  const storeDir = await mkdtemp(join(tmpdir(), 'plugline-nats-'));
  return new ProcessNatsServer(
    bin,
    storeDir,
    name,
    [...extraArgs, ...(options.args ?? [])],
    options.startTimeout ?? 10_000,
  );
}

function hasBinary(bin?: string): boolean {
  try {
    findNatsServer(bin);
    return true;
  } catch {
    return false;
  }
}

/**
 * Decides which engine `startNats` will use. With `auto`: the local binary when there is one,
 * else Docker when `/_ping` answers within `dockerTimeoutMs`, else throws
 * {@link NatsServerNotFoundError}. Fast when no engine runs (one `stat` of the socket).
 */
export async function chooseEngine(
  engine: NatsEngine | 'auto' = 'auto',
  options: { bin?: string; dockerTimeoutMs?: number } = {},
): Promise<NatsEngine> {
  if (engine === 'process') {
    findNatsServer(options.bin);
    return 'process';
  }
  const docker = engine === 'container' || !hasBinary(options.bin);
  if (!docker) return 'process';
  if (await dockerReachable(options.dockerTimeoutMs ?? 100)) return 'container';
  throw new NatsServerNotFoundError(
    engine === 'container'
      ? 'no Docker engine answers on its socket, so NATS cannot run in a container'
      : 'no nats-server binary found and no Docker engine reachable; install nats-server ' +
          '(Debian: apt-get install -y nats-server) or set NATS_SERVER_BIN',
  );
}

/**
 * Starts a single NATS server with JetStream on a random loopback port, a fresh store directory
 * and a monitoring port, and resolves once JetStream is healthy.
 *
 * @example
 * ```ts
 * await using nats = await startNats();
 * const nc = await connect({ servers: nats.url });
 * ```
 */
export async function startNats(options: StartNatsOptions = {}): Promise<NatsServer> {
  const engine = await chooseEngine(options.engine, options);
  if (engine === 'container') {
    const { startNatsContainer } = await import('./container.js');
    return startNatsContainer(options.image ?? 'nats:2.9-alpine');
  }
  const server = await newProcessServer(options, `plugline-${process.pid}-${Date.now()}`, []);
  await server.start();
  return server;
}

/**
 * How long a cluster node may take to report healthy: one that rejoins after a kill waits for its
 * routes and for contact with the meta leader, which once took over 10 s while the whole test
 * suite ran beside it (the chaos cluster test's restarted node).
 */
const CLUSTER_NODE_HEALTHY_MS = 30_000;

/** A JetStream cluster of process-engine servers on loopback. Dispose with `await using`. */
export interface NatsCluster extends AsyncDisposable {
  readonly servers: readonly NatsServer[];
  /** Client URLs of all nodes (give all of them to the client). */
  readonly urls: readonly string[];
  /** Stops node `i` (SIGKILL by default), keeping its store. */
  stopNode(i: number, signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts a stopped node `i` again on its ports and store, without waiting for it to be healthy
   * (it is once it has rejoined the cluster: call {@link waitHealthy}).
   */
  startNode(i: number): Promise<void>;
  /** Waits until every running node reports JetStream healthy (a meta leader is known). */
  waitHealthy(): Promise<void>;
  /** Name of the current JetStream meta leader, as seen by a running node. */
  metaLeader(): Promise<string | undefined>;
  stop(): Promise<void>;
}

/** Attempts at starting a cluster's nodes when a route port was taken before a node bound it. */
const CLUSTER_PORT_ATTEMPTS = 3;

/**
 * Starts `n` nodes routed to each other. Their route ports are chosen free before any node
 * starts (each node is told the others'), so another process can take one first (seen once in
 * 72 runs of the cluster chaos test): the nodes are then stopped and started on new ports.
 */
async function startClusterNodes(
  n: number,
  options: Omit<StartNatsOptions, 'engine' | 'image'>,
  clusterName: string,
): Promise<ProcessNatsServer[]> {
  for (let attempt = 1; ; attempt++) {
    const clusterPorts = await Promise.all(Array.from({ length: n }, () => freePort()));
    const servers: ProcessNatsServer[] = [];
    for (let i = 0; i < n; i++) {
      const routes = clusterPorts
        .filter((_, j) => j !== i)
        .map((p) => `nats://127.0.0.1:${p}`)
        .join(',');
      servers.push(
        await newProcessServer(options, `${clusterName}-n${i}`, [
          '--cluster_name',
          clusterName,
          '--cluster',
          `nats://127.0.0.1:${clusterPorts[i]}`,
          '--routes',
          routes,
        ]),
      );
    }
    try {
      await Promise.all(servers.map((s) => s.start({ waitHealthy: false })));
      return servers;
    } catch (err) {
      await Promise.all(servers.map((s) => s.stop()));
      if (!portTaken(err) || attempt >= CLUSTER_PORT_ATTEMPTS) throw err;
    }
  }
}

/** True when `err`, or one of its causes, is a node that could not bind its port. */
function portTaken(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e.message.includes('address already in use')) return true;
  }
  return false;
}

/**
 * Starts an `n`-node JetStream cluster (default 3) on loopback and resolves once every node is
 * healthy and a JetStream meta leader is elected.
 */
export async function startNatsCluster(
  n = 3,
  options: Omit<StartNatsOptions, 'engine' | 'image'> = {},
): Promise<NatsCluster> {
  const clusterName = `plugline-${process.pid}-${Date.now()}`;
  const servers = await startClusterNodes(n, options, clusterName);
  const stopAll = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
  };
  const metaLeader = async (): Promise<string | undefined> => {
    for (const s of servers.filter((x) => x.running())) {
      try {
        const res = await fetch(`${s.monitorUrl}/jsz`, { signal: AbortSignal.timeout(1000) });
        const body = (await res.json()) as { meta_cluster?: { leader?: string } };
        if (body.meta_cluster?.leader) return body.meta_cluster.leader;
      } catch {
        // try the next node
      }
    }
    return undefined;
  };
  const waitHealthy = async (): Promise<void> => {
    await Promise.all(
      servers.filter((s) => s.running()).map((s) => s.waitHealthy(CLUSTER_NODE_HEALTHY_MS)),
    );
    await waitFor(metaLeader, { timeout: 15_000, description: 'a JetStream meta leader' });
  };
  try {
    await waitHealthy();
  } catch (err) {
    await stopAll();
    throw err;
  }
  const node = (i: number): ProcessNatsServer => {
    const s = servers[i];
    if (!s) throw new RangeError(`no node ${i} in a cluster of ${n}`);
    return s;
  };
  return {
    servers,
    urls: servers.map((s) => s.url),
    stopNode: (i, signal = 'SIGKILL') => node(i).halt(signal),
    startNode: async (i) => {
      // As at the cluster's first start: a node is healthy only once it has found the others.
      await node(i).start({ waitHealthy: false });
    },
    waitHealthy,
    metaLeader,
    stop: stopAll,
    [Symbol.asyncDispose]: stopAll,
  };
}
