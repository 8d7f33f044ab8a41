import { describe, expect, it } from 'vitest';
import { HeldItems } from '../src/held.js';

describe('HeldItems', () => {
  it('holds an item in hand until it is done', () => {
    const held = new HeldItems(0);
    expect(held.holds(7)).toBe(false);
    held.inHand(7);
    expect(held.holds(7)).toBe(true);
    held.done(7);
    expect(held.holds(7)).toBe(false);
  });

  it('holds an item sent back until its delay and the grace after it have run out', () => {
    const held = new HeldItems(60_000);
    held.inHand(1);
    held.sentBack(1, 0);
    // Due now, but it may come back up to a minute late.
    expect(held.holds(1)).toBe(true);

    const strict = new HeldItems(0);
    strict.sentBack(2, 3_600_000);
    expect(strict.holds(2)).toBe(true);
    // Overdue: the server should have delivered it again; it is no longer counted as held.
    strict.sentBack(3, -1);
    expect(strict.holds(3)).toBe(false);
  });
});
