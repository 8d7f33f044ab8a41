import { describe, expect, it } from 'vitest';
import {
  MAX_TARGET_INDEX,
  allocateTargets,
  parseTarget,
  targetIndex,
  targetName,
} from '../src/index.js';

describe('target names', () => {
  it.each([
    [0, 'sda'],
    [25, 'sdz'],
    [26, 'sdaa'],
    [27, 'sdab'],
    [51, 'sdaz'],
    [52, 'sdba'],
    [701, 'sdzz'],
    [702, 'sdaaa'],
    [MAX_TARGET_INDEX, 'sdzzz'],
  ])('index %i is %s and back', (index, name) => {
    expect(targetName('sd', index)).toBe(name);
    expect(targetIndex(name)).toBe(index);
  });

  it('round-trips every index', () => {
    const wrong: number[] = [];
    const names = new Set<string>();
    for (let i = 0; i <= MAX_TARGET_INDEX; i += 1) {
      const name = targetName('vd', i);
      names.add(name);
      const back = parseTarget(name);
      if (back?.prefix !== 'vd' || back.index !== i) wrong.push(i);
    }
    expect(wrong).toEqual([]);
    expect(names.size).toBe(MAX_TARGET_INDEX + 1);
  });

  it('refuses out-of-range indexes and malformed names', () => {
    expect(() => targetName('sd', MAX_TARGET_INDEX + 1)).toThrow(/no target name/);
    expect(() => targetName('sd', -1)).toThrow(/no target name/);
    expect(() => targetIndex('sd')).toThrow(/not a disk target/);
    expect(() => targetIndex('sdA')).toThrow(/not a disk target/);
    expect(parseTarget('nvme0n1')).toBeUndefined();
  });
});

describe('allocateTargets', () => {
  it('hands out the lowest free names per bus, in the order of the wanted volumes', () => {
    const result = allocateTargets(
      [],
      [
        { name: 'a', bus: 'scsi' },
        { name: 'b', bus: 'virtio' },
        { name: 'c', bus: 'scsi' },
      ],
      [],
    );
    expect(Object.fromEntries(result)).toEqual({ a: 'sda', b: 'vda', c: 'sdb' });
  });

  it('skips targets the live domain already uses, including disks that are not hotplugged', () => {
    const result = allocateTargets(
      [],
      [
        { name: 'a', bus: 'scsi' },
        { name: 'b', bus: 'virtio' },
      ],
      ['sda', 'vda', 'sdc'],
    );
    expect(Object.fromEntries(result)).toEqual({ a: 'sdb', b: 'vdb' });
  });

  it('keeps the target a volume already has, even when a lower one is free', () => {
    const result = allocateTargets(
      [{ name: 'b', target: 'sdc' }],
      [
        { name: 'a', bus: 'scsi' },
        { name: 'b', bus: 'scsi' },
      ],
      ['sdc'],
    );
    expect(Object.fromEntries(result)).toEqual({ a: 'sda', b: 'sdc' });
  });

  it('does not reuse the letter of a volume still in the status (being unplugged)', () => {
    const result = allocateTargets(
      [
        { name: 'gone', target: 'sda' },
        { name: 'kept', target: 'sdb' },
      ],
      [
        { name: 'kept', bus: 'scsi' },
        { name: 'new', bus: 'scsi' },
      ],
      [],
    );
    expect(Object.fromEntries(result)).toEqual({ kept: 'sdb', new: 'sdc' });
  });

  it('reuses a freed letter, lowest first, once neither the status nor the domain holds it', () => {
    // sda and sdc were freed (no status entry, not in the domain); sdb and sdd are still in use.
    const result = allocateTargets(
      [
        { name: 'b', target: 'sdb' },
        { name: 'd', target: 'sdd' },
      ],
      [
        { name: 'b', bus: 'scsi' },
        { name: 'd', bus: 'scsi' },
        { name: 'x', bus: 'scsi' },
        { name: 'y', bus: 'scsi' },
        { name: 'z', bus: 'scsi' },
      ],
      ['sdb', 'sdd'],
    );
    expect(Object.fromEntries(result)).toEqual({
      b: 'sdb',
      d: 'sdd',
      x: 'sda',
      y: 'sdc',
      z: 'sde',
    });
  });

  it('gives a new target when the kept one has the wrong prefix for the bus or an empty target', () => {
    const result = allocateTargets(
      [
        { name: 'a', target: 'sda' },
        { name: 'b', target: '' },
      ],
      [
        { name: 'a', bus: 'virtio' },
        { name: 'b', bus: 'scsi' },
      ],
      [],
    );
    // sda stays reserved while the status still names it.
    expect(Object.fromEntries(result)).toEqual({ a: 'vda', b: 'sdb' });
  });

  it('resolves two volumes claiming one target: the first wanted keeps it', () => {
    const result = allocateTargets(
      [
        { name: 'a', target: 'sda' },
        { name: 'b', target: 'sda' },
      ],
      [
        { name: 'b', bus: 'scsi' },
        { name: 'a', bus: 'scsi' },
      ],
      [],
    );
    expect(Object.fromEntries(result)).toEqual({ b: 'sda', a: 'sdb' });
  });

  it('is stable: allocating again from its own result changes nothing', () => {
    const wanted = Array.from({ length: 40 }, (_, i) => ({
      name: `v${i}`,
      bus: i % 3 === 0 ? ('virtio' as const) : ('scsi' as const),
    }));
    const first = allocateTargets([], wanted, ['sda']);
    const existing = [...first].map(([name, target]) => ({ name, target }));
    const second = allocateTargets(existing, wanted, [...first.values(), 'sda']);
    expect(second).toEqual(first);
    expect(new Set(first.values()).size).toBe(40);
    expect(first.get('v38')).toBe('sdaa');
    expect(first.get('v39')).toBe('vdn');
  });

  it('goes past z into two letters', () => {
    const occupied = Array.from({ length: 26 }, (_, i) => targetName('sd', i));
    expect(allocateTargets([], [{ name: 'a', bus: 'scsi' }], occupied).get('a')).toBe('sdaa');
  });
});
