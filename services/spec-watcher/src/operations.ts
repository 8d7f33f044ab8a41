/**
 * Operation ids. An id sorts by the time it was issued (fixed-width base-36 milliseconds, then a
 * random tail), so any stage can tell an older operation on a volume from a newer one by comparing
 * ids. Ids match the `operationId` rule of `@plugline/contracts` (`[A-Za-z0-9._:-]`).
 */

const TIME_WIDTH = 10; // base-36 milliseconds stay 10 digits wide until the year 5188
const TAIL_WIDTH = 8;

/** A new operation id issued at `now`; `random` returns values in [0, 1). */
export function newOperationId(now: Date, random: () => number = Math.random): string {
  const time = now.getTime().toString(36).padStart(TIME_WIDTH, '0');
  let tail = '';
  for (let i = 0; i < TAIL_WIDTH; i += 1) tail += Math.floor(random() * 36).toString(36);
  return `${time}-${tail}`;
}

export { compareOperationIds } from '@plugline/contracts';
