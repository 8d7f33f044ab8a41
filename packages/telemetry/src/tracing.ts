import {
  context,
  diag,
  DiagLogLevel,
  propagation,
  trace,
  type DiagLogger,
} from '@opentelemetry/api';
import type { Logger } from 'pino';

/** Where and how a service exports its spans (the README's "Seeing where a volume is"). */
export interface TracingConfig {
  /** The OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`. */
  readonly tracesUrl: string;
  /** The `service.name` of every span. */
  readonly serviceName: string;
  /** How long finished spans wait to go out in one batch (OpenTelemetry's default: 5000 ms). */
  readonly exportDelayMs: number;
}

/**
 * How long a stopping service waits for its last spans to go out: the exporter retries an
 * unreachable endpoint for longer, and a service's stop must not wait for that.
 */
const SHUTDOWN_WAIT_MS = 2000;

/** A running trace export; `shutdown` sends what is left and unregisters it. */
export interface Tracing {
  shutdown(): Promise<void>;
}

/**
 * Registers the OpenTelemetry SDK for this process: a tracer provider that sends spans in batches
 * to an OTLP/HTTP endpoint, the W3C `traceparent` propagator (what the work items' headers and
 * the events' `traceparent` carry) and a context manager, so that the spans of one operation
 * are one trace across the services. Without it, spans cost nearly nothing and go nowhere.
 * Export failures (a collector down) are logged, at most one line a minute, and never stop work.
 */
export async function startTracing(config: TracingConfig, logger: Logger): Promise<Tracing> {
  // Loaded only here: a service that exports no traces does not load (or pay for) the SDK.
  const [
    { AsyncLocalStorageContextManager },
    { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator },
    { OTLPTraceExporter },
    { resourceFromAttributes },
    { BatchSpanProcessor, TracerProvider },
  ] = await Promise.all([
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace'),
  ]);
  const log = logger.child({ component: 'tracing' });
  diag.setLogger(throttledDiag(log), DiagLogLevel.WARN);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      'service.name': config.serviceName,
      'service.namespace': 'plugline',
      'process.pid': process.pid,
    }),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url: config.tracesUrl }),
        scheduledDelayMillis: config.exportDelayMs,
      }),
    ],
  });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(
    new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    }),
  );
  trace.setGlobalTracerProvider(provider);
  log.info({ tracesUrl: config.tracesUrl, serviceName: config.serviceName }, 'exporting traces');
  let stopping: Promise<void> | undefined;
  return {
    shutdown: () =>
      (stopping ??= (async () => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`not sent within ${SHUTDOWN_WAIT_MS} ms`)),
            SHUTDOWN_WAIT_MS,
          );
        });
        try {
          await Promise.race([provider.shutdown(), timeout]);
        } catch (err) {
          log.warn({ err }, 'could not send the last spans');
        } finally {
          clearTimeout(timer);
          trace.disable();
          propagation.disable();
          context.disable();
          diag.disable();
        }
      })()),
  };
}

/** OpenTelemetry's own warnings through the service's logger, one line a minute at most. */
function throttledDiag(log: Logger): DiagLogger {
  const everyMs = 60_000;
  let lastAt = Number.NEGATIVE_INFINITY;
  let dropped = 0;
  const write = (level: 'warn' | 'error', message: string, args: unknown[]): void => {
    const now = Date.now();
    if (now - lastAt < everyMs) {
      dropped++;
      return;
    }
    lastAt = now;
    const err = args.find((a) => a instanceof Error);
    log[level]({ ...(err ? { err } : {}), ...(dropped > 0 ? { dropped } : {}) }, message);
    dropped = 0;
  };
  const ignore = (): void => undefined;
  return {
    error: (message, ...args) => write('error', message, args),
    warn: (message, ...args) => write('warn', message, args),
    info: ignore,
    debug: ignore,
    verbose: ignore,
  };
}
