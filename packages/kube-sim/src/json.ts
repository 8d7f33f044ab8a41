/**
 * Deep copy of a JSON value (what the store holds: objects parsed from request bodies or built
 * by the simulator's controllers). Copies plain objects and arrays by hand, several times faster
 * than `structuredClone`, which serialises the whole value and reads it back; that was the
 * simulator's largest own cost per patch. Anything else that is not a primitive goes through
 * `structuredClone`. Not for cyclic values.
 */
export function cloneJson<T>(value: T): T {
  return copy(value) as T;
}

function copy(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) {
    const out = new Array<unknown>(value.length);
    for (let i = 0; i < value.length; i++) out[i] = copy(value[i]);
    return out;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return structuredClone(value);
  const src = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(src)) {
    // JSON.parse makes "__proto__" an own key; plain assignment would set the prototype.
    if (key === '__proto__') {
      Object.defineProperty(out, key, {
        value: copy(src[key]),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else out[key] = copy(src[key]);
  }
  return out;
}
