/**
 * Reading the services' own `/metrics` (prom-client text): what each process did, as it counts
 * it, beside what /proc says it cost.
 */
import type { StackService } from '@plugline/cli';

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
