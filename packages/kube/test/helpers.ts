import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import type { VirtualMachineInstance } from '@plugline/contracts';
import { pino, type Logger } from 'pino';

/** A pino logger writing JSON lines into memory (no module mocks). */
export function memoryLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const lines = () =>
    chunks
      .join('')
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, lines };
}

/** A KubeConfig for an API server URL without credentials. */
export function kubeConfigFor(server: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'sim', server, skipTLSVerify: true }],
    users: [{ name: 'sim' }],
    contexts: [{ name: 'sim', cluster: 'sim', user: 'sim' }],
    currentContext: 'sim',
  });
  return kc;
}

/** A long random DNS-1123 name with a prefix. */
export function randomName(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** Creates a fresh namespace and returns its name. */
export async function createNamespace(kc: KubeConfig): Promise<string> {
  const name = randomName('ns');
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}

/** A minimal VMI that KubeVirt's schema accepts. */
export function vmiManifest(namespace: string, name: string): VirtualMachineInstance {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: { name, namespace, labels: { app: 'kube-test' } },
    spec: { domain: { devices: {} } },
  };
}

/** Creates a VMI through the API and returns it as stored. */
export async function createVmi(
  kc: KubeConfig,
  namespace: string,
  name: string,
): Promise<VirtualMachineInstance> {
  return (await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    group: 'kubevirt.io',
    version: 'v1',
    plural: 'virtualmachineinstances',
    namespace,
    body: vmiManifest(namespace, name),
  })) as VirtualMachineInstance;
}

/** A pod manifest with one container. */
export function podManifest(name: string, labels: Record<string, string> = {}) {
  return {
    metadata: { name, labels },
    spec: { containers: [{ name: 'c', image: 'registry.invalid/pause:1' }] },
  };
}

/**
 * A TCP proxy in front of the API server that a test can cut: `cut()` resets every open
 * connection and every new one until `heal()`. Lets tests break watches and lists for real.
 */
export class CuttableProxy {
  #server: Server;
  #sockets = new Set<Socket>();
  #cut = false;
  /** How many connections were refused while cut. */
  refused = 0;
  /** How many connections were accepted and passed on. */
  accepted = 0;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(target: string): Promise<{ proxy: CuttableProxy; url: string }> {
    const { hostname, port } = new URL(target);
    const server = createServer();
    const proxy = new CuttableProxy(server);
    server.on('connection', (client) => proxy.#accept(client, hostname, Number(port)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no proxy address');
    return { proxy, url: `http://127.0.0.1:${address.port}` };
  }

  #accept(client: Socket, host: string, port: number): void {
    if (this.#cut) {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    this.accepted++;
    const upstream = connect(port, host);
    for (const s of [client, upstream]) {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Resets all connections and refuses new ones. */
  cut(): void {
    this.#cut = true;
    this.reset();
  }

  /** Resets all connections (as `ss -K` does), accepting new ones. */
  reset(): void {
    for (const s of this.#sockets) {
      try {
        s.resetAndDestroy();
      } catch {
        s.destroy();
      }
    }
  }

  /** Accepts connections again. */
  heal(): void {
    this.#cut = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
