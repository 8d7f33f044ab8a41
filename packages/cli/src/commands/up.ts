import { spawn, spawnSync } from 'node:child_process';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { parseFlags, str } from '../args.js';
import { parseCliConfig, type CliConfig } from '../config.js';
import { ExitCode, UsageError } from '../errors.js';
import type { Io } from '../io.js';
import { formatTable } from '../render.js';
import { DEMO } from '../demo.js';
import { ensureBundles } from '../bundle.js';
import { Hypervisor, ServiceRuntime, startStack, type HealthRow, type Stack } from '../stack.js';
import { startGuestHarness, startLibvirt, type LibvirtDaemons } from '@plugline/testkit';

export const UP_USAGE = `Start the whole system on this machine (the embedded default): NATS, the Kubernetes
API simulator with its kubelet, a demo namespace, the four services and the simulated hypervisor.

Usage:
  plugctl up [--dir .plugline] [--hypervisor simulated|libvirt] [--nodes node-1] [--no-demo]
             [--from-source]

The services run as the \`pnpm build\` bundles (dist/*.mjs, rebuilt first when missing or older
than their sources), or from the TypeScript sources through tsx with --from-source.

Flags:
      --dir string          state, logs, kubeconfig and env file (default ./.plugline or $PLUGLINE_HOME)
      --hypervisor string   simulated (default) or libvirt (real libvirt + QEMU where it exists)
      --nodes string        comma-separated node names (default node-1)
      --no-demo             do not create the demo namespace
      --nats string         use this NATS server instead of starting one (also $NATS_URL)
      --from-source         run the services from source through tsx (also $PLUGLINE_FROM_SOURCE=1)
`;

const OPTIONS = {
  dir: { type: 'string' },
  hypervisor: { type: 'string' },
  nodes: { type: 'string' },
  'no-demo': { type: 'boolean' },
  'from-source': { type: 'boolean' },
} as const;

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * As root outside a private mount namespace, runs this same command again inside one
 * (`unshare --mount --propagation private`), so node-mounter's bind mounts vanish with it.
 * Resolves with the child's exit code, or undefined when no re-exec is needed.
 */
async function reexecInPrivateMounts(config: CliConfig, io: Io): Promise<number | undefined> {
  if (!config.isRoot || config.privateMounts || !hasCommand('unshare')) return undefined;
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--',
      process.execPath,
      ...process.execArgv,
      ...process.argv.slice(1),
    ],
    // Its own process group: Ctrl-C reaches it once, through us, as SIGTERM.
    { stdio: 'inherit', detached: true, env: { ...io.env, PLUGLINE_PRIVATE_MOUNTS: '1' } },
  );
  const forward = (): void => {
    child.kill('SIGTERM');
  };
  io.signal?.addEventListener('abort', forward, { once: true });
  return new Promise((resolvePromise) => {
    child.once('exit', (code, signal) => resolvePromise(code ?? (signal === null ? 1 : 130)));
  });
}

/** How the services run: the bundles (built first when missing or stale) unless asked otherwise. */
async function serviceRuntime(
  values: { 'from-source'?: boolean | string | undefined },
  io: Io,
): Promise<ServiceRuntime> {
  if (values['from-source'] === true || io.env.PLUGLINE_FROM_SOURCE === '1') {
    return ServiceRuntime.Source;
  }
  const started = Date.now();
  const build = await ensureBundles();
  if (build.built) {
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    io.out(
      `Built the services and plugctl into dist/ (${build.reason ?? 'stale'}; ${seconds} s).\n`,
    );
  }
  for (const warning of build.warnings) io.err(`warning: build: ${warning}\n`);
  return ServiceRuntime.Bundled;
}

function healthTable(rows: readonly HealthRow[]): string {
  return formatTable(
    ['SERVICE', 'PID', 'HEALTHY', 'READY', 'HEALTH URL'],
    rows.map((r) => [
      r.id,
      String(r.pid),
      r.healthy ? 'yes' : 'NO',
      r.ready ? 'yes' : 'NO',
      r.healthUrl,
    ]),
  );
}

/** `path` as typed in `cwd`: relative when under it, absolute otherwise (no `../../work/...`). */
function fromHere(path: string, cwd: string): string {
  const rel = relative(cwd, path);
  if (rel === '') return '.';
  return rel.startsWith('..') || isAbsolute(rel) ? resolve(path) : rel;
}

/** What to type next, in another terminal started in `cwd`. */
export function nextSteps(dir: string, demo: boolean, cwd = process.cwd()): string {
  const rel = fromHere(dir, cwd);
  const cli = fromHere(resolve(import.meta.dirname, '../../bin'), cwd);
  const lines = [
    '',
    'In another terminal:',
    `  export PATH=${isAbsolute(cli) ? cli : `$PWD/${cli}`}:$PATH     # plugctl (also: pnpm plugctl ...)`,
    `  source ${rel}/env                 # KUBECONFIG and NATS_URL`,
  ];
  if (demo) {
    lines.push(
      `  plugctl addvolume ${DEMO.vmi} --volume-name=${DEMO.filesystemPvc} --wait`,
      `  plugctl addvolume ${DEMO.vmi} --volume-name=${DEMO.blockPvc} --bus=virtio --wait`,
      `  plugctl addvolume ${DEMO.vmi} --volume-name=${DEMO.dataVolume} --wait   # a DataVolume still importing`,
      `  plugctl status ${DEMO.vmi}`,
      `  kubectl get vmi ${DEMO.vmi} -o yaml`,
      `  plugctl removevolume ${DEMO.vmi} --volume-name=${DEMO.filesystemPvc} --wait`,
      `  plugctl events --follow`,
    );
  }
  lines.push('', 'Logs are in ' + `${rel}/logs/. Ctrl-C stops everything.`, '');
  return lines.join('\n');
}

export async function upCommand(argv: readonly string[], io: Io): Promise<number> {
  const { values } = parseFlags(argv, OPTIONS);
  if (values.help === true) {
    io.out(UP_USAGE);
    return ExitCode.Ok;
  }
  const config = parseCliConfig(values, io.env);
  const hypervisor = str(values.hypervisor) ?? Hypervisor.Simulated;
  if (hypervisor !== Hypervisor.Simulated && hypervisor !== Hypervisor.Libvirt) {
    throw new UsageError(
      `--hypervisor must be simulated or libvirt, not ${JSON.stringify(hypervisor)}`,
    );
  }
  if (hypervisor === Hypervisor.Libvirt && !hasCommand('virsh')) {
    throw new UsageError('--hypervisor libvirt needs libvirt (virsh) on this machine');
  }
  const reexec = await reexecInPrivateMounts(config, io);
  if (reexec !== undefined) return reexec;
  if (!config.isRoot) {
    io.err(
      'warning: not running as root: node-mounter cannot bind-mount volumes or make loop devices\n',
    );
  }
  const dir = str(values.dir) === undefined ? config.home : resolve(str(values.dir) as string);
  const demo = values['no-demo'] !== true;
  io.out(`Starting Plugline in ${dir} ...\n`);
  const started = Date.now();
  const runtime = await serviceRuntime(values, io);
  // --- guest tier hook (issue 8): a private libvirtd, and the demo VMI booted as a real guest ---
  let libvirt: LibvirtDaemons | undefined;
  let stopLibvirt = (): Promise<void> => Promise.resolve();
  let guestConsole: string | undefined;
  if (hypervisor === Hypervisor.Libvirt) {
    if (demo) {
      io.out('Booting the demo VMI as a QEMU guest (TCG, ~15 s) ...\n');
      const harness = await startGuestHarness({
        name: `${DEMO.namespace}_${DEMO.vmi}`,
        // the demo VMI's own disk (its virtio rootdisk), as virt-launcher's domain has it
        disks: [{ name: 'rootdisk', bus: 'virtio', target: 'vda' }],
      });
      ({ libvirt } = harness);
      stopLibvirt = () => harness.stop();
      guestConsole = harness.guest.serialLog;
    } else {
      libvirt = await startLibvirt();
      stopLibvirt = () => (libvirt as LibvirtDaemons).stop();
    }
  }
  let stack: Stack;
  try {
    stack = await startStack({
      dir,
      libvirt,
      ...(config.natsGiven ? { natsUrl: config.natsUrls.join(',') } : {}),
      nodes: (str(values.nodes) ?? 'node-1').split(',').filter((n) => n !== ''),
      hypervisor,
      demo,
      runtime,
      logLevel: config.logLevel,
      onExit: (id, code, signal) =>
        io.err(`warning: ${id} exited (${code ?? signal}); see ${dir}/logs/\n`),
    });
  } catch (error) {
    await stopLibvirt();
    throw error;
  }
  if (guestConsole !== undefined) {
    io.out(`\nThe demo guest reports its disks on its console: tail -f ${guestConsole}\n`);
  }
  // --- end of the guest tier hook ---
  try {
    io.out(`\nPlugline is up (${((Date.now() - started) / 1000).toFixed(1)} s).\n`);
    io.out(`  NATS:        ${stack.natsUrl}\n  API server:  ${stack.apiUrl}\n`);
    io.out(`  kubeconfig:  ${stack.kubeconfigPath}\n  env:         ${join(dir, 'env')}\n\n`);
    io.out(healthTable(await stack.health()));
    io.out(nextSteps(dir, demo));
    await new Promise<void>((resolvePromise) => {
      if (io.signal === undefined || io.signal.aborted) {
        resolvePromise();
        return;
      }
      io.signal.addEventListener('abort', () => resolvePromise(), { once: true });
    });
    io.out('\nStopping ...\n');
  } finally {
    await stack.stop();
    await stopLibvirt();
  }
  io.out('Stopped: every process, mount and loop device is gone.\n');
  return ExitCode.Ok;
}
