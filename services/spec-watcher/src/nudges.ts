import type { OperationKind } from '@plugline/contracts';

/** One member of a VMI's diff: a volume and the direction the spec asks of it. */
export interface NudgeTarget {
  operation: OperationKind;
  volume: string;
}

/** A VMI's hotplug status entries as one change shows them (see {@link NudgeLedger.entryChanges}). */
export interface EntriesSeen {
  /** Volumes the spec wants whose plug the status shows an entry of (in a plug phase). */
  shown: readonly string[];
  /** Volumes the spec wants that have no entry at all. */
  missing: ReadonlySet<string>;
  /** Volumes with an entry, wanted or not. */
  withEntry: readonly string[];
  /** Volumes the spec no longer wants that have a hotplug entry. */
  unwanted: readonly string[];
}

/** What happened to entries since the last change seen: neither an unplug nor a plug did it. */
export interface EntryChanges {
  /** Wanted volumes whose plug entry went (another writer of the status dropped it). */
  dropped: ReadonlySet<string>;
  /** Volumes no longer wanted whose entry came back after it had gone (written back). */
  returned: ReadonlySet<string>;
}

/** What the ledger keeps of a VMI's entries between two changes. */
interface EntriesKept {
  shown: ReadonlySet<string>;
  withEntry: ReadonlySet<string>;
}

const NO_CHANGES: EntryChanges = { dropped: new Set(), returned: new Set() };

// Volume names are DNS labels: they never contain '/'.
const keyOf = (t: NudgeTarget): string => `${t.operation}/${t.volume}`;

/**
 * Level-triggered nudging (issue 10): per VMI uid, the (operation, volume) pairs of its diff that
 * were nudged already. A VMI update nudges only the pairs new to its diff, so a burst of status
 * writes on a VMI with n pending volumes costs O(n) nudges in all, not O(n) per write. A pair that
 * leaves the diff is forgotten, so its return (a re-add while the volume is being unplugged, a
 * lost status entry) is nudged again. The set of a VMI starts empty (a restarted watcher nudges
 * everything it sees), and a lost nudge is repaired by the periodic resync.
 */
export class NudgeLedger {
  readonly #byVmi = new Map<string, Set<string>>();
  /** Per VMI uid, what the last change seen showed of its entries (once it had any). */
  readonly #entries = new Map<string, EntriesKept>();

  /**
   * Records `diff` as the VMI's diff now and returns its members that were not in it the last
   * time: those need a nudge. A VMI whose diff is empty holds nothing.
   */
  fresh(vmiUID: string, diff: readonly NudgeTarget[]): NudgeTarget[] {
    const before = this.#byVmi.get(vmiUID);
    if (diff.length === 0) {
      this.#byVmi.delete(vmiUID);
      return [];
    }
    const now = new Set(diff.map(keyOf));
    this.#byVmi.set(vmiUID, now);
    return before === undefined ? [...diff] : diff.filter((t) => !before.has(keyOf(t)));
  }

  /**
   * Records the VMI's entries as this change shows them, and returns what happened to them since
   * the last change: a wanted volume's plug entry gone (an unplug removes an entry only once the
   * spec no longer wants the volume), or an entry back for a volume no longer wanted (its unplug
   * removed it, and no plug brings it back). A VMI first seen (a restarted watcher) shows no
   * changes; one that never had an entry is not kept.
   */
  entryChanges(vmiUID: string, seen: EntriesSeen): EntryChanges {
    const before = this.#entries.get(vmiUID);
    if (before !== undefined || seen.withEntry.length > 0) {
      this.#entries.set(vmiUID, { shown: new Set(seen.shown), withEntry: new Set(seen.withEntry) });
    }
    if (before === undefined) return NO_CHANGES;
    return {
      dropped: new Set([...before.shown].filter((volume) => seen.missing.has(volume))),
      returned: new Set(seen.unwanted.filter((volume) => !before.withEntry.has(volume))),
    };
  }

  /** Whether `target` was in the VMI's diff the last time. */
  holds(vmiUID: string, target: NudgeTarget): boolean {
    return this.#byVmi.get(vmiUID)?.has(keyOf(target)) === true;
  }

  /** The nudge of `target` was lost (publish failed): the VMI's next update nudges it again. */
  unsent(vmiUID: string, target: NudgeTarget): void {
    this.#byVmi.get(vmiUID)?.delete(keyOf(target));
  }

  /** The VMI is gone (deleted, or being deleted). */
  forget(vmiUID: string): void {
    this.#byVmi.delete(vmiUID);
    this.#entries.delete(vmiUID);
  }

  /** Forgets every VMI not in `live` (a delete the informer never reported). */
  retainOnly(live: ReadonlySet<string>): void {
    for (const uid of this.#byVmi.keys()) if (!live.has(uid)) this.#byVmi.delete(uid);
    for (const uid of this.#entries.keys()) if (!live.has(uid)) this.#entries.delete(uid);
  }

  /** How many VMIs have nudged pairs remembered. */
  get size(): number {
    return this.#byVmi.size;
  }
}
