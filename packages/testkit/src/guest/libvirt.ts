import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../wait.js';
import { guestEnv } from './config.js';
import { GuestHarnessError } from './errors.js';
import { exec } from './exec.js';

/**
 * The script that runs in the new mount namespace (`unshare --mount --propagation private`): it
 * hides the host's libvirt folders behind private ones, starts virtlogd and libvirtd, and tears
 * everything down when its stdin closes (see the script).
 */
const NAMESPACE_SCRIPT = fileURLToPath(new URL('libvirt-namespace.sh', import.meta.url));

/** libvirtd's configuration for the private instance: root-only socket, no auth. */
const LIBVIRTD_CONF = `unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`;

/**
 * QEMU's configuration: it runs as root without a private /dev namespace, cgroups or a security
 * driver, so it sees the bind mounts the node-mounter makes in this namespace after the guest
 * started (a per-QEMU mount namespace would not receive them: ours is private), and opens block
 * nodes that live outside /dev. KubeVirt's launcher relies on the same: the disk is already in the
 * pod's filesystem.
 */
const QEMU_CONF = `user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
`;

export interface StartLibvirtOptions {
  /** Where QEMU's capability cache lives between runs (default `<guest cache>/libvirt-cache`). */
  capabilityCacheDir?: string;
  /** How long to wait for libvirtd's first answer (default 90 s; ~8 s on a cold cache). */
  startTimeoutMs?: number;
}

/**
 * virtlogd and libvirtd, as root without systemd, in a private mount namespace of their own:
 * private `/run/libvirt`, `/var/lib/libvirt`, `/var/log/libvirt` and `/etc/libvirt`, so they
 * never meet a libvirtd the machine already runs. Clients reach them from anywhere through
 * {@link LibvirtDaemons.uri} (the socket is a file in {@link LibvirtDaemons.dir}); a process that
 * must share their mounts (the node-mounter under test) runs through
 * {@link LibvirtDaemons.inNamespace}.
 */
export interface LibvirtDaemons extends AsyncDisposable {
  /** `qemu+unix:///system?socket=<dir>/run/libvirt-sock`: give it to virsh or the driver. */
  readonly uri: string;
  /** The private folder (console logs, images and the daemons' logs may go here). */
  readonly dir: string;
  /** A process in the namespace: `/proc/<pid>/ns/mnt` names it. */
  readonly namespacePid: number;
  /** The namespace, as `readlink /proc/<pid>/ns/mnt` shows it (`mnt:[4026532177]`). */
  readonly namespaceId: string;
  /** A command line that runs `command args` inside the namespace (through nsenter). */
  inNamespace(command: string, args?: readonly string[]): { command: string; args: string[] };
  /** `virsh -q -c <uri> ...args`; resolves with stdout. */
  virsh(args: readonly string[], timeoutMs?: number): Promise<string>;
  /** Records a loop device to detach at teardown (see `attachLoopDevice`). */
  trackLoopDevice(device: string): Promise<void>;
  /** The daemons' output and logs so far (for failure messages). */
  diagnostics(): Promise<string>;
  /** Tears everything down (idempotent): domains, daemons, namespace, loop devices, folder. */
  stop(): Promise<void>;
}

function holderOutput(child: ChildProcess): () => string {
  let out = '';
  const add = (chunk: Buffer): void => {
    out = (out + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => out;
}

async function prepareDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'plugline-libvirt-'));
  await Promise.all(['run', 'lib', 'log', 'etc'].map((d) => mkdir(path.join(dir, d))));
  await writeFile(path.join(dir, 'etc', 'libvirtd.conf'), LIBVIRTD_CONF);
  await writeFile(path.join(dir, 'etc', 'qemu.conf'), QEMU_CONF);
  return dir;
}

/** Starts the private libvirt. Dispose with `await using` or call `stop()`. */
export async function startLibvirt(options: StartLibvirtOptions = {}): Promise<LibvirtDaemons> {
  const capCache = options.capabilityCacheDir ?? path.join(guestEnv().cacheDir, 'libvirt-cache');
  await mkdir(capCache, { recursive: true });
  const dir = await prepareDir();
  const parentNs = await readlink('/proc/self/ns/mnt');
  const uri = `qemu+unix:///system?socket=${path.join(dir, 'run', 'libvirt-sock')}`;

  const holder = spawn(
    'unshare',
    ['--mount', '--propagation', 'private', 'bash', NAMESPACE_SCRIPT, dir, capCache, parentNs],
    // Its own process group: a terminal's Ctrl-C reaches the test, whose exit closes the pipe.
    { stdio: ['pipe', 'pipe', 'pipe'], detached: true },
  );
  const output = holderOutput(holder);
  const exited = new Promise<void>((resolve) => holder.once('exit', () => resolve()));
  holder.once('error', () => undefined);
  holder.unref();
  // No exit hook kills the holder: when this process ends, however it ends, the holder's stdin
  // closes and its script tears everything down (a SIGKILL would skip that).
  let stopped: Promise<void> | undefined;

  const daemons: LibvirtDaemons = {
    uri,
    dir,
    namespacePid: holder.pid ?? 0,
    namespaceId: '',
    inNamespace(command, args = []) {
      return {
        command: 'nsenter',
        args: [`--mount=/proc/${daemons.namespacePid}/ns/mnt`, '--', command, ...args],
      };
    },
    async virsh(args, timeoutMs = 60_000) {
      return (await exec('virsh', ['-q', '-c', uri, ...args], { timeoutMs })).stdout;
    },
    async trackLoopDevice(device) {
      await writeFile(path.join(dir, 'loop-devices'), `${device}\n`, { flag: 'a' });
    },
    async diagnostics() {
      const log = await exec('tail', ['-n', '40', path.join(dir, 'log', 'libvirtd.log')]).then(
        (r) => r.stdout,
        () => '',
      );
      return `namespace script:\n${output()}\nlibvirtd.log:\n${log}`;
    },
    stop() {
      stopped ??= (async () => {
        if (holder.exitCode === null && holder.signalCode === null) {
          holder.stdin?.end();
          const timer = setTimeout(() => holder.kill('SIGTERM'), 30_000);
          await exited;
          clearTimeout(timer);
        }
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
    [Symbol.asyncDispose]() {
      return daemons.stop();
    },
  };

  try {
    await waitFor(
      () => {
        if (output().includes('PLUGLINE-NS error') || holder.exitCode !== null) return 'failed';
        return output().includes('PLUGLINE-NS started') && 'started';
      },
      { timeout: 30_000, interval: 20, description: 'the libvirt namespace' },
    ).then((state) => {
      if (state === 'failed') throw new GuestHarnessError(output().trim());
    });
    (daemons as { namespaceId: string }).namespaceId = await readlink(
      `/proc/${daemons.namespacePid}/ns/mnt`,
    );
    await waitFor(() => daemons.virsh(['version'], 10_000).then(() => true), {
      timeout: options.startTimeoutMs ?? 90_000,
      interval: 100,
      description: `libvirtd at ${uri}`,
    });
  } catch (error) {
    const detail = await daemons.diagnostics();
    await daemons.stop();
    throw new GuestHarnessError(`libvirt did not start: ${String(error)}\n${detail}`, {
      cause: error,
    });
  }
  return daemons;
}
