import { describe, expect, it } from 'vitest';
import {
  NudgeLedger,
  type EntriesSeen,
  type EntryChanges,
  type NudgeTarget,
} from '../src/nudges.js';

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

  it('names the wanted volumes whose plug entry went, and the unwanted ones whose entry came back', () => {
    const ledger = new NudgeLedger();
    const seen = (
      wanted: Record<string, string | undefined>,
      unwanted: string[] = [],
    ): EntriesSeen => {
      const names = Object.keys(wanted);
      return {
        shown: names.filter((v) => wanted[v] === 'Ready'),
        missing: new Set(names.filter((v) => wanted[v] === undefined)),
        withEntry: [...names.filter((v) => wanted[v] !== undefined), ...unwanted],
        unwanted,
      };
    };
    const changes = (c: EntryChanges) => ({ dropped: [...c.dropped], returned: [...c.returned] });
    expect(
      changes(ledger.entryChanges('uid', seen({ a: 'Ready', b: 'Ready', c: 'Ready' }))),
    ).toEqual({ dropped: [], returned: [] });
    // b's entry went to an unplug phase (a re-add while unplugging): not dropped; c's is gone.
    expect(
      changes(ledger.entryChanges('uid', seen({ a: 'Ready', b: 'Detaching', c: undefined }))),
    ).toEqual({ dropped: ['c'], returned: [] });
    // Seen once: the next change does not name it again.
    expect(
      changes(ledger.entryChanges('uid', seen({ a: 'Ready', b: 'Detaching', c: undefined }))),
    ).toEqual({ dropped: [], returned: [] });
    // a leaves the spec (its entry stays while it is unplugged), then goes; then is written back.
    expect(changes(ledger.entryChanges('uid', seen({}, ['a'])))).toEqual({
      dropped: [],
      returned: [],
    });
    ledger.entryChanges('uid', seen({}));
    expect(changes(ledger.entryChanges('uid', seen({}, ['a'])))).toEqual({
      dropped: [],
      returned: ['a'],
    });
    // A VMI first seen (a restarted watcher) names nothing: it cannot tell what changed.
    expect(changes(ledger.entryChanges('new', seen({ a: undefined }, ['b'])))).toEqual({
      dropped: [],
      returned: [],
    });
    ledger.entryChanges('gone', seen({ x: 'Ready' }));
    ledger.forget('gone');
    expect(changes(ledger.entryChanges('gone', seen({ x: undefined })))).toEqual({
      dropped: [],
      returned: [],
    });
  });
});
