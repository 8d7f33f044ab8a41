import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Closes every TCP connection to `port` on loopback from outside (`ss -K`), as a network fault
 * would: both ends see the connection reset, and the server keeps running.
 */
export async function dropConnections(port: number): Promise<void> {
  await run('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', String(port)]);
}
