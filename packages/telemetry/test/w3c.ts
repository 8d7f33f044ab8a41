// Test-only OpenTelemetry stand-ins: a W3C traceparent propagator and a tracer whose spans get
// fresh ids and inherit the parent's trace id (what an SDK would do, minus export).
import { randomBytes } from 'node:crypto';
import {
  context as otelContext,
  trace,
  TraceFlags,
  type Context,
  type Span,
  type SpanOptions,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';

export const w3cPropagator: TextMapPropagator = {
  inject(ctx: Context, carrier: unknown, setter: TextMapSetter) {
    const sc = trace.getSpanContext(ctx);
    if (!sc || !trace.isSpanContextValid(sc)) return;
    setter.set(carrier, 'traceparent', `00-${sc.traceId}-${sc.spanId}-0${sc.traceFlags}`);
  },
  extract(ctx: Context, carrier: unknown, getter: TextMapGetter) {
    const raw = getter.get(carrier, 'traceparent');
    const value = Array.isArray(raw) ? raw[0] : raw;
    const m = value?.match(/^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/);
    if (!m) return ctx;
    return trace.setSpanContext(ctx, {
      traceId: m[1]!,
      spanId: m[2]!,
      traceFlags: Number.parseInt(m[3]!, 16),
      isRemote: true,
    });
  },
  fields: () => ['traceparent'],
};

export const startedSpans: string[] = [];

class TestTracer implements Tracer {
  startSpan(name: string, _options?: SpanOptions, ctx: Context = otelContext.active()): Span {
    const parent = trace.getSpanContext(ctx);
    startedSpans.push(name);
    return trace.wrapSpanContext({
      traceId: parent?.traceId ?? randomBytes(16).toString('hex'),
      spanId: randomBytes(8).toString('hex'),
      traceFlags: TraceFlags.SAMPLED,
    });
  }
  startActiveSpan<F extends (span: Span) => unknown>(
    name: string,
    ...args: unknown[]
  ): ReturnType<F> {
    const fn = args.at(-1) as F;
    const options = (args.length >= 2 ? args[0] : undefined) as SpanOptions | undefined;
    const ctx = (args.length >= 3 ? args[1] : undefined) as Context | undefined;
    const span = this.startSpan(name, options, ctx ?? otelContext.active());
    return otelContext.with(trace.setSpan(ctx ?? otelContext.active(), span), () =>
      fn(span),
    ) as ReturnType<F>;
  }
}

export const testTracerProvider: TracerProvider = { getTracer: () => new TestTracer() };
