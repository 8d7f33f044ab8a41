import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { parse as parseYaml } from 'yaml';
import { ApiMetrics, requestVerb } from './api-metrics.js';
import { ApiError, StatusReason, badRequest } from './errors.js';
import { RESOURCE_TYPES, apiVersionOf, findType } from './resources.js';
import type { KubeObject, ResourceType } from './resources.js';
import { allOf, parseFieldSelector, parseLabelSelector } from './selectors.js';
import type { DeleteOptions, StoredEvent, Store } from './store.js';
import { PatchType } from './store.js';
import { toTable } from './tables.js';

const MAX_BODY = 16 * 1024 * 1024;
const SIM_VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.0-kube-sim',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2025-01-01T00:00:00Z',
  goVersion: 'go1.23',
  compiler: 'gc',
  platform: 'linux/amd64',
};

interface Route {
  type: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
  watch: boolean;
}

export interface ApiServerOptions {
  store: Store;
  logger: Logger;
  /** How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK. */
  bookmarkIntervalMs?: number;
}

type Json = Record<string, unknown>;

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

let groupVersionsMemo: ReadonlyMap<string, ReadonlySet<string>> | undefined;

/** The API groups and their versions (fixed: computed once, not on every request). */
function groupVersions(): ReadonlyMap<string, ReadonlySet<string>> {
  groupVersionsMemo ??= collectGroupVersions();
  return groupVersionsMemo;
}

function collectGroupVersions(): Map<string, Set<string>> {
  const groups = new Map<string, Set<string>>();
  for (const t of RESOURCE_TYPES) {
    if (!t.group) continue;
    if (!groups.has(t.group)) groups.set(t.group, new Set());
    groups.get(t.group)!.add(t.version);
  }
  return groups;
}

function apiGroup(group: string, versions: ReadonlySet<string>): Json {
  const list = [...versions].map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { name: group, versions: list, preferredVersion: list[0] };
}

function resourceList(group: string, version: string): Json | undefined {
  const types = RESOURCE_TYPES.filter((t) => t.group === group && t.version === version);
  if (types.length === 0) return undefined;
  const resources: Json[] = [];
  for (const t of types) {
    const entry: Json = {
      name: t.plural,
      singularName: t.singular,
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
      shortNames: t.shortNames,
    };
    if (t.categories) entry.categories = t.categories;
    resources.push(entry);
    for (const sub of t.subresources) {
      resources.push({
        name: `${t.plural}/${sub}`,
        singularName: '',
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: ['get', 'patch', 'update'],
      });
    }
  }
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: group ? `${group}/${version}` : version,
    resources,
  };
}

function groupVersionPath(group: string, version: string): string {
  return group ? `apis/${group}/${version}` : `api/${version}`;
}

/**
 * A minimal OpenAPI v3 discovery: enough for kubectl to see that every PATCH accepts
 * `fieldValidation` (server-side validation), so it needs no client-side schema download.
 */
function openApiV3Root(): Json {
  const paths: Json = {};
  for (const t of RESOURCE_TYPES) {
    const gv = groupVersionPath(t.group, t.version);
    paths[gv] = { serverRelativeURL: `/openapi/v3/${gv}?hash=kube-sim` };
  }
  return { paths };
}

function openApiV3Doc(gv: string): Json | undefined {
  const types = RESOURCE_TYPES.filter((t) => groupVersionPath(t.group, t.version) === gv);
  if (types.length === 0) return undefined;
  const paths: Json = {};
  for (const t of types) {
    const base = `/${gv}${t.namespaced ? '/namespaces/{namespace}' : ''}/${t.plural}/{name}`;
    paths[base] = {
      patch: {
        'x-kubernetes-group-version-kind': { group: t.group, version: t.version, kind: t.kind },
        parameters: [
          { name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } },
          { name: 'fieldManager', in: 'query', schema: { type: 'string', uniqueItems: true } },
          { name: 'dryRun', in: 'query', schema: { type: 'string', uniqueItems: true } },
        ],
        responses: { '200': { description: 'OK' } },
      },
    };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: SIM_VERSION.gitVersion },
    paths,
    components: { schemas: {} },
  };
}

/** Maps a URL path to a resource route, or undefined when it is not one. */
export function parseRoute(pathname: string): Route | undefined {
  const segs = pathname
    .split('/')
    .filter((s) => s.length > 0)
    .map(decodeURIComponent);
  let group = '';
  let version: string;
  let rest: string[];
  if (segs[0] === 'api' && segs.length >= 3) {
    version = segs[1]!;
    rest = segs.slice(2);
  } else if (segs[0] === 'apis' && segs.length >= 4) {
    group = segs[1]!;
    version = segs[2]!;
    rest = segs.slice(3);
  } else return undefined;
  let watch = false;
  if (rest[0] === 'watch') {
    watch = true;
    rest = rest.slice(1);
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    const inner = findType(group, version, rest[2]!);
    if (inner?.namespaced) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
  }
  const type = findType(group, version, rest[0] ?? '');
  if (!type || rest.length > 3) return undefined;
  if (rest[2] !== undefined && !type.subresources.includes(rest[2])) return undefined;
  const route: Route = { type, watch };
  if (namespace) route.namespace = namespace;
  if (rest[1]) route.name = rest[1];
  if (rest[2]) route.subresource = rest[2];
  return route;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > MAX_BODY)
      throw new ApiError(413, StatusReason.BadRequest, 'request entity too large');
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseBody(text: string, contentType: string): unknown {
  if (!text) throw badRequest('the request body is empty');
  try {
    if (contentType.includes('yaml')) return parseYaml(text) as unknown;
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ApiError(
      400,
      StatusReason.BadRequest,
      `the body of the request could not be decoded: ${String(err)}`,
      undefined,
      { cause: err },
    );
  }
}

function intParam(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw badRequest(`invalid ${name} "${v}"`);
  return n;
}

function wantsTable(req: IncomingMessage): boolean {
  return (req.headers.accept ?? '').includes('as=Table');
}

/** The HTTP face of the simulated API server: discovery, REST verbs and streaming watch. */
export class ApiServer {
  private readonly server: Server;
  private readonly store: Store;
  private readonly log: Logger;
  private readonly bookmarkMs: number;
  private readonly openWatches = new Set<() => void>();
  /** Requests served and watch events sent (`/metrics`). */
  readonly metrics = new ApiMetrics();

  constructor(opts: ApiServerOptions) {
    this.store = opts.store;
    this.log = opts.logger;
    this.bookmarkMs = opts.bookmarkIntervalMs ?? 1000;
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.server.keepAliveTimeout = 30_000;
  }

  async listen(host = '127.0.0.1', port = 0): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    const addr = this.server.address() as AddressInfo;
    return `http://${host}:${addr.port}`;
  }

  async close(): Promise<void> {
    for (const end of [...this.openWatches]) end();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private fail(res: ServerResponse, err: unknown): void {
    const apiErr =
      err instanceof ApiError
        ? err
        : new ApiError(
            500,
            StatusReason.InternalError,
            `internal error: ${String(err)}`,
            undefined,
            {
              cause: err,
            },
          );
    if (apiErr.code >= 500) this.log.error({ err }, 'request failed');
    if (res.headersSent) {
      res.end();
      return;
    }
    send(res, apiErr.code, apiErr.toStatus());
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://sim');
    this.log.debug({ method: req.method, url: req.url }, 'request');
    if (this.discovery(url.pathname, res)) return;
    const route = parseRoute(url.pathname);
    if (!route) {
      send(
        res,
        404,
        new ApiError(
          404,
          StatusReason.NotFound,
          'the server could not find the requested resource',
        ).toStatus(),
      );
      return;
    }
    const q = url.searchParams;
    const watch = route.watch || q.get('watch') === 'true' || q.get('watch') === '1';
    const counted = {
      verb: requestVerb(req.method ?? 'GET', route.name !== undefined, watch),
      group: route.type.group,
      version: route.type.version,
      resource: route.type.plural,
      subresource: route.subresource ?? '',
    };
    res.once('close', () => this.metrics.request({ ...counted, code: res.statusCode }));
    await this.resource(route, q, req, res);
  }

  private discovery(path: string, res: ServerResponse): boolean {
    const groups = groupVersions();
    const p = path.replace(/\/$/, '') || '/';
    if (p === '/version') send(res, 200, SIM_VERSION);
    else if (p === '/metrics') {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
      res.end(this.metrics.text());
    } else if (p === '/healthz' || p === '/readyz' || p === '/livez') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('ok');
    } else if (p === '/openapi/v3') {
      send(res, 200, openApiV3Root());
    } else if (p.startsWith('/openapi/v3/')) {
      const doc = openApiV3Doc(p.slice('/openapi/v3/'.length));
      if (!doc) return false;
      send(res, 200, doc);
    } else if (p === '/api') {
      send(res, 200, {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }],
      });
    } else if (p === '/apis') {
      send(res, 200, {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: [...groups].map(([g, v]) => apiGroup(g, v)),
      });
    } else {
      const m = /^\/(?:api\/(v1)|apis\/([^/]+)(?:\/([^/]+))?)$/.exec(p);
      if (!m) return false;
      if (m[1]) send(res, 200, resourceList('', m[1]));
      else if (m[3] === undefined) {
        const versions = groups.get(m[2]!);
        if (!versions) return false;
        send(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...apiGroup(m[2]!, versions) });
      } else {
        const list = resourceList(m[2]!, m[3]);
        if (!list) return false;
        send(res, 200, list);
      }
    }
    return true;
  }

  private async resource(
    route: Route,
    q: URLSearchParams,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    const { type, name } = route;
    const method = req.method ?? 'GET';
    const dryRun = q.getAll('dryRun').includes('All');
    const ns = route.namespace;
    const writeOpts = { namespace: ns, subresource: route.subresource, dryRun };
    if (method === 'GET') {
      this.read(route, q, req, res);
      return;
    }
    if (method === 'POST' && !name) {
      const body = parseBody(await readBody(req), req.headers['content-type'] ?? '');
      send(res, 201, this.store.create(type, body as KubeObject, writeOpts));
    } else if (method === 'PUT' && name) {
      const body = parseBody(await readBody(req), req.headers['content-type'] ?? '');
      send(res, 200, this.store.update(type, name, body as KubeObject, writeOpts));
    } else if (method === 'PATCH' && name) {
      const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
      const body = parseBody(await readBody(req), ct);
      const existed = this.store.peek(type, ns, name) !== undefined;
      const obj = this.store.patch(type, name, ct, body, writeOpts);
      send(res, existed || ct !== PatchType.Apply ? 200 : 201, obj);
    } else if (method === 'DELETE') {
      const text = await readBody(req);
      const opts = this.deleteOptions(q, text, dryRun);
      if (name) send(res, 200, this.store.delete(type, ns, name, opts));
      else this.deleteCollection(route, q, opts, res);
    } else {
      throw new ApiError(
        405,
        StatusReason.MethodNotAllowed,
        `the server does not allow this method on the requested resource`,
      );
    }
  }

  private deleteOptions(q: URLSearchParams, text: string, dryRun: boolean): DeleteOptions {
    const body = (text ? parseBody(text, 'application/json') : {}) as DeleteOptions & {
      orphanDependents?: boolean;
    };
    const opts: DeleteOptions = {
      dryRun:
        dryRun || (body.dryRun as unknown as string[] | undefined)?.includes?.('All') === true,
    };
    const grace = intParam(q, 'gracePeriodSeconds') ?? body.gracePeriodSeconds;
    if (grace !== undefined) opts.gracePeriodSeconds = grace;
    const policy = q.get('propagationPolicy') ?? body.propagationPolicy;
    if (policy) opts.propagationPolicy = policy as DeleteOptions['propagationPolicy'];
    if (q.get('orphanDependents') === 'true' || body.orphanDependents === true) {
      opts.propagationPolicy = 'Orphan';
    }
    if (body.preconditions) opts.preconditions = body.preconditions;
    return opts;
  }

  private deleteCollection(
    route: Route,
    q: URLSearchParams,
    opts: DeleteOptions,
    res: ServerResponse,
  ) {
    const match = allOf(
      parseLabelSelector(q.get('labelSelector')),
      parseFieldSelector(q.get('fieldSelector')),
    );
    const listed = this.store.list(route.type, { namespace: route.namespace, match });
    const items = listed.items.map((o) =>
      this.store.delete(route.type, o.metadata?.namespace, o.metadata!.name!, opts),
    );
    send(res, 200, this.listBody(route.type, items, this.store.resourceVersion));
  }

  private listBody(
    type: ResourceType,
    items: KubeObject[],
    rv: string,
    cont?: string,
    remaining?: number,
  ): Json {
    const metadata: Json = { resourceVersion: rv };
    if (cont) metadata.continue = cont;
    if (remaining !== undefined) metadata.remainingItemCount = remaining;
    return { kind: `${type.kind}List`, apiVersion: apiVersionOf(type), metadata, items };
  }

  private read(route: Route, q: URLSearchParams, req: IncomingMessage, res: ServerResponse): void {
    const { type, name } = route;
    const watch = route.watch || q.get('watch') === 'true' || q.get('watch') === '1';
    const table = wantsTable(req);
    const includeObject = q.get('includeObject') ?? 'Metadata';
    if (name && !watch) {
      const obj = this.store.get(type, route.namespace, name);
      if (table) {
        send(
          res,
          200,
          toTable(type, [obj], {
            includeObject,
            resourceVersion: obj.metadata!.resourceVersion!,
            withColumns: true,
          }),
        );
      } else send(res, 200, obj);
      return;
    }
    const nameSel = name ? parseFieldSelector(`metadata.name=${name}`) : undefined;
    const match = allOf(
      parseLabelSelector(q.get('labelSelector')),
      parseFieldSelector(q.get('fieldSelector')),
      nameSel,
    );
    if (watch) {
      this.serveWatch(route, q, match, res, table ? includeObject : undefined);
      return;
    }
    const limit = intParam(q, 'limit');
    const listed = this.store.list(type, {
      namespace: route.namespace,
      match,
      limit: limit && limit > 0 ? limit : undefined,
      continueToken: q.get('continue') ?? undefined,
    });
    if (table) {
      const t = toTable(type, listed.items, {
        includeObject,
        resourceVersion: listed.resourceVersion,
        withColumns: true,
      });
      const meta = t.metadata as Json;
      if (listed.continueToken) meta.continue = listed.continueToken;
      send(res, 200, t);
      return;
    }
    send(
      res,
      200,
      this.listBody(
        type,
        listed.items,
        listed.resourceVersion,
        listed.continueToken,
        listed.remaining,
      ),
    );
  }

  private serveWatch(
    route: Route,
    q: URLSearchParams,
    match: ReturnType<typeof allOf>,
    res: ServerResponse,
    tableInclude: string | undefined,
  ): void {
    const initialEvents = q.get('sendInitialEvents') === 'true';
    const rv = initialEvents ? '' : (q.get('resourceVersion') ?? '');
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Transfer-Encoding': 'chunked',
      'Cache-Control': 'no-cache, private',
    });
    res.socket?.setNoDelay(true);
    res.flushHeaders();
    let pending: string[] = [];
    let scheduled = false;
    let ended = false;
    let firstTable = true;
    const flush = () => {
      scheduled = false;
      if (ended || pending.length === 0) return;
      const chunk = pending.join('');
      pending = [];
      res.write(chunk);
    };
    const push = (line: string) => {
      pending.push(line);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    };
    const lineOf = (e: StoredEvent): string => {
      if (tableInclude === undefined) {
        return (e.line ??= `${JSON.stringify({ type: e.type, object: e.object })}\n`);
      }
      const object = toTable(route.type, [e.object], {
        includeObject: tableInclude,
        resourceVersion: String(e.object.metadata?.resourceVersion ?? ''),
        withColumns: firstTable,
      });
      firstTable = false;
      return `${JSON.stringify({ type: e.type, object })}\n`;
    };
    const timers: NodeJS.Timeout[] = [];
    let handle: { close(): void } | undefined;
    const end = () => {
      if (ended) return;
      flush();
      ended = true;
      handle?.close();
      timers.forEach((t) => clearTimeout(t));
      this.openWatches.delete(end);
      res.end();
    };
    this.openWatches.add(end);
    res.on('close', end);
    const bookmark = (annotations?: Record<string, string>) =>
      push(
        `${JSON.stringify({
          type: 'BOOKMARK',
          object: {
            kind: route.type.kind,
            apiVersion: apiVersionOf(route.type),
            metadata: {
              resourceVersion: this.store.resourceVersion,
              ...(annotations ? { annotations } : {}),
            },
          },
        })}\n`,
      );
    try {
      handle = this.store.watch(
        route.type,
        { namespace: route.namespace, match, resourceVersion: rv },
        {
          event: (e) => {
            const line = lineOf(e);
            this.metrics.watchEvent(route.type, Buffer.byteLength(line));
            push(line);
          },
          closed: end,
          droppable: true,
        },
      );
    } catch (err) {
      const status =
        err instanceof ApiError
          ? err.toStatus()
          : new ApiError(500, StatusReason.InternalError, String(err)).toStatus();
      push(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
      end();
      return;
    }
    const bookmarks = q.get('allowWatchBookmarks') === 'true';
    if (initialEvents && bookmarks) bookmark({ 'k8s.io/initial-events-end': 'true' });
    if (bookmarks) timers.push(setInterval(() => bookmark(), this.bookmarkMs));
    const timeout = intParam(q, 'timeoutSeconds');
    if (timeout !== undefined && timeout > 0) timers.push(setTimeout(end, timeout * 1000));
  }
}
