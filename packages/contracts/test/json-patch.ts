/**
 * A small RFC 6902 applier for tests (object members and array indices). Like the API server's
 * json-patch library, a `test` against a missing member passes when the expected value is null.
 */
import { isDeepStrictEqual } from 'node:util';
import type { JsonPatchOperation } from '../src/index.js';

export class PatchTestFailed extends Error {
  override name = 'PatchTestFailed';
}

type Container = Record<string, unknown> | unknown[];

function locate(doc: unknown, path: string): { parent: Container; key: string } {
  const tokens = path
    .split('/')
    .slice(1)
    .map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
  let node = doc;
  for (const token of tokens.slice(0, -1)) {
    node = (node as Record<string, unknown>)[token];
    if (node === null || typeof node !== 'object') throw new Error(`path ${path} does not exist`);
  }
  return { parent: node as Container, key: tokens.at(-1) ?? '' };
}

export function applyPatch<T>(document: T, ops: readonly JsonPatchOperation[]): T {
  const doc = structuredClone(document);
  for (const op of ops) {
    const { parent, key } = locate(doc, op.path);
    const record = parent as Record<string, unknown>;
    switch (op.op) {
      case 'test': {
        const actual = Object.hasOwn(parent, key) ? record[key] : null;
        if (!isDeepStrictEqual(actual ?? null, op.value)) {
          throw new PatchTestFailed(`test failed at ${op.path}`);
        }
        break;
      }
      case 'add':
        if (Array.isArray(parent))
          parent.splice(key === '-' ? parent.length : Number(key), 0, op.value);
        else record[key] = op.value;
        break;
      case 'replace':
        if (!Object.hasOwn(parent, key)) throw new Error(`replace: ${op.path} does not exist`);
        record[key] = op.value;
        break;
      case 'remove':
        if (Array.isArray(parent)) parent.splice(Number(key), 1);
        else delete record[key];
        break;
    }
  }
  return doc;
}
