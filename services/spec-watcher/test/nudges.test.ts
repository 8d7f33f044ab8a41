import { describe, expect, it } from 'vitest';
import { NudgeLedger, type NudgeTarget } from '../src/nudges.js';

const plug = (volume: string): NudgeTarget => ({ operation: 'plug', volume });
const unplug = (volume: string): NudgeTarget => ({ operation: 'unplug', volume });

describe('NudgeLedger', () => {
  it('nudges each member of a diff once while it stays in the diff', () => {
    const ledger = new NudgeLedger();
    const all = ['a', 'b', 'c', 'd'].map(plug);
    expect(ledger.fresh('uid', all)).toEqual(all);
    // The status writes of a burst: the diff shrinks one volume at a time; nothing is new.
    let nudged = 0;
    for (let left = all.length; left >= 0; left--)
      nudged += ledger.fresh('uid', all.slice(0, left)).length;
    expect(nudged).toBe(0);
    expect(ledger.size).toBe(0);
  });

  it('nudges a pair again once it left the diff and came back, or changed direction', () => {
    const ledger = new NudgeLedger();
    ledger.fresh('uid', [plug('a')]);
    expect(ledger.fresh('uid', [unplug('a')])).toEqual([unplug('a')]);
    expect(ledger.fresh('uid', [unplug('a'), plug('a')])).toEqual([plug('a')]);
    ledger.fresh('uid', []);
    expect(ledger.fresh('uid', [plug('a')])).toEqual([plug('a')]);
  });

  it('keeps VMIs apart, and a new uid (a VMI recreated under its name) starts empty', () => {
    const ledger = new NudgeLedger();
    ledger.fresh('one', [plug('a')]);
    expect(ledger.fresh('two', [plug('a')])).toEqual([plug('a')]);
    ledger.forget('one');
    expect(ledger.fresh('one', [plug('a')])).toEqual([plug('a')]);
  });

  it('an unsent nudge is sent on the next update; VMIs not live any more are forgotten', () => {
    const ledger = new NudgeLedger();
    ledger.fresh('uid', [plug('a'), plug('b')]);
    ledger.unsent('uid', plug('b'));
    expect(ledger.fresh('uid', [plug('a'), plug('b')])).toEqual([plug('b')]);
    ledger.fresh('gone', [plug('x')]);
    ledger.retainOnly(new Set(['uid']));
    expect(ledger.size).toBe(1);
  });

  it('names the volumes whose plug entry was shown and is now gone while the spec wants them', () => {
    const ledger = new NudgeLedger();
    expect(ledger.dropped('uid', ['a', 'b', 'c'], new Set())).toEqual([]);
    // b's entry went to an unplug phase (a re-add while unplugging): not dropped; c's is gone.
    expect(ledger.dropped('uid', ['a'], new Set(['c']))).toEqual(['c']);
    // Seen once: the next change does not name it again; a new entry shown and dropped is named.
    expect(ledger.dropped('uid', ['a'], new Set(['c']))).toEqual([]);
    expect(ledger.dropped('uid', [], new Set(['a']))).toEqual(['a']);
    // A VMI first seen (a restarted watcher) names nothing: it cannot tell a drop from a new plug.
    expect(ledger.dropped('new', [], new Set(['a']))).toEqual([]);
    ledger.dropped('gone', ['x'], new Set());
    ledger.forget('gone');
    expect(ledger.dropped('gone', [], new Set(['x']))).toEqual([]);
  });
});
