import { ApiError, StatusReason, badRequest } from './errors.js';
import { cloneJson } from '@plugline/contracts';

type Json = unknown;
type JsonObject = Record<string, Json>;

function isObject(value: Json): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function clone<T>(value: T): T {
  return cloneJson(value);
}

function patchFailed(message: string): ApiError {
  return new ApiError(422, StatusReason.Invalid, message);
}

// ---------------------------------------------------------------- JSON Patch (RFC 6902)

interface JsonPatchOp {
  op: string;
  path: string;
  from?: string;
  value?: Json;
}

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw patchFailed(`invalid JSON pointer "${pointer}"`);
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(arr: Json[], token: string, forAdd: boolean): number {
  if (forAdd && token === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw patchFailed(`invalid array index "${token}"`);
  const index = Number(token);
  if (index > arr.length || (!forAdd && index === arr.length)) {
    throw patchFailed(`array index ${index} out of bounds`);
  }
  return index;
}

function parentOf(doc: Json, tokens: string[], path: string): { parent: Json; last: string } {
  let node = doc;
  for (const token of tokens.slice(0, -1)) {
    if (Array.isArray(node)) node = node[arrayIndex(node, token, false)];
    else if (isObject(node) && Object.hasOwn(node, token)) node = node[token];
    else throw patchFailed(`doc is missing path: "${path}"`);
  }
  return { parent: node, last: tokens[tokens.length - 1]! };
}

function getAt(doc: Json, path: string): Json {
  let node = doc;
  for (const token of parsePointer(path)) {
    if (Array.isArray(node)) node = node[arrayIndex(node, token, false)];
    else if (isObject(node) && Object.hasOwn(node, token)) node = node[token];
    else throw patchFailed(`doc is missing path: "${path}"`);
  }
  return node;
}

function addAt(doc: Json, path: string, value: Json): Json {
  const tokens = parsePointer(path);
  if (tokens.length === 0) return value;
  const { parent, last } = parentOf(doc, tokens, path);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true), 0, value);
  else if (isObject(parent)) parent[last] = value;
  else throw patchFailed(`doc is missing path: "${path}"`);
  return doc;
}

function removeAt(doc: Json, path: string): Json {
  const tokens = parsePointer(path);
  if (tokens.length === 0) throw patchFailed('cannot remove the whole document');
  const { parent, last } = parentOf(doc, tokens, path);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, false), 1);
  else if (isObject(parent) && Object.hasOwn(parent, last)) delete parent[last];
  else throw patchFailed(`unable to remove nonexistent key: ${last}: missing value`);
  return doc;
}

/** Deep equality for JSON values, as the `test` operation compares. */
export function jsonEqual(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return (
      ka.length === Object.keys(b).length &&
      ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]))
    );
  }
  return false;
}

function applyOp(doc: Json, op: JsonPatchOp): Json {
  switch (op.op) {
    case 'add':
      return addAt(doc, op.path, clone(op.value));
    case 'remove':
      return removeAt(doc, op.path);
    case 'replace':
      getAt(doc, op.path);
      return addAt(removeAt(doc, op.path), op.path, clone(op.value));
    case 'move': {
      const value = getAt(doc, op.from ?? '');
      return addAt(removeAt(doc, op.from ?? ''), op.path, value);
    }
    case 'copy':
      return addAt(doc, op.path, clone(getAt(doc, op.from ?? '')));
    case 'test': {
      let actual: Json;
      try {
        actual = getAt(doc, op.path);
      } catch {
        // As the real API server's JSON patch library: a missing path tests equal to null.
        actual = null;
      }
      if (!jsonEqual(actual, op.value)) {
        throw patchFailed(
          `the server rejected our request due to an error in our request: testing value ${op.path} failed: test operation does not apply: doc is not equal to value`,
        );
      }
      return doc;
    }
    default:
      throw badRequest(`unknown JSON patch operation "${op.op}"`);
  }
}

/** Applies a JSON Patch; a failed `test` or a missing path is a 422 Invalid. */
export function applyJsonPatch(doc: Json, patch: Json): Json {
  if (!Array.isArray(patch)) throw badRequest('a JSON patch must be an array of operations');
  let result = clone(doc);
  for (const raw of patch) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw badRequest('invalid JSON patch operation');
    }
    result = applyOp(result, raw as unknown as JsonPatchOp);
  }
  return result;
}

// ---------------------------------------------------------------- JSON merge patch (RFC 7386)

export function applyMergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const result: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = applyMergePatch(result[key], value);
  }
  return result;
}

// ---------------------------------------------------------------- strategic merge patch

/** Merge keys of the list fields the project patches (by the field's path suffix). */
const MERGE_KEYS: readonly [string, string][] = [
  ['metadata.ownerReferences', 'uid'],
  ['containers', 'name'],
  ['initContainers', 'name'],
  ['ephemeralContainers', 'name'],
  ['spec.volumes', 'name'],
  ['env', 'name'],
  ['ports', 'containerPort'],
  ['volumeMounts', 'mountPath'],
  ['volumeDevices', 'devicePath'],
  ['status.conditions', 'type'],
  ['status.addresses', 'type'],
  ['status.podIPs', 'ip'],
  ['spec.imagePullSecrets', 'name'],
  ['spec.hostAliases', 'ip'],
];
/** Primitive lists merged as sets. */
const MERGE_PRIMITIVES = ['metadata.finalizers'];

function mergeKeyFor(path: string): string | undefined {
  for (const [suffix, key] of MERGE_KEYS) {
    if (path === suffix || path.endsWith(`.${suffix}`)) return key;
  }
  return undefined;
}

function mergeKeyedList(original: Json[], patch: Json[], key: string, path: string): Json[] {
  const result = original.map((item) => clone(item));
  for (const item of patch) {
    if (!isObject(item)) continue;
    const directive = item.$patch;
    const index = result.findIndex((r) => isObject(r) && r[key] === item[key]);
    if (directive === 'delete') {
      if (index >= 0) result.splice(index, 1);
      continue;
    }
    if (index >= 0) result[index] = strategicMerge(result[index], item, path);
    else result.push(strategicMerge({}, item, path));
  }
  return result;
}

function mergeList(original: Json, patch: Json[], path: string): Json[] {
  if (patch.some((p) => isObject(p) && p.$patch === 'replace')) {
    return patch.filter((p) => !(isObject(p) && p.$patch === 'replace')).map(clone);
  }
  const orig = Array.isArray(original) ? original : [];
  const key = mergeKeyFor(path);
  if (key) return mergeKeyedList(orig, patch, key, path);
  if (MERGE_PRIMITIVES.includes(path)) {
    const added: Json[] = patch.filter((p) => !orig.includes(p));
    return [...(orig as Json[]), ...added];
  }
  return patch.map(clone);
}

function applyDirectives(result: JsonObject, patch: JsonObject): void {
  for (const [key, value] of Object.entries(patch)) {
    const del = /^\$deleteFromPrimitiveList\/(.+)$/.exec(key);
    if (del && Array.isArray(value) && Array.isArray(result[del[1]!])) {
      result[del[1]!] = (result[del[1]!] as Json[]).filter((v) => !value.includes(v));
    }
  }
  const retain = patch.$retainKeys;
  if (Array.isArray(retain)) {
    for (const key of Object.keys(result)) {
      if (!retain.includes(key)) delete result[key];
    }
  }
}

/** Applies a strategic merge patch (the subset of directives kubectl sends). */
export function strategicMerge(original: Json, patch: Json, path = ''): Json {
  if (!isObject(patch)) return clone(patch);
  if (patch.$patch === 'replace') {
    const copy = clone(patch);
    delete copy.$patch;
    return copy;
  }
  if (patch.$patch === 'delete') return undefined;
  const result: JsonObject = isObject(original) ? { ...original } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) continue;
    const childPath = path ? `${path}.${key}` : key;
    if (value === null) delete result[key];
    else if (Array.isArray(value)) result[key] = mergeList(result[key], value, childPath);
    else if (isObject(value)) {
      const merged = strategicMerge(result[key], value, childPath);
      if (merged === undefined) delete result[key];
      else result[key] = merged;
    } else result[key] = value;
  }
  applyDirectives(result, patch);
  return result;
}
