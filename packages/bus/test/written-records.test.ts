import { describe, expect, it } from 'vitest';
import { WrittenRecords } from '../src/written-records.js';

describe('WrittenRecords', () => {
  it('keeps the most recently used units up to its capacity', () => {
    const records = new WrittenRecords(2);
    records.set('a', '{"n":1}', 1);
    records.set('b', '{"n":2}', 2);
    expect(records.get('a')).toEqual({ json: '{"n":1}', revision: 1 }); // a is now the newest
    records.set('c', '{"n":3}', 3);
    expect(records.get('b')).toBeUndefined();
    expect(records.get('a')?.revision).toBe(1);
    expect(records.get('c')?.revision).toBe(3);
    expect(records.size).toBe(2);
  });

  it('replaces a unit on a newer write and forgets it after a conflict', () => {
    const records = new WrittenRecords(2);
    records.set('a', '{"n":1}', 1);
    records.set('a', '{"n":2}', 5);
    expect(records.get('a')).toEqual({ json: '{"n":2}', revision: 5 });
    records.forget('a');
    expect(records.get('a')).toBeUndefined();
    expect(records.size).toBe(0);
  });
});
