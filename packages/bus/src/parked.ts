import { BoundedMap } from './bounded-map.js';

/**
 * The work items this process left waiting (nak'd with a delay: the item is the unit's durable
 * reminder to look again), by unit. When a later handling here leaves the unit waiting on
 * nothing, those reminders have nothing left to remind of: each would come back after its delay
 * only to find the unit at rest and be acked. They are acked at once instead. In a plug the
 * orchestrator's work item waits for the attachment pod, the pod's informer nudge finishes the
 * unit, and the item came back five seconds later for a whole handling (lease, snapshot, the
 * machine, release) that changed nothing: one of its three handlings per plug.
 *
 * Only for stages that opt in (`ackWaitingAtRest`): a machine that decides by the item in hand
 * may need the waiting item itself to come back (the domain-updater's unplug item, after nudges
 * read against a lagging cache changed nothing). Only what this process parked is known here;
 * an item another replica parked comes back as before. Bounded: a forgotten reminder costs its
 * redelivery, as before.
 */
export class ParkedItems {
  /** By unit: each parked item's stream sequence and how to ack it late. */
  readonly #byUnit = new BoundedMap<string, Map<number, () => void>>(MAX_UNITS);

  /** The item came back (or is being handled): its own handling settles it now. */
  delivered(unit: string, seq: number | undefined): void {
    if (seq === undefined) return;
    const parked = this.#byUnit.get(unit);
    parked?.delete(seq);
    if (parked?.size === 0) this.#byUnit.delete(unit);
  }

  /** The item was left waiting; `lateAck` settles it as its redelivery would. */
  park(unit: string, seq: number, lateAck: () => void): void {
    const parked = this.#byUnit.get(unit) ?? new Map<number, () => void>();
    parked.set(seq, lateAck);
    this.#byUnit.set(unit, parked);
  }

  /** The unit waits on nothing now: acks its parked items; returns how many. */
  atRest(unit: string): number {
    const parked = this.#byUnit.get(unit);
    if (parked === undefined) return 0;
    this.#byUnit.delete(unit);
    for (const lateAck of parked.values()) lateAck();
    return parked.size;
  }
}

/** Units with parked items remembered; a burst parks at most the units in flight. */
const MAX_UNITS = 10_000;
