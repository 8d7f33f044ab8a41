/**
 * Reading the services' own `/metrics` (prom-client text): what each process did, as it counts
 * it, beside what /proc says it cost.
 */
import type { StackService } from '@plugline/cli';
import { WorkStep } from '@plugline/telemetry';
import { round } from './stats.js';

/** Each service's `/metrics` text by its id; a service that did not answer is left out. */
export async function scrapeMetrics(
  services: readonly StackService[],
): Promise<Record<string, string>> {
  const rows = await Promise.all(
    services.map(async (s): Promise<[string, string] | undefined> => {
      try {
        const res = await fetch(`${s.healthUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
        return [s.id, await res.text()];
      } catch {
        return undefined;
      }
    }),
  );
  return Object.fromEntries(rows.filter((r) => r !== undefined));
}

/** The value of an unlabelled sample, or NaN when absent. */
export function sampleOf(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m === null ? Number.NaN : Number(m[1]);
}

/** A labelled metric's samples summed per value of one label (over the other labels). */
function sumByLabel(text: string, sample: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(new RegExp(`^${sample}\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
    const key = new RegExp(`${label}="([^"]*)"`).exec(m[1] ?? '')?.[1] ?? 'unknown';
    out[key] = (out[key] ?? 0) + Number(m[2]);
  }
  return out;
}

/** `plugline_messages_handled_total` summed per outcome (over stages). */
export function handledByOutcome(text: string): Record<string, number> {
  return sumByLabel(text, 'plugline_messages_handled_total', 'outcome');
}

/** `plugline_work_step_seconds` summed over stages: seconds and observations per step. */
function workSteps(text: string): Record<string, { seconds: number; count: number }> {
  const seconds = sumByLabel(text, 'plugline_work_step_seconds_sum', 'step');
  const counts = sumByLabel(text, 'plugline_work_step_seconds_count', 'step');
  return Object.fromEntries(
    Object.keys(counts).map((step) => [
      step,
      { seconds: seconds[step] ?? 0, count: counts[step] ?? 0 },
    ]),
  );
}

/**
 * Where each service's stage runtime spent an operation: work items run per operation, and the
 * milliseconds per operation in each step (`plugline_work_step_seconds`), summed over the
 * scrapes' intervals (each a `[before, after]` pair).
 */
export function stepsPerOperation(
  intervals: readonly (readonly [Record<string, string>, Record<string, string>])[],
  ops: number,
): Record<string, Record<string, number>> {
  const totals: Record<string, Record<string, { seconds: number; count: number }>> = {};
  for (const [before, after] of intervals) {
    for (const [id, text] of Object.entries(after)) {
      const start = workSteps(before[id] ?? '');
      const mine = (totals[id] ??= {});
      for (const [step, end] of Object.entries(workSteps(text))) {
        const row = (mine[step] ??= { seconds: 0, count: 0 });
        row.seconds += end.seconds - (start[step]?.seconds ?? 0);
        row.count += end.count - (start[step]?.count ?? 0);
      }
    }
  }
  const per = (n: number): number => round(n / Math.max(1, ops));
  return Object.fromEntries(
    Object.entries(totals)
      .filter(([, steps]) => (steps.queued?.count ?? 0) > 0)
      .map(([id, steps]) => [
        id,
        {
          items: per(steps.queued?.count ?? 0),
          ...Object.fromEntries(
            Object.values(WorkStep).map((step) => [
              `${step}Ms`,
              per((steps[step]?.seconds ?? 0) * 1000),
            ]),
          ),
        },
      ]),
  );
}

/** The NATS server's message and byte counters (`/varz`), or undefined without a monitor. */
export async function scrapeNats(
  monitorUrl: string | undefined,
): Promise<NatsCounters | undefined> {
  if (monitorUrl === undefined) return undefined;
  const res = await fetch(`${monitorUrl}/varz`, { signal: AbortSignal.timeout(10_000) });
  const varz = (await res.json()) as Record<string, unknown>;
  const count = (key: string): number => (typeof varz[key] === 'number' ? varz[key] : 0);
  return {
    'messages in': count('in_msgs'),
    'messages out': count('out_msgs'),
    'KiB in': count('in_bytes') / 1024,
    'KiB out': count('out_bytes') / 1024,
  };
}

export type NatsCounters = Record<'messages in' | 'messages out' | 'KiB in' | 'KiB out', number>;

/**
 * The NATS server's traffic per operation between consecutive scrapes (plug, then unplug): what
 * the services and the bench sent it (in) and it delivered (out); undefined without a monitor.
 */
export function natsPerOperation(
  scrapes: readonly [NatsCounters | undefined, NatsCounters | undefined, NatsCounters | undefined],
  ops: number,
): Record<string, { plug: number; unplug: number }> | undefined {
  const [n0, n1, n2] = scrapes;
  if (n0 === undefined || n1 === undefined || n2 === undefined) return undefined;
  const between = (before: NatsCounters, after: NatsCounters) =>
    new Map(
      (Object.keys(after) as (keyof NatsCounters)[]).map((k) => [
        k,
        round((after[k] - before[k]) / Math.max(1, ops)),
      ]),
    );
  return plugUnplugRows(between(n0, n1), between(n1, n2));
}

/** Rows of per-operation figures of a plug interval and an unplug interval, by name, sorted. */
function plugUnplugRows(
  plug: ReadonlyMap<string, number>,
  unplug: ReadonlyMap<string, number>,
): Record<string, { plug: number; unplug: number }> {
  const rows = [...new Set([...plug.keys(), ...unplug.keys()])].sort();
  return Object.fromEntries(
    rows.map((k) => [k, { plug: plug.get(k) ?? 0, unplug: unplug.get(k) ?? 0 }]),
  );
}

/** kube-sim's `/metrics` text (kube-apiserver's request and watch-event counters). */
export async function scrapeApiServer(apiUrl: string): Promise<string> {
  const res = await fetch(`${apiUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  return res.text();
}

const WATCH_BYTES = 'watch event bytes';

/**
 * The API traffic in kube-sim's counters: requests by `VERB resource[/subresource]` (over
 * groups; the failed ones apart, with their code), and events sent to watch clients by
 * `watch events Kind` (each client counted), with their total size.
 */
function apiTraffic(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  const label = (labels: string, name: string): string =>
    new RegExp(`${name}="([^"]*)"`).exec(labels)?.[1] ?? '';
  const add = (key: string, n: number): void => {
    out[key] = (out[key] ?? 0) + n;
  };
  for (const m of text.matchAll(/^(apiserver_\w+)\{([^}]*)\} (\S+)$/gm)) {
    const [, name, labels = '', value] = m;
    const n = Number(value);
    if (name === 'apiserver_request_total') {
      const sub = label(labels, 'subresource');
      const code = label(labels, 'code');
      // A failed request (a conflict, a miss) is a row of its own: it is work redone.
      const failed = code !== '' && !code.startsWith('2') ? ` (${code})` : '';
      add(
        `${label(labels, 'verb')} ${label(labels, 'resource')}${sub ? `/${sub}` : ''}${failed}`,
        n,
      );
    } else if (name === 'apiserver_watch_events_total') {
      add(`watch events ${label(labels, 'kind')}`, n);
    } else if (name === 'apiserver_watch_events_sizes_sum') {
      add(WATCH_BYTES, n);
    }
  }
  return out;
}

/** The traffic between two scrapes (`after` minus `before`), summed over the intervals given. */
function trafficOver(intervals: readonly (readonly [string, string])[]): Record<string, number> {
  const total: Record<string, number> = {};
  for (const [before, after] of intervals) {
    const [b, a] = [apiTraffic(before), apiTraffic(after)];
    for (const k of Object.keys(a)) total[k] = (total[k] ?? 0) + (a[k] ?? 0) - (b[k] ?? 0);
  }
  return total;
}

/**
 * Traffic per operation, by its row name: watches themselves (long-running) left out, watch
 * bytes in KiB.
 */
function perOperation(traffic: Record<string, number>, ops: number): Map<string, number> {
  const rows = new Map<string, number>();
  for (const k of Object.keys(traffic).sort()) {
    if (k.startsWith('WATCH ')) continue;
    const n = (traffic[k] ?? 0) / Math.max(1, ops);
    rows.set(k === WATCH_BYTES ? 'watch event KiB' : k, round(k === WATCH_BYTES ? n / 1024 : n));
  }
  return rows;
}

/**
 * API traffic per plug + unplug pair over intervals of scrapes (`[before, after]` each: the
 * sequential rounds, whose floor operations in between are left out), by request kind.
 */
export function apiPerPair(
  intervals: readonly (readonly [string, string])[],
  pairs: number,
): Record<string, number> {
  return Object.fromEntries(
    [...perOperation(trafficOver(intervals), pairs)].filter(([, n]) => n > 0),
  );
}

/**
 * API traffic per operation between consecutive scrapes (`[start, between, end]`: plug, then
 * unplug), by request kind. Rows with no traffic in either direction are dropped.
 */
export function apiPerOperation(
  scrapes: readonly [string, string, string],
  ops: number,
): Record<string, { plug: number; unplug: number }> {
  const [t0, t1, t2] = scrapes;
  const rows = plugUnplugRows(
    perOperation(trafficOver([[t0, t1]]), ops),
    perOperation(trafficOver([[t1, t2]]), ops),
  );
  return Object.fromEntries(Object.entries(rows).filter(([, v]) => v.plug > 0 || v.unplug > 0));
}
