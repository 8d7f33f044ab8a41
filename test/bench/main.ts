/**
 * `pnpm bench`: the chain against its own floor (issue 10). Starts the embedded stack (every
 * service a process), measures, writes `bench/results/<date>.{json,md,svg}`, stops everything.
 * Not part of `pnpm test`. Run as root through scripts/with-private-mounts (the root script does).
 * The services run as `plugctl up` runs them: the `pnpm build` bundles with plain node (built
 * first when missing or stale); `--from-source` runs them through tsx instead.
 *
 *   pnpm bench [-- --ops 200 --repeat 3 --vmis 50 --concurrency 16 --sweep-concurrency 32,64
 *                  --sections 1,2,3,4,5,6,7,8,9]
 *   (--repeat: rounds of sections 1-2, 3 and 5, whose figures are medians over them)
 *              [--from-source] [--profile <service> --profile-stack main|burst]
 *              [--node-args=<node flags for every service, space-separated, e.g. --optimize-for-size>]
 *   section 6: [--memory-vmis 100 --memory-volumes-per-vmi 10 --memory-concurrency 8 --memory-checkpoints 4]
 *   section 7: [--guest-runs 20 --guest-warmup 2 --guest-bus scsi --guest-pod-start-ms 0]
 *   section 8: [--cli-runs 10]
 *   section 9: [--hop-ways core,jetstream,exchanges,runtime] (four hops alone, --ops items one
 *              at a time, --repeat rounds: hops.ts)
 */
import { readlinkSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ensureBundles, SERVICE_V8_FLAGS, ServiceName, ServiceRuntime } from '@plugline/cli';
import { machineInfo } from './machine.js';
import { speedProbe } from './speed.js';
import { renderMarkdown } from './markdown.js';
import { renderChart } from './chart.js';
import { runMainStack, runBurstStack, runScaleOutStack, type BenchConfig } from './sections.js';
import { runMemoryStack, type MemoryConfig } from './memory.js';
import { runGuestSection, type GuestConfig } from './guest.js';
import type { HopVariant } from './hop-names.js';
import { hopWays, runHopsSection } from './hops.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

function inPrivateMountNamespace(): boolean {
  try {
    return readlinkSync('/proc/self/ns/mnt') !== readlinkSync('/proc/1/ns/mnt');
  } catch {
    return process.env.PLUGLINE_PRIVATE_MOUNTS === '1';
  }
}

function guestBus(value: string | undefined): GuestConfig['bus'] {
  if (value === 'scsi' || value === 'virtio') return value;
  throw new Error('--guest-bus must be scsi or virtio');
}

/** `--sweep-concurrency 32,64` (empty: no sweep). */
function concurrencies(value: string | undefined): number[] {
  const list = (value ?? '')
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
  return list.map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1)
      throw new Error('--sweep-concurrency takes whole numbers ≥ 1, comma-separated');
    return n;
  });
}

function profileStack(value: string | undefined): BenchConfig['profileStack'] {
  if (value === 'main' || value === 'burst') return value;
  throw new Error('--profile-stack must be main (sections 1-3) or burst (section 4)');
}

function config(): BenchConfig & {
  memory: MemoryConfig;
  guest: GuestConfig;
  hopWays: HopVariant[];
} {
  // `pnpm bench -- --sections 6` passes the `--` on: drop it, or every flag would be a positional.
  const argv = process.argv.slice(2);
  const { values } = parseArgs({
    args: argv[0] === '--' ? argv.slice(1) : argv,
    options: {
      ops: { type: 'string', default: '200' },
      repeat: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '5' },
      vmis: { type: 'string', default: '50' },
      'volumes-per-vmi': { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '16' },
      'sweep-concurrency': { type: 'string', default: '32,64' },
      burst: { type: 'string', default: '75' },
      'burst-pod-start-ms': { type: 'string', default: '1000' },
      profile: { type: 'string', default: ServiceName.SpecWatcher },
      'profile-stack': { type: 'string', default: 'main' },
      sections: { type: 'string', default: '1,2,3,4,5,6,7,8,9' },
      'memory-vmis': { type: 'string', default: '100' },
      'memory-volumes-per-vmi': { type: 'string', default: '10' },
      'memory-concurrency': { type: 'string', default: '8' },
      'memory-checkpoints': { type: 'string', default: '4' },
      'guest-runs': { type: 'string', default: '20' },
      'guest-warmup': { type: 'string', default: '2' },
      'guest-bus': { type: 'string', default: 'scsi' },
      'guest-pod-start-ms': { type: 'string', default: '0' },
      'cli-runs': { type: 'string', default: '10' },
      'hop-ways': { type: 'string', default: '' },
      'log-level': { type: 'string', default: 'info' },
      'from-source': { type: 'boolean', default: false },
      'node-args': { type: 'string', default: '' },
      out: { type: 'string', default: join(REPO_ROOT, 'bench', 'results') },
    },
    allowPositionals: true,
  });
  const int = (name: keyof typeof values): number => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a whole number`);
    return n;
  };
  const runtime = values['from-source'] === true ? ServiceRuntime.Source : ServiceRuntime.Bundled;
  return {
    ops: int('ops'),
    repeat: Math.max(1, int('repeat')),
    warmup: int('warmup'),
    vmis: int('vmis'),
    volumesPerVmi: Math.max(1, int('volumes-per-vmi')),
    concurrency: Math.max(1, int('concurrency')),
    sweepConcurrency: concurrencies(values['sweep-concurrency']),
    burst: int('burst'),
    burstPodStartMs: int('burst-pod-start-ms'),
    cliRuns: Math.max(1, int('cli-runs')),
    hopWays: hopWays(values['hop-ways']),
    profile: (values.profile ?? '') as ServiceName | '',
    profileStack: profileStack(values['profile-stack']),
    sections: new Set((values.sections ?? '').split(',').map((s) => s.trim())),
    logLevel: values['log-level'] ?? 'info',
    runtime,
    nodeArgs: (values['node-args'] ?? '').split(/\s+/).filter((a) => a.length > 0),
    out: resolve(values.out ?? 'bench/results'),
    memory: {
      vmis: Math.max(1, int('memory-vmis')),
      volumesPerVmi: Math.max(1, int('memory-volumes-per-vmi')),
      concurrency: Math.max(1, int('memory-concurrency')),
      checkpoints: Math.max(1, int('memory-checkpoints')),
    },
    guest: {
      runs: Math.max(1, int('guest-runs')),
      warmup: int('guest-warmup'),
      bus: guestBus(values['guest-bus']),
      podStartLatencyMs: int('guest-pod-start-ms'),
      logLevel: values['log-level'] ?? 'info',
      runtime,
    },
  };
}

/** Builds the bundles the services run from unless they are current (as `plugctl up` does). */
async function prepareRuntime(runtime: ServiceRuntime, log: (msg: string) => void): Promise<void> {
  if (runtime !== ServiceRuntime.Bundled) {
    log('services run from source (tsx)');
    return;
  }
  const t0 = Date.now();
  const build = await ensureBundles();
  for (const warning of build.warnings) log(`warning: build: ${warning}`);
  log(
    build.built
      ? `built the service bundles (${build.reason ?? 'stale'}) in ${Date.now() - t0} ms`
      : 'service bundles are current',
  );
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
  await prepareRuntime(cfg.runtime, log);
  const machine = await machineInfo();
  const probeAtStart = await speedProbe();
  log(`speed probe ${JSON.stringify(probeAtStart)} (lower is faster)`);
  // Sections 1–3 and 8 run on the main stack, which also gives the idle figure; without them, section 6
  // (its own stack, idle first) gives it, or nothing does (e.g. `--sections 7`).
  const needsMain = ['1', '2', '3', '8'].some((s) => cfg.sections.has(s));
  const main = needsMain ? await runMainStack(cfg, log) : undefined;
  // Next to sections 1–2 in time, which it splits (see hops.ts).
  const hops = cfg.sections.has('9')
    ? await runHopsSection({ ops: cfg.ops, repeat: cfg.repeat, ways: cfg.hopWays }, log)
    : undefined;
  const burst = cfg.sections.has('4') ? await runBurstStack(cfg, log) : undefined;
  const scaleOut = cfg.sections.has('5') ? await runScaleOutStack(cfg, log) : undefined;
  const memory = cfg.sections.has('6') ? await runMemoryStack(cfg, cfg.memory, log) : undefined;
  const guest = cfg.sections.has('7')
    ? await runGuestSection(cfg.guest, log)
    : { run: false as const, reason: 'not run (section 7 not selected: --sections 7)' };
  const probeAtEnd = await speedProbe();
  log(`speed probe ${JSON.stringify(probeAtEnd)} at the end`);
  // Each the median round's: the ratio of the medians.
  const tp1 = main?.throughput?.plug.opsPerSecond;
  const tp2 = scaleOut?.throughput.plug.opsPerSecond;
  const results = {
    issue: 10,
    date: started.toISOString(),
    durationS: Math.round((Date.now() - started.getTime()) / 1000),
    machine: { ...machine, speedProbe: { start: probeAtStart, end: probeAtEnd } },
    config: {
      ...cfg,
      sections: [...cfg.sections],
      out: undefined,
      // What every service ran with: the stack's flags, then `--node-args`.
      serviceV8Flags: [...SERVICE_V8_FLAGS, ...cfg.nodeArgs],
    },
    rssIdleMiB: main?.rssIdleMiB ?? memory?.rssMiB.idle ?? {},
    ...main,
    profile: main?.profile ?? burst?.profile,
    burst: burst?.figures,
    scaleOut:
      scaleOut === undefined
        ? undefined
        : {
            ...scaleOut,
            throughputRatio:
              tp1 !== undefined && tp2 !== undefined ? Math.round((tp2 / tp1) * 100) / 100 : null,
          },
    memory,
    guest,
    hops,
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
