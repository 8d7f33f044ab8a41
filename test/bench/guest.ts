/**
 * Section 7, a real guest: `plugctl addvolume` → the guest itself reports the disk (with the
 * serial we set), over a private libvirtd running a real QEMU guest (TCG, software emulation) as
 * the VMI's launcher domain, the whole chain as processes, real mounts. Then `removevolume` → the
 * guest reports it gone, so the next run starts from the same state. The harness and the guest are
 * the guest tier's (`@plugline/testkit`, `test/guest/`); without libvirt the section is skipped
 * and says why.
 *
 * The guest learns of a disk from its kernel's uevent (test/guest/guest-init.sh echoes the uevent,
 * then reads its disks and reports them) and the host reads the console as QEMU writes it, so a
 * run splits into the product's part (the call, the chain to `Ready`, the libvirt attach) and the
 * guest's: its kernel finding the disk (`guestKernelMs`), then its report (`guestMs`).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  createPvc,
  ensureNamespace,
  Hypervisor,
  run,
  startStack,
  type ServiceRuntime,
  type Stack,
} from '@plugline/cli';
import { VolumePhase } from '@plugline/contracts';
import { guestGate, startGuestHarness, tempDir, type GuestHarness } from '@plugline/testkit';
import { Observer } from './observer.js';
import { percentiles, round, type Percentiles } from './stats.js';

export interface GuestConfig {
  runs: number;
  warmup: number;
  bus: 'scsi' | 'virtio';
  podStartLatencyMs: number;
  logLevel: string;
  /** How the services run: bundled, as `plugctl up` runs them, or from source (`--from-source`). */
  runtime: ServiceRuntime;
}

type Log = (msg: string) => void;

const NS = 'bench-guest';
const VMI = 'vm';
const PVC = 'disk';
const DOMAIN = `${NS}_${VMI}`;
const WAIT_MS = 120_000;

/** One plug or unplug, each figure in ms from the plugctl call. */
export interface GuestRun {
  /** plugctl returned (the spec patch was accepted). */
  callMs: number;
  /** The VMI status said `Ready` (plug) or dropped the entry (unplug), as a watch saw it. */
  statusMs: number;
  /** The guest's console report that shows the disk (plug) or no longer shows it (unplug). */
  guestMs: number;
  /** Plug: the guest kernel's uevent for the disk, echoed on the console before the report. */
  guestKernelMs?: number;
  /** When each fact was published (plug: requested, attached-to-node, mounted-to-pod, ready). */
  facts: Record<string, number>;
}

export type GuestFigures =
  | { run: false; reason: string }
  | {
      run: true;
      reason: string;
      kernel: string;
      bus: string;
      podStartLatencyMs: number;
      runs: number;
      warmup: number;
      bootMs: number;
      addvolumeToGuest: Percentiles;
      /** To the guest kernel's uevent for the disk (the rest, to `addvolumeToGuest`, is the reporter's). */
      addvolumeToGuestKernel: Percentiles;
      addvolumeToStatusReady: Percentiles;
      addvolumeCall: Percentiles;
      factsFromCall: Record<string, Percentiles>;
      removevolumeToGuest: Percentiles;
      removevolumeToStatusGone: Percentiles;
      target: { p50Ms: number; met: boolean };
      samples: { plug: GuestRun[]; unplug: GuestRun[] };
    };

/** plugctl in-process (the binary's code path without its process start-up); throws on failure. */
async function plugctl(stack: Stack, args: string[]): Promise<void> {
  let err = '';
  const code = await run(args, {
    out: () => undefined,
    err: (t) => (err += t),
    env: { ...stack.clientEnv(), HOME: '/nonexistent' },
  });
  if (code !== 0) throw new Error(`plugctl ${args.join(' ')} exited ${code}: ${err.trim()}`);
}

function factsSince(obs: Observer, key: string, t0: number): Record<string, number> {
  return Object.fromEntries(
    [...obs.firstEvents(key, t0)].map(([type, mark]) => [type, round(mark.t - t0)]),
  );
}

async function plugOnce(
  stack: Stack,
  obs: Observer,
  guest: GuestHarness,
  bus: string,
): Promise<{ run: GuestRun; serial: string }> {
  const serial = `PLG-${randomBytes(4).toString('hex')}`;
  const key = `${NS}/${VMI}/${PVC}`;
  const seen = guest.guest.console.waitForDisk(serial, { timeout: WAIT_MS });
  seen.catch(() => undefined);
  const wall0 = Date.now();
  const t0 = performance.now();
  await plugctl(stack, [
    'addvolume',
    VMI,
    '-n',
    NS,
    `--volume-name=${PVC}`,
    `--serial=${serial}`,
    `--bus=${bus}`,
  ]);
  const callMs = performance.now() - t0;
  const ready = await obs.untilVolume(key, (v) => v?.phase === VolumePhase.Ready, WAIT_MS);
  const { report, disk } = await seen;
  const uevent = guest.guest.console.blockEvents.find(
    (e) => e.action === 'add' && e.device === disk.name && e.receivedAt >= wall0,
  );
  return {
    serial,
    run: {
      callMs: round(callMs),
      statusMs: round(ready - t0),
      guestMs: report.receivedAt - wall0,
      guestKernelMs: uevent === undefined ? undefined : uevent.receivedAt - wall0,
      facts: factsSince(obs, key, t0),
    },
  };
}

async function unplugOnce(
  stack: Stack,
  obs: Observer,
  guest: GuestHarness,
  serial: string,
): Promise<GuestRun> {
  const key = `${NS}/${VMI}/${PVC}`;
  const gone = guest.guest.console.waitForDiskGone(serial, { timeout: WAIT_MS });
  gone.catch(() => undefined);
  const wall0 = Date.now();
  const t0 = performance.now();
  await plugctl(stack, ['removevolume', VMI, '-n', NS, `--volume-name=${PVC}`]);
  const callMs = performance.now() - t0;
  const removed = await obs.untilVolume(key, (v) => v?.present === false, WAIT_MS);
  const report = await gone;
  return {
    callMs: round(callMs),
    statusMs: round(removed - t0),
    guestMs: report.receivedAt - wall0,
    facts: factsSince(obs, key, t0),
  };
}

/** Section 7; `{ run: false }` with the reason when libvirt, QEMU or root is missing. */
export async function runGuestSection(cfg: GuestConfig, log: Log): Promise<GuestFigures> {
  const gate = await guestGate();
  if (!gate.available) {
    log(`guest: skipped: ${gate.reason}`);
    return { run: false, reason: `skipped: ${gate.reason}` };
  }
  const t = performance.now();
  const guest = await startGuestHarness({
    name: DOMAIN,
    // The VMI's own disk (createVmi's virtio rootdisk) at vda, as virt-launcher's domain has it.
    disks: [{ name: 'rootdisk', bus: 'virtio', target: 'vda' }],
  });
  const dir = await tempDir('plugline-bench-guest-').catch(async (err: unknown) => {
    await guest.stop();
    throw err;
  });
  let stack: Stack | undefined;
  let obs: Observer | undefined;
  try {
    stack = await startStack({
      dir: dir.path,
      demo: false,
      // Generous: on shared, loaded cores a service started through tsx may take minutes.
      readyTimeoutMs: 300_000,
      logLevel: cfg.logLevel,
      runtime: cfg.runtime,
      podStartLatencyMs: cfg.podStartLatencyMs,
      hypervisor: Hypervisor.Libvirt,
      libvirt: guest.libvirt,
    });
    await ensureNamespace(stack.kc, NS);
    await stack.createVmi({ namespace: NS, name: VMI });
    await createPvc(stack.kc, { namespace: NS, name: PVC, mode: 'Filesystem', size: '64Mi' });
    obs = await Observer.start(stack.kc, stack.natsUrl, [NS]);
    log(
      `guest: kernel ${guest.image.kernelVersion} booted in ${guest.timings.bootMs} ms; stack up; ${Math.round(performance.now() - t)} ms in all`,
    );
    const plugs: GuestRun[] = [];
    const unplugs: GuestRun[] = [];
    for (let i = 0; i < cfg.warmup + cfg.runs; i++) {
      const { run: p, serial } = await plugOnce(stack, obs, guest, cfg.bus);
      const u = await unplugOnce(stack, obs, guest, serial);
      if (i < cfg.warmup) continue;
      plugs.push(p);
      unplugs.push(u);
      log(
        `guest run ${plugs.length}/${cfg.runs}: addvolume → status Ready ${p.statusMs} ms, guest kernel ${p.guestKernelMs ?? '?'} ms, guest report ${p.guestMs} ms; removevolume → guest ${u.guestMs} ms`,
      );
    }
    const factNames = ['requested', 'attached-to-node', 'mounted-to-pod', 'ready'];
    const toGuest = percentiles(plugs.map((p) => p.guestMs));
    return {
      run: true,
      reason: gate.reason,
      kernel: guest.image.kernelVersion,
      bus: cfg.bus,
      podStartLatencyMs: cfg.podStartLatencyMs,
      runs: cfg.runs,
      warmup: cfg.warmup,
      bootMs: guest.timings.bootMs,
      addvolumeToGuest: toGuest,
      addvolumeToGuestKernel: percentiles(plugs.map((p) => p.guestKernelMs ?? Number.NaN)),
      addvolumeToStatusReady: percentiles(plugs.map((p) => p.statusMs)),
      addvolumeCall: percentiles(plugs.map((p) => p.callMs)),
      factsFromCall: Object.fromEntries(
        factNames.map((f) => [f, percentiles(plugs.map((p) => p.facts[f] ?? Number.NaN))]),
      ),
      removevolumeToGuest: percentiles(unplugs.map((u) => u.guestMs)),
      removevolumeToStatusGone: percentiles(unplugs.map((u) => u.statusMs)),
      target: { p50Ms: 500, met: toGuest.p50 <= 500 },
      samples: { plug: plugs, unplug: unplugs },
    };
  } catch (err) {
    log(`guest: failed; console tail:\n${guest.guest.console.output().slice(-2000)}`);
    throw err;
  } finally {
    await obs?.stop().catch(() => undefined);
    await stack?.stop();
    await dir.remove();
    await guest.stop();
  }
}
