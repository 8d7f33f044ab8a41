export {
  LogLevel,
  REDACT_PATHS,
  createLogger,
  childLogger,
  silentLogger,
  memoryDestination,
} from './logger.js';
export type { LoggerConfig, LogBindings, MemoryDestination } from './logger.js';
export { bufferedDestination } from './destination.js';
export type { BufferedDestination } from './destination.js';
export type { Logger } from 'pino';

export { Outcome, WorkStep, createMetrics } from './metrics.js';
export type { PluglineMetrics, MetricsOptions } from './metrics.js';
export { Registry } from 'prom-client';

export { startHealthServer } from './health.js';
export type { HealthCheck, HealthServer, HealthServerOptions } from './health.js';

export {
  injectTrace,
  extractTrace,
  extractEventTrace,
  inTrace,
  recordSpan,
  underSpan,
  traceFields,
  withSpan,
} from './trace.js';
export type { HeaderCarrier, SpanOptions } from './trace.js';
export { startTracing } from './tracing.js';
export { ROOT_CONTEXT, SpanStatusCode } from '@opentelemetry/api';
export type { Span } from '@opentelemetry/api';
export type { Tracing, TracingConfig } from './tracing.js';
