import { describe, expect, it } from 'vitest';
import { BoundedMap } from '../src/bounded-map.js';

type Record = { json: string; revision: number };

describe('BoundedMap', () => {
  it('keeps the most recently used units up to its capacity', () => {
    const records = new BoundedMap<string, Record>(2);
    records.set('a', { json: '{"n":1}', revision: 1 });
    records.set('b', { json: '{"n":2}', revision: 2 });
    expect(records.get('a')).toEqual({ json: '{"n":1}', revision: 1 }); // a is now the newest
    records.set('c', { json: '{"n":3}', revision: 3 });
    expect(records.get('b')).toBeUndefined();
    expect(records.get('a')?.revision).toBe(1);
    expect(records.get('c')?.revision).toBe(3);
    expect(records.size).toBe(2);
  });

  it('replaces a unit on a newer write and forgets it after a conflict', () => {
    const records = new BoundedMap<string, Record>(2);
    records.set('a', { json: '{"n":1}', revision: 1 });
    records.set('a', { json: '{"n":2}', revision: 5 });
    expect(records.get('a')).toEqual({ json: '{"n":2}', revision: 5 });
    records.delete('a');
    expect(records.get('a')).toBeUndefined();
    expect(records.size).toBe(0);
  });

  it('peeks at a unit without making it the newest', () => {
    const records = new BoundedMap<string, Record>(2);
    records.set('a', { json: '{"n":1}', revision: 1 });
    records.set('b', { json: '{"n":2}', revision: 2 });
    expect(records.peek('a')?.revision).toBe(1);
    records.set('c', { json: '{"n":3}', revision: 3 });
    expect(records.peek('a')).toBeUndefined();
    expect(records.peek('b')?.revision).toBe(2);
  });
});
