import { exec } from './exec.js';
import type { LibvirtDaemons } from './libvirt.js';

/** A loop device over an image file. */
export interface LoopDevice extends AsyncDisposable {
  /** `/dev/loopN` */
  readonly device: string;
  /** Detaches it (idempotent; the daemons' teardown detaches it too, whatever happens). */
  detach(): Promise<void>;
}

/**
 * `losetup -f --show <file>`, recorded with the libvirt harness so its teardown detaches the
 * device even when the test never gets to (loop devices are not namespaced).
 */
export async function attachLoopDevice(libvirt: LibvirtDaemons, file: string): Promise<LoopDevice> {
  const device = (await exec('losetup', ['-f', '--show', file])).stdout.trim();
  await libvirt.trackLoopDevice(device);
  let detached: Promise<void> | undefined;
  const detach = (): Promise<void> => {
    detached ??= exec('losetup', ['-d', device]).then(
      () => undefined,
      () => undefined,
    );
    return detached;
  };
  return { device, detach, [Symbol.asyncDispose]: detach };
}
