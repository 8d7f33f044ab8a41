import { badRequest } from './errors.js';
import type { KubeObject } from './resources.js';

type LabelOp = 'eq' | 'neq' | 'in' | 'notin' | 'exists' | 'notexists';

interface LabelRequirement {
  key: string;
  op: LabelOp;
  values: string[];
}

interface FieldRequirement {
  path: string;
  equal: boolean;
  value: string;
}

export type Matcher = (obj: KubeObject) => boolean;

/** Splits on commas that are not inside parentheses. */
function splitTop(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

const SET_RE = /^([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)$/;
const EQ_RE = /^([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=()]*)$/;
const EXISTS_RE = /^(!?)\s*([^\s!=()]+)$/;

function parseLabelRequirement(part: string): LabelRequirement {
  const set = SET_RE.exec(part);
  if (set) {
    const values = set[3]!
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v.length > 0);
    return { key: set[1]!, op: set[2] === 'in' ? 'in' : 'notin', values };
  }
  const eq = EQ_RE.exec(part);
  if (eq) return { key: eq[1]!, op: eq[2] === '!=' ? 'neq' : 'eq', values: [eq[3]!] };
  const exists = EXISTS_RE.exec(part);
  if (exists) return { key: exists[2]!, op: exists[1] ? 'notexists' : 'exists', values: [] };
  throw badRequest(`unable to parse requirement: invalid label selector "${part}"`);
}

function matchLabel(req: LabelRequirement, labels: Record<string, string>): boolean {
  const has = Object.hasOwn(labels, req.key);
  const value = labels[req.key];
  switch (req.op) {
    case 'eq':
      return has && value === req.values[0];
    case 'neq':
      return !has || value !== req.values[0];
    case 'in':
      return has && req.values.includes(value!);
    case 'notin':
      return !has || !req.values.includes(value!);
    case 'exists':
      return has;
    case 'notexists':
      return !has;
  }
}

/** Parses a label selector in the API's string form (`a=b,c in (d,e),!f`). */
export function parseLabelSelector(text: string | null | undefined): Matcher | undefined {
  if (!text) return undefined;
  const reqs = splitTop(text).map(parseLabelRequirement);
  if (reqs.length === 0) return undefined;
  return (obj) => {
    const labels = obj.metadata?.labels ?? {};
    return reqs.every((r) => matchLabel(r, labels));
  };
}

/** Reads a dotted field path from an object, as a field selector sees it. */
export function fieldValue(obj: KubeObject, path: string): string {
  let node: unknown = obj;
  for (const segment of path.split('.')) {
    if (node === null || typeof node !== 'object') return '';
    node = (node as Record<string, unknown>)[segment];
  }
  if (node === undefined || node === null) return '';
  return typeof node === 'string' ? node : JSON.stringify(node);
}

function parseFieldRequirement(part: string): FieldRequirement {
  const m = /^([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*)$/.exec(part);
  if (!m) throw badRequest(`invalid field selector: "${part}"`);
  return { path: m[1]!, equal: m[2] !== '!=', value: m[3]!.trim() };
}

/** Parses a field selector (`metadata.name=x,status.phase!=Running`). */
export function parseFieldSelector(text: string | null | undefined): Matcher | undefined {
  if (!text) return undefined;
  const reqs = splitTop(text).map(parseFieldRequirement);
  if (reqs.length === 0) return undefined;
  return (obj) => reqs.every((r) => (fieldValue(obj, r.path) === r.value) === r.equal);
}

/** Combines optional matchers into one (undefined when none). */
export function allOf(...matchers: (Matcher | undefined)[]): Matcher | undefined {
  const present = matchers.filter((m): m is Matcher => m !== undefined);
  if (present.length === 0) return undefined;
  if (present.length === 1) return present[0];
  return (obj) => present.every((m) => m(obj));
}
