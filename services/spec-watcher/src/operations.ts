/**
 * Operation ids: issued by the spec-watcher, ordered by every stage. The format lives with the
 * contracts (`newOperationId`, `compareOperationIds`), which every stage shares.
 */
export { compareOperationIds, newOperationId } from '@plugline/contracts';
