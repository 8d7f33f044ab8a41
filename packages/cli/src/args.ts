/** Flag parsing on `node:util` `parseArgs`, with kubectl's global flags on every command. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { GlobalFlags } from './config.js';
import { UsageError } from './errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** `--kubeconfig`, `--nats`, `-n/--namespace`, `-h/--help`. */
export const GLOBAL_OPTIONS = {
  kubeconfig: { type: 'string' },
  nats: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies Options;

export interface Parsed<T> {
  values: T & GlobalFlags & { help?: boolean };
  positionals: string[];
}

/** Parses `argv` against the command's options plus the global ones; UsageError on bad flags. */
export function parseFlags<O extends Options>(
  argv: readonly string[],
  options: O,
): Parsed<Record<keyof O, string | boolean | undefined>> {
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      options: { ...GLOBAL_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
    return {
      values: values as unknown as Parsed<Record<keyof O, string | boolean | undefined>>['values'],
      positionals,
    };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new UsageError(message.replace(/\. To specify a positional.*$/s, ''), { cause: err });
  }
}

/** A string flag's value (undefined when absent). */
export function str(value: string | boolean | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** Exactly `n` positional arguments, named for the message. */
export function positionalArgs(positionals: string[], names: readonly string[]): string[] {
  if (positionals.length !== names.length) {
    throw new UsageError(
      `accepts ${names.length} arg(s), received ${positionals.length}` +
        (names.length > 0 ? ` (usage: ${names.map((n) => n.toUpperCase()).join(' ')})` : ''),
    );
  }
  return positionals;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go-style duration (`5m`, `90s`, `1m30s`, `500ms`; a bare number is seconds) in ms. */
export function parseDuration(text: string, flag: string): number {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let end = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * (UNITS[m[2] as string] as number);
    end = re.lastIndex;
  }
  if (end !== text.length || text.length === 0) {
    throw new UsageError(`invalid argument "${text}" for "${flag}" flag: time: invalid duration`);
  }
  return total;
}
