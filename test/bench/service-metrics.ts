/**
 * Reading the services' own `/metrics` (prom-client text): what each process did, as it counts
 * it, beside what /proc says it cost.
 */
import type { StackService } from '@plugline/cli';
import { WorkStep } from '@plugline/telemetry';

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

/** `plugline_messages_handled_total` summed per outcome (over stages). */
export function handledByOutcome(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  const re = /^plugline_messages_handled_total\{([^}]*)\} (\S+)$/gm;
  for (const m of text.matchAll(re)) {
    const outcome = /outcome="([^"]*)"/.exec(m[1] ?? '')?.[1] ?? 'unknown';
    out[outcome] = (out[outcome] ?? 0) + Number(m[2]);
  }
  return out;
}

/** `plugline_work_step_seconds` summed over stages: seconds and observations per step. */
export function workSteps(text: string): Record<string, { seconds: number; count: number }> {
  const out: Record<string, { seconds: number; count: number }> = {};
  const re = /^plugline_work_step_seconds_(sum|count)\{([^}]*)\} (\S+)$/gm;
  for (const m of text.matchAll(re)) {
    const step = /step="([^"]*)"/.exec(m[2] ?? '')?.[1] ?? 'unknown';
    const row = (out[step] ??= { seconds: 0, count: 0 });
    if (m[1] === 'sum') row.seconds += Number(m[3]);
    else row.count += Number(m[3]);
  }
  return out;
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
  const per = (n: number): number => Math.round((n / Math.max(1, ops)) * 100) / 100;
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
