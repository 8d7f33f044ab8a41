import { constants as osConstants } from 'node:os';

import koffi from 'koffi';

import { MountError } from './errors.js';

/**
 * mount(2), umount2(2) and mknod(2), called in this process through libc (koffi) instead of by
 * running mount(8), umount(8) and mknod(1). The bench's profile of the 75-volume burst showed
 * `ChildProcess.spawn` at 30 % of node-mounter's busy time: each child forks this large process
 * with the event loop blocked (~6 ms a call), and umount(8) reads the whole mount table before it
 * unmounts (34 ms a call with 5,000 volumes mounted). A bind mount or unmount of a local file
 * takes tens of microseconds, so those calls are synchronous, and errno is read right after each.
 * An unmount is not: it waits for the kernel to let go of the mount (an RCU grace period: 1.1 ms
 * on average, up to 27 ms under the bench's load), and a network filesystem's for its writes to
 * be flushed, so it runs on koffi's worker threads, where a hung one holds one thread instead of
 * every VMI's work, health probes and NATS heartbeats. (The bench measured no throughput change.)
 */

const MS_BIND = 4096;
/** S_IFBLK: the file type bits of a block device node. */
const S_IFBLK = 0o060000;

type Call = (...args: unknown[]) => unknown;

interface AsyncCall {
  async(...args: unknown[]): void;
}

interface Libc {
  readonly mount: Call;
  readonly umount2: Call & AsyncCall;
  readonly mknod: Call;
  readonly strerror: Call;
  readonly statx: AsyncCall;
}

let libc: Libc | undefined;

function loadLibc(): Libc {
  if (libc !== undefined) return libc;
  const lib = koffi.load('libc.so.6');
  const fn = (definition: string): Call => lib.func(definition) as Call;
  libc = {
    mount: fn(
      'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)',
    ),
    umount2: lib.func('int umount2(const char *target, int flags)') as Call & AsyncCall,
    mknod: fn('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
    strerror: fn('const char *strerror(int errnum)'),
    statx: lib.func(
      'int statx(int dirfd, const char *path, int flags, uint32_t mask, _Out_ uint8_t *buf)',
    ) as AsyncCall,
  };
  return libc;
}

const ERRNO_NAMES = new Map(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name] as const),
);

/** Throws MountError for a call that returned non-zero, naming errno (`EBUSY: Device or resource busy`). */
function check(result: unknown, call: string, c: Libc): void {
  if (result === 0) return;
  const errno = koffi.errno();
  const name = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
  const detail = `${name}: ${String(c.strerror(errno))}`;
  throw new MountError(call, detail, `${call}: ${detail}`, { cause: { errno, code: name } });
}

/** `mount --bind source target`. */
export function bindMount(source: string, target: string): void {
  const c = loadLibc();
  check(c.mount(source, target, null, MS_BIND, null), `mount --bind ${source} ${target}`, c);
}

/**
 * `umount target` (never lazy: EBUSY means the disk is still in use), on a worker thread. errno
 * is the worker's, so a failed call is made once more here to read it: it fails alike (the
 * target is busy, or not mounted), or it succeeds because what held the target let go.
 */
export function unmount(target: string): Promise<void> {
  const c = loadLibc();
  return new Promise((resolve, reject) => {
    const done = (err: unknown, result: unknown): void => {
      if ((err === null || err === undefined) && result === 0) return resolve();
      try {
        check(c.umount2(target, 0), `umount ${target}`, c);
        resolve();
      } catch (failure) {
        reject(failure instanceof Error ? failure : new Error(String(failure)));
      }
    };
    try {
      c.umount2.async(target, 0, done);
    } catch (err) {
      done(err, undefined);
    }
  });
}

/** glibc's `gnu_dev_makedev`: a dev_t from major and minor. */
export function makeDeviceNumber(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return (
    ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn)
  );
}

/** `mknod path b major minor`; mknod(2) cuts `mode` by the umask, so callers set it after. */
export function makeBlockNode(path: string, mode: number, major: number, minor: number): void {
  const c = loadLibc();
  check(
    c.mknod(path, S_IFBLK | (mode & 0o7777), makeDeviceNumber(major, minor)),
    `mknod ${path} b ${major} ${minor}`,
    c,
  );
}

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
/** Attributes as cached: a network filesystem is not asked to revalidate them. */
const AT_STATX_DONT_SYNC = 0x4000;
/** statx(2): the file is the root of a mount (Linux 5.8). */
const STATX_ATTR_MOUNT_ROOT = 0x2000n;
/** `struct statx`: its size, and the offsets of stx_attributes and stx_attributes_mask. */
const STATX_SIZE = 256;
const STX_ATTRIBUTES = 8;
const STX_ATTRIBUTES_MASK = 56;

/**
 * Whether `path` itself (a symlink is not followed) is the root of a mount: something is mounted
 * on it. One statx(2), run on koffi's worker threads (a target's mount may be of a network
 * filesystem that hangs). Undefined when statx cannot tell: it failed (`path` is missing, say),
 * the kernel predates the attribute, or too many calls are queued; the caller asks another way.
 */
export function isMountRoot(path: string): Promise<boolean | undefined> {
  const c = loadLibc();
  const buf = Buffer.alloc(STATX_SIZE);
  return new Promise((resolve) => {
    const done = (err: unknown, result: unknown): void => {
      if (err !== null && err !== undefined) return resolve(undefined);
      if (result !== 0 || (buf.readBigUInt64LE(STX_ATTRIBUTES_MASK) & STATX_ATTR_MOUNT_ROOT) === 0n)
        return resolve(undefined);
      resolve((buf.readBigUInt64LE(STX_ATTRIBUTES) & STATX_ATTR_MOUNT_ROOT) !== 0n);
    };
    try {
      c.statx.async(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, 0, buf, done);
    } catch (err) {
      done(err, undefined);
    }
  });
}
