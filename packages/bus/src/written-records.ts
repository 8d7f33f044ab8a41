/**
 * What this worker last wrote or read of each unit's record, as the JSON it stored, with its
 * revision: the newest few thousand units, least recently used dropped first. The stage runtime
 * reads a unit from here instead of from the bucket when its lease shows that nobody held the
 * unit since this worker's own release (see `LeaseOrigin.OwnRelease`), which saves a round trip
 * on the path to the next stage. Kept as JSON, not objects: what a run restores from it must not
 * share objects with what an earlier run left.
 */
export class WrittenRecords {
  readonly #byUnit = new Map<string, { json: string; revision: number }>();

  constructor(readonly capacity = DEFAULT_CAPACITY) {}

  get(unit: string): { json: string; revision: number } | undefined {
    const known = this.#byUnit.get(unit);
    if (known === undefined) return undefined;
    this.#byUnit.delete(unit);
    this.#byUnit.set(unit, known);
    return known;
  }

  set(unit: string, json: string, revision: number): void {
    this.#byUnit.delete(unit);
    this.#byUnit.set(unit, { json, revision });
    if (this.#byUnit.size <= this.capacity) return;
    const oldest = this.#byUnit.keys().next();
    if (oldest.done !== true) this.#byUnit.delete(oldest.value);
  }

  /** After a conflict or a failure: the unit's stored record is not known any more. */
  forget(unit: string): void {
    this.#byUnit.delete(unit);
  }

  get size(): number {
    return this.#byUnit.size;
  }
}

/** Bounds the memory: a few KiB of JSON per unit; a unit not here costs one read. */
const DEFAULT_CAPACITY = 4096;
