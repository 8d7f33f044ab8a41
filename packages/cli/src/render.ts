/** Text output: event lines, the `--wait` progress lines, and the status table. */
import { eventTypeOf, type VolumeEvent } from '@plugline/contracts';

/** `12ms`, `1.5s`, `2m3s`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return s === 0 ? `${m}m` : `${m}m${s}s`;
}

/** kubectl's AGE column: `5s`, `3m`, `2h`, `4d`. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

/**
 * The facts an event adds, in a few words: pod and node, target, progress, reason, and whether a
 * resync asked for them again.
 */
export function eventDetail(event: VolumeEvent): string {
  const d = event.data;
  const parts: string[] = [];
  if (d.resync !== undefined) parts.push('again, on resync');
  if (d.attachPod !== undefined) parts.push(`pod ${d.attachPod.name}`);
  if (d.node !== undefined) parts.push(`on ${d.node}`);
  if (d.target !== undefined && d.target !== '') parts.push(`target ${d.target}`);
  if (d.progress !== undefined) parts.push(`progress ${d.progress}`);
  if (d.phase !== undefined) parts.push(`phase ${d.phase}`);
  if (d.reason !== undefined) parts.push(`reason ${d.reason}`);
  const head = parts.join(', ');
  const message = d.message !== undefined && d.message !== '' ? d.message : '';
  return [head, message].filter((x) => x !== '').join(': ');
}

/** One human line of `plugctl events`. */
export function formatEventLine(event: VolumeEvent): string {
  const type = eventTypeOf(event);
  const detail = eventDetail(event);
  return [event.time, event.subject, type.padEnd(20), `[${event.data.stage}]`, detail]
    .filter((x) => x !== '')
    .join('  ')
    .trimEnd();
}

/** One `--wait` line: `  bound              +12ms  (total 40ms)  phase Bound: PVC is in phase Bound`. */
export function formatProgressLine(event: VolumeEvent, stepMs: number, totalMs: number): string {
  const type = eventTypeOf(event);
  const timing = `+${formatDuration(stepMs)}`.padEnd(9);
  const detail = eventDetail(event);
  return `  ${type.padEnd(21)}${timing}(${formatDuration(totalMs)})${detail === '' ? '' : `  ${detail}`}`;
}

/** A plain-text table with kubectl's look: upper-case headers, columns padded by three spaces. */
export function formatTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd((widths[i] ?? 0) + 3)))
      .join('')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}
