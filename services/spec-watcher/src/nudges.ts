import type { OperationKind } from '@plugline/contracts';

/** One member of a VMI's diff: a volume and the direction the spec asks of it. */
export interface NudgeTarget {
  operation: OperationKind;
  volume: string;
}

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
  /** Per VMI uid, the volumes the spec wants whose plug the status showed an entry of. */
  readonly #shown = new Map<string, Set<string>>();

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
   * Records the volumes the spec wants whose plug the status shows an entry of now (`shown`: in
   * a plug phase), and returns those it showed the last time that now have no entry at all
   * (`missing`): the entry was dropped by something other than an unplug, which only ends once the
   * spec no longer wants the volume. A VMI that shows none holds nothing.
   */
  dropped(vmiUID: string, shown: readonly string[], missing: ReadonlySet<string>): string[] {
    const before = this.#shown.get(vmiUID);
    if (shown.length === 0) this.#shown.delete(vmiUID);
    else this.#shown.set(vmiUID, new Set(shown));
    return before === undefined ? [] : [...before].filter((volume) => missing.has(volume));
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
    this.#shown.delete(vmiUID);
  }

  /** Forgets every VMI not in `live` (a delete the informer never reported). */
  retainOnly(live: ReadonlySet<string>): void {
    for (const uid of this.#byVmi.keys()) if (!live.has(uid)) this.#byVmi.delete(uid);
    for (const uid of this.#shown.keys()) if (!live.has(uid)) this.#shown.delete(uid);
  }

  /** How many VMIs have nudged pairs remembered. */
  get size(): number {
    return this.#byVmi.size;
  }
}
