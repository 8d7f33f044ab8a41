import http from 'node:http';
import https from 'node:https';
import {
  ApiException,
  HttpMethod,
  RequestContext,
  ResponseContext,
  wrapHttpLibrary,
  ServerConfiguration,
  createConfiguration,
  type ApiType,
  type Configuration,
  type HttpLibrary,
  type KubeConfig,
  type SecurityAuthentication,
} from '@kubernetes/client-node';

/**
 * Idle keep-alive sockets are closed after this long. Shorter than the idle timeout of the API
 * server (kube-sim 30 s, kube-apiserver 90 s), so the client never reuses a socket the server is
 * closing at that very moment.
 */
const IDLE_SOCKET_MS = 15_000;

/** The agent options that decide who we talk to and as whom: the same ones share an agent. */
const IDENTITY_KEYS = [
  'ca',
  'cert',
  'key',
  'pfx',
  'passphrase',
  'rejectUnauthorized',
  'servername',
] as const;

type AgentOptions = Record<string, unknown>;

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((v, i) => sameValue(v, b[i]));
  }
  return false;
}

/** The keep-alive agent of one KubeConfig. */
class AgentPool {
  #agent: http.Agent | undefined;
  #identity: AgentOptions | undefined;

  /**
   * The pooled agent that can stand in for `fresh` (the one client-node made for this one
   * request), or `fresh` itself when it is a proxy agent, which we leave alone.
   */
  reuse(fresh: http.Agent | https.Agent): http.Agent | https.Agent {
    const Ctor = fresh.constructor;
    if (Ctor !== http.Agent && Ctor !== https.Agent) return fresh;
    const options = (fresh as unknown as { options: AgentOptions }).options;
    const current = this.#agent;
    if (
      current !== undefined &&
      current.constructor === Ctor &&
      IDENTITY_KEYS.every((k) => sameValue(this.#identity?.[k], options[k]))
    ) {
      return current;
    }
    // First use, or the credentials changed (e.g. an exec plugin rotated the client
    // certificate): new connections from now on; the old agent's idle sockets time out.
    const identity: AgentOptions = {};
    for (const k of IDENTITY_KEYS) if (options[k] !== undefined) identity[k] = options[k];
    const agentOptions: https.AgentOptions = {
      ...identity,
      keepAlive: true,
      timeout: IDLE_SOCKET_MS,
    };
    const agent =
      Ctor === https.Agent ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.#agent = agent;
    this.#identity = identity;
    return agent;
  }

  destroy(): void {
    this.#agent?.destroy();
    this.#agent = undefined;
    this.#identity = undefined;
  }
}

const pools = new WeakMap<KubeConfig, AgentPool>();

function poolOf(kc: KubeConfig): AgentPool {
  let pool = pools.get(kc);
  if (pool === undefined) pools.set(kc, (pool = new AgentPool()));
  return pool;
}

/**
 * Authenticates like the KubeConfig itself (tokens, client certificates, exec plugins), then
 * swaps the agent client-node made for this one request (no keep-alive: a new TCP connection
 * per request) for the KubeConfig's pooled keep-alive agent.
 */
class KeepAliveAuth implements SecurityAuthentication {
  readonly #kc: KubeConfig;

  constructor(kc: KubeConfig) {
    this.#kc = kc;
  }

  getName(): string {
    return this.#kc.getName();
  }

  async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await this.#kc.applySecurityAuthentication(context);
    const fresh = context.getAgent();
    if (fresh !== undefined) context.setAgent(poolOf(this.#kc).reuse(fresh));
  }
}

/**
 * `kc.makeApiClient(Api)`, with connections reused: every API client made from the same
 * KubeConfig shares one keep-alive agent. Idle sockets do not keep the process alive (Node
 * unrefs them) and close after {@link IDLE_SOCKET_MS}; {@link closeKubeConnections} closes them
 * at once. Watches keep their own connection (client-node's `Watch`), as they must.
 */
export function makeApiClient<T extends ApiType>(
  kc: KubeConfig,
  Api: new (config: Configuration) => T,
): T {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const config = createConfiguration({
    baseServer: new ServerConfiguration(cluster.server, {}),
    authMethods: { default: new KeepAliveAuth(kc) },
    httpApi: nodeHttpLibrary,
  });
  return new Api(config);
}

/** One request of {@link JsonRequester}. */
export interface JsonRequest {
  method: 'DELETE' | 'PATCH' | 'POST';
  /** From the server root, e.g. `/api/v1/namespaces/ns/events`. */
  path: string;
  query?: Record<string, string | number | undefined>;
  body: unknown;
  /** Default `application/json`. */
  contentType?: string;
}

/** Sends a request and resolves with the parsed JSON answer; rejects like client-node does. */
export type JsonRequester = (request: JsonRequest) => Promise<unknown>;

/**
 * Requests with plain JSON in and out, authenticated and pooled like {@link makeApiClient}'s.
 * For hot calls whose answer is not needed typed: client-node's generated APIs walk their type
 * model over every body and answer (`ObjectSerializer`), which showed in CPU profiles (issue 10).
 * A non-2xx answer rejects with client-node's `ApiException` (body: the answer's text), so
 * `mapKubeError` maps it as it maps the generated APIs' errors.
 */
export function makeJsonRequester(kc: KubeConfig): JsonRequester {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const server = cluster.server.replace(/\/+$/, '');
  const auth = new KeepAliveAuth(kc);
  return async (request) => {
    const context = new RequestContext(`${server}${request.path}`, HttpMethod[request.method]);
    for (const [name, value] of Object.entries(request.query ?? {})) {
      if (value !== undefined) context.setQueryParam(name, String(value));
    }
    context.setHeaderParam('Accept', 'application/json');
    context.setHeaderParam('Content-Type', request.contentType ?? 'application/json');
    context.setBody(JSON.stringify(request.body));
    await auth.applySecurityAuthentication(context);
    const answer = await send(context);
    const { code, headers } = answer;
    const text = answer.body.toString('utf8');
    if (code < 200 || code > 299) {
      throw new ApiException(code, `HTTP-Code: ${code}`, text, headers);
    }
    return text === '' ? undefined : (JSON.parse(text) as unknown);
  };
}

interface Answer {
  code: number;
  body: Buffer;
  headers: Record<string, string>;
}

/**
 * Sends an authenticated request with Node's own client, through the agent authentication chose
 * (the pooled keep-alive agent, with the KubeConfig's TLS identity). client-node's default
 * (node-fetch: its headers, body streams and promise plumbing) was ~5 % of the spec-watcher's
 * busy time in the throughput profile, for status patches a few hundred bytes long. Unlike
 * node-fetch it asks for no gzip: kube-apiserver compresses only answers over 128 KiB (an
 * informer's first list), which then come uncompressed.
 */
function send(context: RequestContext): Promise<Answer> {
  const url = new URL(context.getUrl());
  const body = context.getBody();
  if (body !== undefined && typeof body !== 'string') {
    return Promise.reject(new TypeError('only JSON text bodies are sent'));
  }
  const payload = body ?? '';
  const headers = { ...context.getHeaders(), 'Content-Length': String(Buffer.byteLength(payload)) };
  const agent = context.getAgent();
  const signal = context.getSignal();
  const transport = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = transport.request(
      url,
      {
        method: context.getHttpMethod(),
        headers,
        ...(agent === undefined ? {} : { agent }),
        ...(signal === undefined ? {} : { signal }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            code: res.statusCode ?? 0,
            body: Buffer.concat(chunks),
            headers: flatHeaders(res.headers),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** The generated APIs' transport: {@link send}. */
const nodeHttpLibrary: HttpLibrary = wrapHttpLibrary({
  async send(context) {
    const { code, body, headers } = await send(context);
    return new ResponseContext(code, headers, {
      text: () => Promise.resolve(body.toString('utf8')),
      binary: () => Promise.resolve(body),
    });
  },
});

function flatHeaders(headers: http.IncomingHttpHeaders): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}

/**
 * Destroys the pooled connections of a KubeConfig (a request still in flight on one fails);
 * later requests open new ones. For a stop after the last request, e.g. in tests that count
 * handles; the process exits without it.
 */
export function closeKubeConnections(kc: KubeConfig): void {
  pools.get(kc)?.destroy();
}
