import { pino, type DestinationStream, type Logger } from 'pino';
import { bufferedDestination } from './destination.js';

/** Log levels, lowest to highest. */
export const LogLevel = {
  Trace: 'trace',
  Debug: 'debug',
  Info: 'info',
  Warn: 'warn',
  Error: 'error',
  Fatal: 'fatal',
  Silent: 'silent',
} as const;
export type LogLevel = (typeof LogLevel)[keyof typeof LogLevel];

export interface LoggerConfig {
  /** Default `info`. */
  level?: LogLevel;
  /** Human-readable output through pino-pretty (development only). Default false: JSON lines. */
  pretty?: boolean;
  /** The service name, bound as `name` on every line. */
  name?: string;
}

/**
 * Paths whose values never reach a log line: credentials, tokens, and kubeconfig secrets, at the
 * top level and one level down (pino's wildcard matches one segment).
 */
export const REDACT_PATHS: readonly string[] = [
  'password',
  'token',
  'authorization',
  'secret',
  'pass',
  'credentials',
  'client-key-data',
  'client-certificate-data',
  'keyData',
  'certData',
  'bearerToken',
  'headers.authorization',
  'headers.Authorization',
  '*.password',
  '*.pass',
  '*.token',
  '*.authorization',
  '*.Authorization',
  '*.secret',
  '*.credentials',
  '*.client-key-data',
  '*.client-certificate-data',
  '*.keyData',
  '*.certData',
  '*.bearerToken',
  '*.headers.authorization',
  '*.headers.Authorization',
  'users[*].user.token',
  'users[*].user.password',
  'users[*].user["client-key-data"]',
  'users[*].user.keyData',
  'kubeconfig.users[*].user.token',
  'kubeconfig.users[*].user["client-key-data"]',
  'kubeconfig.users[*].user.keyData',
];

/**
 * Creates the root logger of a process: JSON lines on stdout (or `destination`, e.g. an in-memory
 * sink in tests), with secrets redacted. `pretty` switches to pino-pretty on stdout (dev only).
 * Stdout lines are batched (see {@link bufferedDestination}): they reach the reader up to 50 ms
 * late, and are all written on process exit.
 */
export function createLogger(config: LoggerConfig = {}, destination?: DestinationStream): Logger {
  const options = {
    level: config.level ?? 'info',
    name: config.name,
    redact: { paths: [...REDACT_PATHS], censor: '[Redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (config.pretty && destination === undefined) {
    return pino({
      ...options,
      transport: { target: 'pino-pretty', options: { colorize: true } },
    });
  }
  return pino(options, destination ?? bufferedDestination());
}

/** What a child logger may be bound to: where in the chain, and which unit of work. */
export interface LogBindings {
  stage?: string;
  namespace?: string;
  vmi?: string;
  volume?: string;
  operation?: string;
  operationId?: string;
  node?: string;
  [extra: string]: unknown;
}

/**
 * A child logger bound to a stage and/or a unit (`logger.child`, with undefined fields dropped, and
 * those the parent already binds to the same value: pino writes a binding once per level, so a
 * stage runtime under a service's stage logger wrote `"stage"` twice on every line).
 */
export function childLogger(logger: Logger, bindings: LogBindings): Logger {
  const bound = logger.bindings();
  const added = Object.fromEntries(
    Object.entries(bindings).filter(([k, v]) => v !== undefined && bound[k] !== v),
  );
  return Object.keys(added).length === 0 ? logger : logger.child(added);
}

/** A logger that writes nothing; for components whose caller gave none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** An in-memory destination collecting parsed JSON lines (for tests). */
export interface MemoryDestination extends DestinationStream {
  readonly lines: Record<string, unknown>[];
}

export function memoryDestination(): MemoryDestination {
  const lines: Record<string, unknown>[] = [];
  return {
    lines,
    write(msg: string): void {
      for (const line of msg.split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
    },
  };
}
