import { execFile } from 'node:child_process';
import { open, stat } from 'node:fs/promises';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Writes `text` at `offset` of a file or block device, and syncs it. */
export async function writeAt(file: string, offset: number, text: string): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.write(Buffer.from(text, 'latin1'), 0, text.length, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Reads `length` bytes at `offset` of a file or block device. A block device's buffers are
 * dropped first: QEMU writes with O_DIRECT (cache=none) through another device node, and a
 * buffered read could otherwise return what the host cached before the guest wrote.
 */
export async function readAt(file: string, offset: number, length: number): Promise<string> {
  if ((await stat(file)).isBlockDevice()) await exec('blockdev', ['--flushbufs', file]);
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, offset);
    return buffer.toString('latin1');
  } finally {
    await handle.close();
  }
}
