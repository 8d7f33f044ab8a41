import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
} from '@opentelemetry/api';

/**
 * The header surface shared by NATS `MsgHdrs` and plain maps: `get` returns '' or undefined when a
 * header is missing.
 */
export interface HeaderCarrier {
  get(key: string): string | undefined | null;
  set(key: string, value: string): void;
  keys?(): Iterable<string>;
}

const setter: TextMapSetter<HeaderCarrier> = {
  set: (carrier, key, value) => carrier.set(key, value),
};

const getter: TextMapGetter<HeaderCarrier> = {
  get: (carrier, key) => {
    const value = carrier.get(key);
    return value === null || value === undefined || value === '' ? undefined : value;
  },
  keys: (carrier) => (carrier.keys ? [...carrier.keys()] : []),
};

/**
 * Writes the W3C trace context (`traceparent`, `tracestate`) of `ctx` (default: the active
 * context) into `headers`, using the globally registered propagator. With no OpenTelemetry SDK
 * registered the propagator is a no-op and nothing is written.
 */
export function injectTrace<T extends HeaderCarrier>(
  headers: T,
  ctx: Context = context.active(),
): T {
  propagation.inject(ctx, headers, setter);
  return headers;
}

/** Reads the trace context from `headers` into a Context (the active one when there is none). */
export function extractTrace(
  headers: HeaderCarrier | undefined,
  ctx: Context = context.active(),
): Context {
  if (headers === undefined) return ctx;
  return propagation.extract(ctx, headers, getter);
}

/**
 * The trace context a CloudEvent's `traceparent` (and `tracestate`) carry; without one, a context
 * with no trace (whatever span is active where the event arrived did not cause it).
 */
export function extractEventTrace(event: { traceparent?: string; tracestate?: string }): Context {
  if (event.traceparent === undefined) return ROOT_CONTEXT;
  const carrier = new Map([['traceparent', event.traceparent]]);
  if (event.tracestate !== undefined) carrier.set('tracestate', event.tracestate);
  return extractTrace(carrier, ROOT_CONTEXT);
}

/** True when `ctx` carries a span: one of this process's, or a remote parent from headers. */
export function inTrace(ctx: Context): boolean {
  return trace.getSpanContext(ctx) !== undefined;
}

/** A context with `span` as its parent, to start a later span under it. */
export function underSpan(span: Span): Context {
  return trace.setSpan(ROOT_CONTEXT, span);
}

/** The `traceparent` (and `tracestate`) of `ctx` as strings, for the CloudEvents extension. */
export function traceFields(ctx: Context = context.active()): {
  traceparent?: string;
  tracestate?: string;
} {
  const fields: Record<string, string> = {};
  propagation.inject(ctx, fields);
  const out: { traceparent?: string; tracestate?: string } = {};
  if (fields.traceparent) out.traceparent = fields.traceparent;
  if (fields.tracestate) out.tracestate = fields.tracestate;
  return out;
}

const TRACER = 'plugline';

export interface SpanOptions {
  attributes?: Attributes;
  /** The parent context (e.g. from `extractTrace`); default the active context. */
  parent?: Context;
}

/**
 * Runs `fn` inside a span named `name`, made active so nested publishes carry it. The span ends
 * when `fn` settles and records an exception on failure. Without a registered tracer provider the
 * span is non-recording and almost free.
 */
export async function withSpan<T>(
  name: string,
  fn: (span: Span) => Promise<T> | T,
  options: SpanOptions = {},
): Promise<T> {
  const tracer = trace.getTracer(TRACER);
  const parent = options.parent ?? context.active();
  return tracer.startActiveSpan(
    name,
    { attributes: options.attributes ?? {} },
    parent,
    async (span) => {
      try {
        return await fn(span);
      } catch (err) {
        span.recordException(err instanceof Error ? err : String(err));
        span.setStatus({ code: SpanStatusCode.ERROR });
        throw err;
      } finally {
        span.end();
      }
    },
  );
}

/**
 * Records a span that already happened, from `startMs` to `endMs` (`performance.now()` times),
 * under `parent`: an effect the handling's machine ran, timed from its snapshots.
 */
export function recordSpan(
  name: string,
  startMs: number,
  endMs: number,
  parent: Context,
  attributes: Attributes = {},
): void {
  const span = trace.getTracer(TRACER).startSpan(name, { startTime: startMs, attributes }, parent);
  span.end(endMs);
}
