const BINARY: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const DECIMAL: Record<string, number> = {
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  m: 1e-3,
};

/** Parses a Kubernetes resource quantity (`1Gi`, `500M`, `1e9`, `1024`) into bytes (rounded up). */
export function parseQuantity(value: unknown): number {
  if (typeof value === 'number') return Math.ceil(value);
  if (typeof value !== 'string') return 0;
  const m = /^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?)$/.exec(
    value.trim(),
  );
  if (!m) return 0;
  const base = Number(m[1]);
  if (m[2]) return Math.ceil(base * 10 ** Number(m[2].slice(1)));
  const suffix = m[3] ?? '';
  return Math.ceil(base * (BINARY[suffix] ?? DECIMAL[suffix] ?? 1));
}
