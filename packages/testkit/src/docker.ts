import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { testkitEnv } from './config.js';

/** Where the Docker engine's API socket is expected: `DOCKER_HOST=unix://…` or the default path. */
export function dockerSocketPath(): string {
  const host = testkitEnv().dockerHost;
  if (host?.startsWith('unix://')) return host.slice('unix://'.length);
  return '/var/run/docker.sock';
}

/**
 * True when a Docker engine answers `GET /_ping` on its socket within `timeoutMs` (default 100).
 * A missing socket is decided without any I/O beyond one `stat`, so the no-engine answer takes
 * well under a millisecond; a dead socket costs at most `timeoutMs`.
 */
export async function dockerReachable(
  timeoutMs = 100,
  socketPath = dockerSocketPath(),
): Promise<boolean> {
  if (!existsSync(socketPath)) return false;
  return new Promise<boolean>((resolve) => {
    const req = request(
      { socketPath, path: '/_ping', method: 'GET', timeout: timeoutMs },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.on('error', () => resolve(false));
    req.end();
  });
}
