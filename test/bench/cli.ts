/**
 * Section 8: plugctl as a user runs it, a process per command (`packages/cli/bin/plugctl.mjs`),
 * timed from its spawn to its exit: `status`, then `addvolume --wait` and `removevolume --wait`
 * of one volume, each run from the bundle (dist/plugctl, what the launcher runs while it is
 * current) and from the sources through tsx (`PLUGLINE_CLI_FROM_SOURCE=1`). The figures are
 * what a user waits for; the chain's share of a `--wait` is the time plugctl itself prints.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import {
  cliBundleDir,
  cliBundleStaleReason,
  createPvc,
  ensureNamespace,
  type Stack,
} from '@plugline/cli';
import { percentiles, type Percentiles } from './stats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = fileURLToPath(new URL('../../packages/cli/bin/plugctl.mjs', import.meta.url));
const NS = 'bench-cli';
const VMI = 'vm';
const CLAIM = 'disk';

export const CLI_COMMANDS = ['status', 'addvolume --wait', 'removevolume --wait'] as const;
export type CliCommand = (typeof CLI_COMMANDS)[number];

export interface CliFigures {
  runs: number;
  /** Why the bundle was not current (its runs then ran from the sources too), if it was not. */
  bundleStale?: string;
  /** Spawn → exit, ms, by how plugctl ran and command. */
  wallMs: Record<'bundle' | 'source', Record<CliCommand, Percentiles>>;
  /** What `--wait` printed as the operation's own time (`… after 84ms`), ms. */
  printedMs: Record<'addvolume --wait' | 'removevolume --wait', Percentiles>;
}

interface Ran {
  wallMs: number;
  stdout: string;
}

function plugctl(stack: Stack, env: NodeJS.ProcessEnv, args: readonly string[]): Promise<Ran> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        cwd: ROOT,
        env: { ...process.env, KUBECONFIG: stack.kubeconfigPath, NATS_URL: stack.natsUrl, ...env },
        timeout: 60_000,
      },
      (err, stdout, stderr) => {
        const wallMs = performance.now() - started;
        if (err !== null) reject(new Error(`plugctl ${args.join(' ')} failed: ${stderr}`));
        else resolve({ wallMs, stdout });
      },
    );
  });
}

const ARGS: Record<CliCommand, readonly string[]> = {
  status: ['status', VMI, '-n', NS],
  'addvolume --wait': ['addvolume', VMI, `--volume-name=${CLAIM}`, '-n', NS, '--wait'],
  'removevolume --wait': ['removevolume', VMI, `--volume-name=${CLAIM}`, '-n', NS, '--wait'],
};

function printedMs(stdout: string): number {
  const m = /after (\d+)ms\s*$/.exec(stdout.trim());
  return m === null ? Number.NaN : Number(m[1]);
}

/** `runs` rounds of the three commands each way, alternating the ways so drift hits both. */
export async function cliSection(
  stack: Stack,
  runs: number,
  log: (msg: string) => void,
): Promise<CliFigures> {
  await ensureNamespace(stack.kc, NS);
  await stack.createVmi({ namespace: NS, name: VMI });
  await createPvc(stack.kc, { namespace: NS, name: CLAIM, mode: 'Filesystem' });
  const bundleStale = cliBundleStaleReason(cliBundleDir(), ROOT);
  const ways = { bundle: {}, source: { PLUGLINE_CLI_FROM_SOURCE: '1' } } as const;
  const samples = () =>
    Object.fromEntries(CLI_COMMANDS.map((c) => [c, [] as number[]])) as Record<
      CliCommand,
      number[]
    >;
  const wall = { bundle: samples(), source: samples() };
  const printed = samples();
  for (let i = 0; i < runs; i++) {
    for (const way of ['bundle', 'source'] as const) {
      for (const command of CLI_COMMANDS) {
        const ran = await plugctl(stack, ways[way], ARGS[command]);
        wall[way][command].push(ran.wallMs);
        if (command !== 'status') printed[command].push(printedMs(ran.stdout));
      }
    }
  }
  const summary = (way: 'bundle' | 'source') =>
    Object.fromEntries(CLI_COMMANDS.map((c) => [c, percentiles(wall[way][c])])) as Record<
      CliCommand,
      Percentiles
    >;
  const figures: CliFigures = {
    runs,
    ...(bundleStale === undefined ? {} : { bundleStale }),
    wallMs: { bundle: summary('bundle'), source: summary('source') },
    printedMs: {
      'addvolume --wait': percentiles(printed['addvolume --wait']),
      'removevolume --wait': percentiles(printed['removevolume --wait']),
    },
  };
  log(
    `plugctl: status ${figures.wallMs.bundle.status.p50} ms bundled / ${figures.wallMs.source.status.p50} from source; ` +
      `addvolume --wait ${figures.wallMs.bundle['addvolume --wait'].p50} / ${figures.wallMs.source['addvolume --wait'].p50} ms` +
      (bundleStale === undefined ? '' : ` (the bundle was not current: ${bundleStale})`),
  );
  return figures;
}
