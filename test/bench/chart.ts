/**
 * The latency distribution per stage as a hand-written SVG: one row per stage, a box from p50 to
 * p90, a whisker from min to p99 (max marked), on a log scale so 1 ms and 1 s both read.
 */
import type { Results } from './report-types.js';
import type { Percentiles } from './stats.js';

const W = 900;
const LABEL = 260;
const ROW = 26;
const LO = 0.1;
const HI = 10_000;

function x(ms: number): number {
  const v = Math.min(HI, Math.max(LO, ms));
  return (
    LABEL +
    ((Math.log10(v) - Math.log10(LO)) / (Math.log10(HI) - Math.log10(LO))) * (W - LABEL - 30)
  );
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

interface Row {
  label: string;
  p: Percentiles;
  color: string;
}

function rowsOf(
  title: string,
  stages: Record<string, Percentiles> | undefined,
  color: string,
): Row[] {
  if (stages === undefined) return [];
  return Object.entries(stages).map(([label, p]) => ({ label: `${title}: ${label}`, p, color }));
}

export function renderChart(results: Results): string {
  const one = results.oneVolume;
  const floor = results.floor;
  const rows: Row[] = [
    ...(one === undefined
      ? []
      : [{ label: 'chain plug (total)', p: one.pooled.plug, color: '#1f77b4' }]),
    ...rowsOf('chain plug', one?.plugStages, '#6baed6'),
    ...(floor === undefined
      ? []
      : [{ label: 'floor plug (total)', p: floor.pooled.plug, color: '#2ca02c' }]),
    ...rowsOf('floor plug', floor?.plugStages, '#98df8a'),
    ...(one === undefined
      ? []
      : [{ label: 'chain unplug (total)', p: one.pooled.unplug, color: '#d62728' }]),
    ...rowsOf('chain unplug', one?.unplugStages, '#ff9896'),
    ...(floor === undefined
      ? []
      : [{ label: 'floor unplug (total)', p: floor.pooled.unplug, color: '#8c564b' }]),
    ...rowsOf('floor unplug', floor?.unplugStages, '#c49c94'),
  ];
  const top = 50;
  const H = top + rows.length * ROW + 50;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">Plugline: latency per stage, one volume, pod start 0 ms (${esc(results.date.slice(0, 10))})</text>`,
    `<text x="10" y="38" fill="#555">box p50–p90, whisker min–p99, ◆ max; log scale, ms. Chain = 4 services over NATS; floor = one script, no bus.</text>`,
  ];
  for (const tick of [0.1, 1, 10, 100, 1000, 10_000]) {
    const tx = x(tick);
    out.push(
      `<line x1="${tx}" y1="${top - 4}" x2="${tx}" y2="${H - 40}" stroke="#ddd"/>`,
      `<text x="${tx}" y="${H - 24}" text-anchor="middle" fill="#555">${tick >= 1000 ? `${tick / 1000} s` : `${tick} ms`}</text>`,
    );
  }
  rows.forEach((r, i) => {
    const y = top + i * ROW + ROW / 2;
    const { p } = r;
    out.push(
      `<text x="${LABEL - 8}" y="${y + 4}" text-anchor="end">${esc(r.label)}</text>`,
      `<line x1="${x(p.min)}" y1="${y}" x2="${x(p.p99)}" y2="${y}" stroke="${r.color}" stroke-width="2"/>`,
      `<rect x="${x(p.p50)}" y="${y - 8}" width="${Math.max(2, x(p.p90) - x(p.p50))}" height="16" fill="${r.color}" opacity="0.85"/>`,
      `<line x1="${x(p.p50)}" y1="${y - 9}" x2="${x(p.p50)}" y2="${y + 9}" stroke="black" stroke-width="2"/>`,
      `<text x="${x(p.max)}" y="${y + 4}" text-anchor="middle" fill="${r.color}">◆</text>`,
      `<text x="${W - 6}" y="${y + 4}" text-anchor="end" fill="#333">${p.p50}</text>`,
    );
  });
  out.push(`<text x="${W - 6}" y="${top - 8}" text-anchor="end" fill="#333">p50</text>`, '</svg>');
  return `${out.join('\n')}\n`;
}
