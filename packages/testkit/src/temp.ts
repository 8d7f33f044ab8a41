import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trackDir } from './cleanup.js';

/** A fresh temporary directory, removed on dispose (`await using dir = await tempDir()`). */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
  /** `join(path, ...parts)` */
  join(...parts: string[]): string;
  remove(): Promise<void>;
}

export async function tempDir(prefix = 'plugline-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  const untrack = trackDir(path);
  const remove = async (): Promise<void> => {
    await rm(path, { recursive: true, force: true });
    untrack();
  };
  return {
    path,
    join: (...parts) => join(path, ...parts),
    remove,
    [Symbol.asyncDispose]: remove,
  };
}
