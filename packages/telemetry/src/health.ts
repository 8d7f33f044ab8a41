import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** A named readiness check: true/resolves true when ready. A throw counts as not ready. */
export type HealthCheck = () => boolean | Promise<boolean>;

export interface HealthServerOptions {
  /** Default 0 (a random port; read `port` from the result). */
  port?: number;
  /** Default `127.0.0.1`; use `0.0.0.0` in a pod. */
  host?: string;
  /** Readiness checks, e.g. `{ nats: () => bus.connected(), consumers: () => stage.bound() }`. */
  ready?: Readonly<Record<string, HealthCheck>>;
  /** Liveness checks (default: none, so `/healthz` answers ok while the event loop runs). */
  live?: Readonly<Record<string, HealthCheck>>;
  /** Served on `/metrics`. */
  registry?: Registry;
}

export interface HealthServer extends AsyncDisposable {
  readonly port: number;
  /** `http://<host>:<port>` */
  readonly url: string;
  close(): Promise<void>;
}

async function runChecks(
  checks: Readonly<Record<string, HealthCheck>>,
): Promise<{ ok: boolean; checks: Record<string, boolean> }> {
  const results: Record<string, boolean> = {};
  await Promise.all(
    Object.entries(checks).map(async ([name, check]) => {
      try {
        results[name] = (await check()) === true;
      } catch {
        results[name] = false;
      }
    }),
  );
  return { ok: Object.values(results).every(Boolean), checks: results };
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function handle(
  options: HealthServerOptions,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  if (path === '/healthz' || path === '/readyz') {
    const checks = (path === '/healthz' ? options.live : options.ready) ?? {};
    const result = await runChecks(checks);
    send(res, result.ok ? 200 : 503, 'application/json', JSON.stringify(result));
  } else if (path === '/metrics' && options.registry) {
    send(res, 200, options.registry.contentType, await options.registry.metrics());
  } else {
    send(res, 404, 'text/plain', 'not found\n');
  }
}

/**
 * Serves `/healthz` (liveness), `/readyz` (readiness: e.g. NATS connected, consumers bound) and
 * `/metrics` (Prometheus text format). Answers 200 when every check passes, 503 otherwise, with
 * `{ ok, checks }` as JSON.
 */
export async function startHealthServer(options: HealthServerOptions = {}): Promise<HealthServer> {
  const server = createServer((req, res) => {
    handle(options, req, res).catch((err: unknown) => {
      send(res, 500, 'text/plain', `${String(err)}\n`);
    });
  });
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closed;
  };
  return { port, url: `http://${host}:${port}`, close, [Symbol.asyncDispose]: close };
}
