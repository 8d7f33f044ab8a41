import { execFile, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  checkpointPath,
  loadAllCheckpoints,
  loadCheckpoint,
  reconcileAtStart,
  removeAbandonedTempFiles,
  saveCheckpoint,
  withEntry,
  withoutVolume,
} from '../src/index.js';
import type { CheckpointEntry } from '../src/index.js';
import { assertPrivateMountNamespace } from './host.js';

const run = promisify(execFile);

const VMI = '0b7ad3c2-7c2d-4c57-9a39-5a0f6f1bb2a1';
const OTHER = '1c8be4d3-8d3e-5d68-0b4a-6b107f2cc3b2';
const HP = '/k/pods/l/volumes/kubernetes.io~empty-dir/hotplug-disks';

const fsEntry = (volume: string): CheckpointEntry => ({
  volume,
  mode: 'Filesystem',
  target: `${HP}/${volume}.img`,
  source: `/k/pods/a/volumes/kubernetes.io~csi/pv-${volume}/mount/disk.img`,
});
const blockEntry = (volume: string): CheckpointEntry => ({
  volume,
  mode: 'Block',
  target: `${HP}/${volume}`,
  source: `/k/pods/a/volumeDevices/kubernetes.io~csi/pv-${volume}`,
  rdev: { major: 7, minor: 3 },
  cgroupDir: '/sys/fs/cgroup/devices/pod',
});

describe('checkpoint files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'plugline-nm-ckpt-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trips, leaves no temp file, and removes the file when empty', async () => {
    const entries = [fsEntry('a'), blockEntry('b')];
    await saveCheckpoint(join(dir, 'state'), VMI, entries);
    expect(await readdir(join(dir, 'state'))).toEqual([`${VMI}.json`]);
    expect(await loadCheckpoint(join(dir, 'state'), VMI)).toEqual({ vmiUID: VMI, entries });
    await saveCheckpoint(join(dir, 'state'), VMI, []);
    expect(await readdir(join(dir, 'state'))).toEqual([]);
    expect(await loadCheckpoint(join(dir, 'state'), VMI)).toEqual({ vmiUID: VMI, entries: [] });
  });

  it('removes the temp files of writes a killed process left, not those of a live one', async () => {
    const exited = spawnSync(process.execPath, ['-e', '']);
    expect(exited.status).toBe(0);
    const abandoned = `${VMI}.json.tmp-${exited.pid}-ab12cd34`;
    const inFlight = `${OTHER}.json.tmp-${process.pid}-00ff00ff`;
    await saveCheckpoint(dir, VMI, [fsEntry('a')]);
    for (const name of [abandoned, inFlight, 'notes.tmp-1-aa']) {
      await writeFile(join(dir, name), '{"version":1,');
    }
    expect(await removeAbandonedTempFiles(dir)).toEqual([abandoned]);
    expect((await readdir(dir)).sort()).toEqual([`${VMI}.json`, inFlight, 'notes.tmp-1-aa'].sort());
    expect(await loadCheckpoint(dir, VMI)).toEqual({ vmiUID: VMI, entries: [fsEntry('a')] });
    expect(await removeAbandonedTempFiles(join(dir, 'missing'))).toEqual([]);
  });

  it('keeps the last whole checkpoint and no temp file when a write fails (disk full)', async () => {
    // A 8 KiB tmpfs holds the first checkpoint, not the second: its write fails with ENOSPC.
    await assertPrivateMountNamespace();
    const full = join(dir, 'full');
    await mkdir(full);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8k', 'plugline-ckpt-test', full]);
    try {
      await saveCheckpoint(full, VMI, [fsEntry('a')]);
      const many = Array.from({ length: 200 }, (_, i) => fsEntry(`v${i}`));
      await expect(saveCheckpoint(full, VMI, many)).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(await readdir(full)).toEqual([`${VMI}.json`]);
      expect(await loadCheckpoint(full, VMI)).toEqual({ vmiUID: VMI, entries: [fsEntry('a')] });
    } finally {
      await run('umount', [full]);
    }
  });

  it('treats a corrupt file as empty and says so; drops malformed entries', async () => {
    await writeFile(checkpointPath(dir, VMI), '{"version":1,"vmiUID":');
    const corrupt = await loadCheckpoint(dir, VMI);
    expect(corrupt.entries).toEqual([]);
    expect(corrupt.problem).toMatch(/invalid JSON/);

    await writeFile(
      checkpointPath(dir, VMI),
      JSON.stringify({
        version: 1,
        vmiUID: VMI,
        entries: [fsEntry('a'), { volume: 'b', mode: 'Weird' }, blockEntry('c')],
      }),
    );
    const partial = await loadCheckpoint(dir, VMI);
    expect(partial.entries.map((e) => e.volume)).toEqual(['a', 'c']);
    expect(partial.problem).toBe('1 malformed entries dropped');

    await writeFile(
      checkpointPath(dir, VMI),
      JSON.stringify({ version: 1, vmiUID: OTHER, entries: [] }),
    );
    expect((await loadCheckpoint(dir, VMI)).problem).toMatch(/names VMI/);
  });

  it('loads every VMI checkpoint and ignores other files', async () => {
    await saveCheckpoint(dir, VMI, [fsEntry('a')]);
    await saveCheckpoint(dir, OTHER, [blockEntry('b')]);
    await writeFile(join(dir, `${VMI}.json.tmp-1-ab`), 'partial');
    await writeFile(join(dir, 'NOT-A-UID.json'), '{}');
    const all = await loadAllCheckpoints(dir);
    expect(all.map((c) => [c.vmiUID, c.entries.length])).toEqual([
      [VMI, 1],
      [OTHER, 1],
    ]);
    expect(await readFile(checkpointPath(dir, VMI), 'utf8')).toContain('"version": 1');
  });

  it('withEntry replaces by volume; withoutVolume removes', () => {
    const a2 = { ...fsEntry('a'), source: '/other' };
    expect(withEntry([fsEntry('a'), blockEntry('b')], a2)).toEqual([blockEntry('b'), a2]);
    expect(withoutVolume([fsEntry('a'), blockEntry('b')], 'a')).toEqual([blockEntry('b')]);
  });
});

describe('reconcileAtStart', () => {
  const mounted = (...targets: string[]) => new Set(targets);

  it('undoes what no spec wants, keeps what one does, forgets stale and duplicate records', () => {
    const stale = fsEntry('stale');
    const dupOld = { ...fsEntry('dup'), source: '/old' };
    const dupNew = fsEntry('dup');
    const actions = reconcileAtStart({
      checkpoint: new Map([
        [
          VMI,
          [
            fsEntry('keep'),
            fsEntry('gone-mounted'),
            fsEntry('gone-unmounted'),
            blockEntry('gone-block'),
            blockEntry('keep-block'),
            stale,
            dupOld,
            dupNew,
          ],
        ],
        [OTHER, [fsEntry('orphan')]],
      ]),
      mountPoints: mounted(
        fsEntry('keep').target,
        fsEntry('gone-mounted').target,
        fsEntry('orphan').target,
        dupNew.target,
      ),
      wanted: new Map([[VMI, new Set(['keep', 'keep-block', 'stale', 'dup'])]]),
    });
    expect(
      actions.map((a) => [a.vmiUID === VMI ? 'vmi' : 'other', a.type, a.entry.volume]),
    ).toEqual([
      ['vmi', 'unmount', 'gone-mounted'],
      ['vmi', 'unlink', 'gone-unmounted'],
      ['vmi', 'removeBlockNode', 'gone-block'],
      ['vmi', 'forget', 'stale'],
      ['vmi', 'forget', 'dup'],
      ['other', 'unmount', 'orphan'],
    ]); // VMI sorts before OTHER
    expect(actions.find((a) => a.type === 'forget' && a.entry.volume === 'dup')?.entry).toBe(
      dupOld,
    );
  });

  it('wants nothing → everything undone; wants everything and all mounted → nothing to do', () => {
    const checkpoint = new Map([[VMI, [fsEntry('a'), blockEntry('b')]]]);
    const mountPoints = mounted(fsEntry('a').target);
    expect(
      reconcileAtStart({ checkpoint, mountPoints, wanted: new Map() }).map((a) => a.type),
    ).toEqual(['unmount', 'removeBlockNode']);
    expect(
      reconcileAtStart({
        checkpoint,
        mountPoints,
        wanted: new Map([[VMI, new Set(['a', 'b'])]]),
      }),
    ).toEqual([]);
  });
});
