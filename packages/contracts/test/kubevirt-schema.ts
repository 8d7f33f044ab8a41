/**
 * KubeVirt's own definitions (test/fixtures/kubevirt-definitions.json, extracted from KubeVirt's
 * OpenAPI document) compiled with ajv. `closed` adds `additionalProperties: false` to every object
 * schema that lists its properties, so a misspelt or invented field name fails validation.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ValidateFunction } from 'ajv';
import { Ajv } from 'ajv';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

type Schema = Record<string, unknown>;

export const definitions = (
  JSON.parse(readFileSync(join(FIXTURES, 'kubevirt-definitions.json'), 'utf8')) as {
    definitions: Record<string, Schema>;
  }
).definitions;

export function exampleFiles(): string[] {
  return readdirSync(join(FIXTURES, 'examples'))
    .filter((f) => f.endsWith('.yaml'))
    .sort();
}

export function readExample(file: string): string {
  return readFileSync(join(FIXTURES, 'examples', file), 'utf8');
}

function close(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(close);
  if (node === null || typeof node !== 'object') return node;
  const out: Schema = {};
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    // `properties` maps names to schemas: close the schemas, never treat names as keywords.
    out[k] =
      k === 'properties' && v !== null && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v as Schema).map(([name, s]) => [name, close(s)]))
        : close(v);
  }
  if ('properties' in out && !('additionalProperties' in out)) out.additionalProperties = false;
  return out;
}

const isInt = (bits: number) => (n: number) =>
  Number.isInteger(n) && Math.abs(n) <= (bits === 32 ? 2 ** 31 : Number.MAX_SAFE_INTEGER);

function compiler(closed: boolean): (name: string) => ValidateFunction {
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addFormat('int32', { type: 'number', validate: isInt(32) });
  ajv.addFormat('int64', { type: 'number', validate: isInt(64) });
  ajv.addFormat('double', { type: 'number', validate: Number.isFinite });
  ajv.addFormat('float', { type: 'number', validate: Number.isFinite });
  ajv.addFormat('date-time', (s: string) => !Number.isNaN(Date.parse(s)));
  ajv.addFormat('byte', /^[A-Za-z0-9+/]*={0,2}$/);
  ajv.addFormat('int-or-string', () => true);
  ajv.addSchema({ $id: 'kubevirt', definitions: closed ? close(definitions) : definitions });
  const cache = new Map<string, ValidateFunction>();
  return (name) => {
    let validate = cache.get(name);
    if (validate === undefined) {
      if (!(name in definitions)) throw new Error(`no definition ${name}`);
      validate = ajv.compile({ $ref: `kubevirt#/definitions/${name}` });
      cache.set(name, validate);
    }
    return validate;
  };
}

export const openSchema = compiler(false);
export const closedSchema = compiler(true);

/** Validates against the closed definition; returns ajv's errors as readable strings. */
export function schemaErrors(name: string, value: unknown, closed = true): string[] {
  const validate = (closed ? closedSchema : openSchema)(name);
  if (validate(value)) return [];
  return (validate.errors ?? []).map(
    (e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`,
  );
}
