import type { WorkItem } from '@plugline/contracts';
import { BoundedMap } from './bounded-map.js';

/**
 * The work items this process left waiting (nak'd with a delay: the item is the unit's durable
 * reminder to look again), by unit. When a later handling here has served one (the stage says
 * when, `servedWaiting`), it is acked at once instead of coming back after its delay only to be
 * acked. In a plug the orchestrator's work item waits for the attachment pod, the pod's informer
 * nudge finishes the unit, and the item came back five seconds later for a whole handling (lease,
 * snapshot, the machine, release) that changed nothing: one of its three handlings per plug.
 *
 * Only what this process parked is known here; an item another replica parked comes back as
 * before. Bounded: a forgotten reminder costs its redelivery, as before.
 */
export class ParkedItems {
  /** By unit: each parked item by its stream sequence, and how to ack it late. */
  readonly #byUnit = new BoundedMap<string, Map<number, Parked>>(MAX_UNITS);

  /** The item came back (or is being handled): its own handling settles it now. */
  delivered(unit: string, seq: number | undefined): void {
    if (seq === undefined) return;
    const parked = this.#byUnit.get(unit);
    parked?.delete(seq);
    if (parked?.size === 0) this.#byUnit.delete(unit);
  }

  /** The item was left waiting; `lateAck` settles it as its redelivery would. */
  park(unit: string, seq: number, item: WorkItem, lateAck: () => void): void {
    const parked = this.#byUnit.get(unit) ?? new Map<number, Parked>();
    parked.set(seq, { item, lateAck });
    this.#byUnit.set(unit, parked);
  }

  /** Acks and forgets the unit's parked items that `served` says are served; returns how many. */
  settle(unit: string, served: (item: WorkItem) => boolean): number {
    const parked = this.#byUnit.get(unit);
    if (parked === undefined) return 0;
    let acked = 0;
    for (const [seq, { item, lateAck }] of parked) {
      if (!served(item)) continue;
      parked.delete(seq);
      lateAck();
      acked += 1;
    }
    if (parked.size === 0) this.#byUnit.delete(unit);
    return acked;
  }
}

interface Parked {
  item: WorkItem;
  lateAck: () => void;
}

/** Units with parked items remembered; a burst parks at most the units in flight. */
const MAX_UNITS = 10_000;
