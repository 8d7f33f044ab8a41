/** The top of a V8 CPU profile (`--cpu-prof`): self time by function and by code area. */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Where code lives: a package under node_modules, a workspace folder, node itself, or V8. */
export function areaOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const nm = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm !== null) return nm[1] as string;
  const ws = /\/(services|packages)\/([^/]+)\//.exec(url);
  if (ws !== null) return `${ws[1]}/${ws[2]}`;
  if (url.startsWith('node:')) return url.split('/')[0] as string;
  return url;
}

/**
 * Maps a frame in a bundle (`dist/<service>.mjs`, which `pnpm build` writes with a linked `.map`)
 * back to its source file and line, so a bundled service's profile names the same files and areas
 * as one run from source. Frames of other files, or of a bundle without a map, stay as they are.
 */
function sourcePositions(): (frame: CallFrame) => { url: string; lineNumber: number } {
  const maps = new Map<string, { map: SourceMap; dir: string } | undefined>();
  const mapOf = (url: string) => {
    if (!maps.has(url)) {
      try {
        const file = fileURLToPath(url);
        const payload = JSON.parse(readFileSync(`${file}.map`, 'utf8')) as SourceMapPayload;
        maps.set(url, { map: new SourceMap(payload), dir: dirname(file) });
      } catch {
        maps.set(url, undefined);
      }
    }
    return maps.get(url);
  };
  return (frame) => {
    const bundle =
      frame.url.startsWith('file:') && frame.url.endsWith('.mjs') ? mapOf(frame.url) : undefined;
    const entry = bundle?.map.findEntry(frame.lineNumber, frame.columnNumber);
    // A mapping segment may name no source (code the bundler generated): such a frame stays as
    // it is.
    if (
      bundle === undefined ||
      entry === undefined ||
      !('originalSource' in entry) ||
      typeof entry.originalSource !== 'string'
    )
      return frame;
    return { url: resolve(bundle.dir, entry.originalSource), lineNumber: entry.originalLine };
  };
}

export async function summarizeProfile(file: string, service: string, top = 15) {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const idleIds = new Set(
    profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id),
  );
  const idleUs = [...idleIds].reduce((s, id) => s + (selfUs.get(id) ?? 0), 0);
  for (const id of idleIds) selfUs.delete(id);
  // Percentages are of the busy (non-idle) time.
  const total = [...selfUs.values()].reduce((s, v) => s + v, 0);
  const fns = new Map<string, number>();
  const areas = new Map<string, number>();
  const positionOf = sourcePositions();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const { functionName } = node.callFrame;
    const { url, lineNumber } = positionOf(node.callFrame);
    const short = url.replace(/^.*\/(node_modules|services|packages)\//, '$1/');
    const fn = `${functionName || '(anonymous)'} ${short}:${lineNumber + 1}`;
    fns.set(fn, (fns.get(fn) ?? 0) + us);
    const area = areaOf(url, functionName);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  // Total time of the workspace's own functions: each sample counts once for every distinct one
  // of ours on its stack, so a function's figure includes what it called.
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  const oursById = new Map<number, string | undefined>();
  const ourName = (id: number): string | undefined => {
    if (!oursById.has(id)) {
      const frame = byId.get(id)?.callFrame;
      const pos = frame === undefined ? undefined : positionOf(frame);
      const ours = pos !== undefined && /\/(services|packages)\/[^/]+\/src\//.test(pos.url);
      oursById.set(
        id,
        ours
          ? `${frame!.functionName || '(anonymous)'} ${pos.url.replace(/^.*\/(services|packages)\//, '$1/')}:${pos.lineNumber + 1}`
          : undefined,
      );
    }
    return oursById.get(id);
  };
  const totals = new Map<string, number>();
  profile.samples.forEach((leaf, i) => {
    if (idleIds.has(leaf)) return;
    const dt = profile.timeDeltas[i] ?? 0;
    const seen = new Set<string>();
    for (let id: number | undefined = leaf; id !== undefined; id = parentOf.get(id)) {
      const name = ourName(id);
      if (name === undefined || seen.has(name)) continue;
      seen.add(name);
      totals.set(name, (totals.get(name) ?? 0) + dt);
    }
  });
  const rank = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({
        name,
        selfMs: Math.round(us / 1000),
        percent: Math.round((us / total) * 1000) / 10,
      }));
  return {
    service,
    file,
    wallS: Math.round((profile.endTime - profile.startTime) / 1e5) / 10,
    busyMs: Math.round(total / 1000),
    idleMs: Math.round(idleUs / 1000),
    topFunctions: rank(fns),
    topAreas: rank(areas),
    /** The workspace's functions by total time (`selfMs` here includes their callees). */
    topOwnTotals: rank(totals),
  };
}
