/**
 * What the simulated API server served, under kube-apiserver's metric names: requests by verb,
 * resource and code (`apiserver_request_total`), and watch events sent to watch clients, each
 * client counted (`apiserver_watch_events_total`, `apiserver_watch_events_sizes`). A request is
 * counted when it is answered, a watch when it ends. The benchmark reads them to say how much
 * API traffic a hotplug costs, which on a real cluster is load on kube-apiserver and etcd.
 */

/** The request's verb as kube-apiserver names it: reads and deletes by what they address. */
export function requestVerb(method: string, named: boolean, watch: boolean): string {
  if (method === 'GET') return watch ? 'WATCH' : named ? 'GET' : 'LIST';
  if (method === 'DELETE') return named ? 'DELETE' : 'DELETECOLLECTION';
  return method;
}

interface Resource {
  group: string;
  version: string;
  resource: string;
}

export class ApiMetrics {
  readonly #requests = new Map<string, number>();
  readonly #watchEvents = new Map<string, { count: number; bytes: number }>();

  request(r: Resource & { verb: string; subresource: string; code: number }): void {
    const key = labels({
      verb: r.verb,
      group: r.group,
      version: r.version,
      resource: r.resource,
      subresource: r.subresource,
      code: String(r.code),
    });
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /** One event line written to one watch client. */
  watchEvent(kind: Omit<Resource, 'resource'> & { kind: string }, bytes: number): void {
    const key = labels({ group: kind.group, version: kind.version, kind: kind.kind });
    const seen = this.#watchEvents.get(key) ?? { count: 0, bytes: 0 };
    seen.count++;
    seen.bytes += bytes;
    this.#watchEvents.set(key, seen);
  }

  /** Watch events sent so far of one kind, over every watch client. */
  watchEventsSent(kind: string): number {
    let sent = 0;
    for (const [key, w] of this.#watchEvents) if (key.includes(`kind="${kind}"`)) sent += w.count;
    return sent;
  }

  /** Prometheus text exposition. */
  text(): string {
    const lines = [
      '# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, version, resource, subresource and HTTP response code.',
      '# TYPE apiserver_request_total counter',
      ...[...this.#requests].map(([key, n]) => `apiserver_request_total{${key}} ${n}`),
      '# HELP apiserver_watch_events_total Number of events sent in watch clients',
      '# TYPE apiserver_watch_events_total counter',
      ...[...this.#watchEvents].map(
        ([key, w]) => `apiserver_watch_events_total{${key}} ${w.count}`,
      ),
      '# HELP apiserver_watch_events_sizes Watch event size distribution in bytes',
      '# TYPE apiserver_watch_events_sizes summary',
      ...[...this.#watchEvents].flatMap(([key, w]) => [
        `apiserver_watch_events_sizes_sum{${key}} ${w.bytes}`,
        `apiserver_watch_events_sizes_count{${key}} ${w.count}`,
      ]),
    ];
    return `${lines.join('\n')}\n`;
  }
}

function labels(values: Record<string, string>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`)
    .join(',');
}
