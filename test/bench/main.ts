/**
 * `pnpm bench`: the chain against its own floor (issue 10). Starts the embedded stack (every
 * service a process), measures, writes `bench/results/<date>.{json,md,svg}`, stops everything.
 * Not part of `pnpm test`. Run as root through scripts/with-private-mounts (the root script does).
 *
 *   pnpm bench [-- --ops 200 --repeat 3 --vmis 50 --concurrency 16 --sections 1,2,3,4,5,6]
 */
import { readlinkSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ServiceName } from '@plugline/cli';
import { machineInfo } from './machine.js';
import { renderMarkdown } from './markdown.js';
import { renderChart } from './chart.js';
import { runMainStack, runBurstStack, runScaleOutStack, type BenchConfig } from './sections.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

function inPrivateMountNamespace(): boolean {
  try {
    return readlinkSync('/proc/self/ns/mnt') !== readlinkSync('/proc/1/ns/mnt');
  } catch {
    return process.env.PLUGLINE_PRIVATE_MOUNTS === '1';
  }
}

function config(): BenchConfig {
  const { values } = parseArgs({
    options: {
      ops: { type: 'string', default: '200' },
      repeat: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '5' },
      vmis: { type: 'string', default: '50' },
      'volumes-per-vmi': { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '16' },
      burst: { type: 'string', default: '75' },
      'burst-pod-start-ms': { type: 'string', default: '1000' },
      profile: { type: 'string', default: ServiceName.SpecWatcher },
      sections: { type: 'string', default: '1,2,3,4,5,6' },
      'log-level': { type: 'string', default: 'info' },
      out: { type: 'string', default: join(REPO_ROOT, 'bench', 'results') },
    },
    allowPositionals: true,
  });
  const int = (name: keyof typeof values): number => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a whole number`);
    return n;
  };
  return {
    ops: int('ops'),
    repeat: Math.max(1, int('repeat')),
    warmup: int('warmup'),
    vmis: int('vmis'),
    volumesPerVmi: Math.max(1, int('volumes-per-vmi')),
    concurrency: Math.max(1, int('concurrency')),
    burst: int('burst'),
    burstPodStartMs: int('burst-pod-start-ms'),
    profile: (values.profile ?? '') as ServiceName | '',
    sections: new Set((values.sections ?? '').split(',').map((s) => s.trim())),
    logLevel: values['log-level'] ?? 'info',
    out: resolve(values.out ?? 'bench/results'),
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0 || !inPrivateMountNamespace()) {
    throw new Error(
      'the benchmark bind-mounts volumes: run it as root through scripts/with-private-mounts (pnpm bench)',
    );
  }
  const cfg = config();
  const started = new Date();
  const log = (msg: string): void => console.log(`[bench ${new Date().toISOString()}] ${msg}`);
  log(`config ${JSON.stringify({ ...cfg, sections: [...cfg.sections] })}`);
  const machine = await machineInfo();
  const main = await runMainStack(cfg, log);
  const burst = cfg.sections.has('4') ? await runBurstStack(cfg, log) : undefined;
  const scaleOut = cfg.sections.has('5') ? await runScaleOutStack(cfg, log) : undefined;
  const tp1 = main.throughput?.plug.opsPerSecond;
  const tp2 = scaleOut?.throughput.plug.opsPerSecond;
  const results = {
    issue: 10,
    date: started.toISOString(),
    durationS: Math.round((Date.now() - started.getTime()) / 1000),
    machine,
    config: { ...cfg, sections: [...cfg.sections], out: undefined },
    ...main,
    burst,
    scaleOut:
      scaleOut === undefined
        ? undefined
        : {
            ...scaleOut,
            throughputRatio:
              tp1 !== undefined && tp2 !== undefined ? Math.round((tp2 / tp1) * 100) / 100 : null,
          },
    guest: {
      run: false,
      reason:
        'not run: the guest harness (packages/testkit/src/guest) exists, but timing addvolume → the guest reporting the disk is not wired into the benchmark yet',
    },
  };
  await mkdir(cfg.out, { recursive: true });
  const stamp = started.toISOString().replace(/[:]/g, '-').replace(/\..*$/, '');
  const base = join(cfg.out, stamp);
  await writeFile(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(`${base}.svg`, renderChart(results));
  await writeFile(`${base}.md`, renderMarkdown(results, `${stamp}.svg`));
  log(`wrote ${base}.json, .md, .svg`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
