import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { trace } from '@opentelemetry/api';
import { startOtlpReceiver, waitFor, type OtlpReceiver } from '@plugline/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createLogger,
  extractEventTrace,
  extractTrace,
  injectTrace,
  memoryDestination,
  startTracing,
  traceFields,
  withSpan,
  type MemoryDestination,
  type Tracing,
} from '../src/index.js';

describe('startTracing (the OpenTelemetry SDK, exporting to a real OTLP/HTTP receiver)', () => {
  let receiver: OtlpReceiver;
  let sink: MemoryDestination;
  let tracing: Tracing | undefined;

  beforeEach(async () => {
    receiver = await startOtlpReceiver();
    sink = memoryDestination();
  });
  afterEach(async () => {
    await tracing?.shutdown();
    tracing = undefined;
    await receiver.close();
  });

  async function start(tracesUrl = `${receiver.url}/v1/traces`): Promise<Tracing> {
    const logger = createLogger({ name: 'spec-watcher' }, sink);
    const config = { tracesUrl, serviceName: 'spec-watcher', exportDelayMs: 20 };
    tracing = await startTracing(config, logger);
    return tracing;
  }

  it('exports one trace across a publish and a consume, with a failed span marked, then stops', async () => {
    await start();
    const headers = new Map<string, string>();
    // An await inside the span: the context manager carries the active span across it.
    const published = await withSpan('publish', async (span) => {
      await new Promise((resolve) => setImmediate(resolve));
      injectTrace(headers);
      return span.spanContext();
    });
    expect(headers.get('traceparent')).toBe(`00-${published.traceId}-${published.spanId}-01`);
    // An event published inside it carries the same context as its `traceparent`.
    const fields = await withSpan('publish event', () => traceFields());
    expect(
      trace.getSpanContext(extractEventTrace(fields))?.traceId,
      'the event trace read back',
    ).toBe(fields.traceparent?.split('-')[1]);
    await withSpan('consume', () => undefined, {
      parent: extractTrace(headers),
      attributes: { 'plugline.unit': 'ns/vm/data', 'plugline.attempt': 2 },
    });
    await expect(withSpan('fails', () => Promise.reject(new Error('boom')))).rejects.toThrow(
      'boom',
    );

    const spans = await waitFor(() => receiver.spans.length >= 4 && receiver.spans, {
      description: 'four spans at the receiver',
    });
    const byName = new Map(spans.map((s) => [s.name, s]));
    const consume = byName.get('consume')!;
    expect(byName.get('publish')).toMatchObject({
      serviceName: 'spec-watcher',
      traceId: published.traceId,
      spanId: published.spanId,
      parentSpanId: undefined,
    });
    expect(consume).toMatchObject({
      traceId: published.traceId,
      parentSpanId: published.spanId,
      attributes: { 'plugline.unit': 'ns/vm/data', 'plugline.attempt': 2 },
      statusCode: 0,
    });
    expect(byName.get('fails')).toMatchObject({ statusCode: 2 });
    expect(byName.get('fails')!.traceId).not.toBe(published.traceId);
    expect(receiver.refused).toBe(0);
    expect(sink.lines).toContainEqual(
      expect.objectContaining({ component: 'tracing', msg: 'exporting traces' }),
    );

    // Stopped, the process is as if no SDK were there: no header is written, nothing is sent.
    await tracing!.shutdown();
    const after = new Map<string, string>();
    await withSpan('after', () => injectTrace(after));
    expect(after.size).toBe(0);
    expect(receiver.spans.map((s) => s.name)).not.toContain('after');
  });

  it('keeps working, logs, and stops when the endpoint refuses the spans', async () => {
    // A receiver that answers 404 (not its path), as a misconfigured endpoint would.
    await start(`${receiver.url}/v1/nothing-here`);
    for (let i = 0; i < 3; i++) {
      // Their export fails; the work inside each span still runs and returns.
      expect(await withSpan(`work ${i}`, () => i)).toBe(i);
    }
    const warnings = (): Record<string, unknown>[] =>
      sink.lines.filter((l) => l.component === 'tracing' && (l.level as number) >= 40);
    await waitFor(() => warnings().length > 0, {
      description: 'a warning from the exporter',
    });
    expect(warnings()[0]).toMatchObject({ name: 'spec-watcher' });
    expect(receiver.refused).toBeGreaterThan(0);
    expect(await withSpan('still working', () => 'yes')).toBe('yes');
    await tracing!.shutdown();
  });

  it('stops without waiting for an endpoint that never answers, and says its last spans were lost', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address() as AddressInfo;
      await start(`http://127.0.0.1:${port}/v1/traces`);
      await withSpan('last', () => undefined);
      await tracing!.shutdown();
      expect(sink.lines).toContainEqual(
        expect.objectContaining({ component: 'tracing', msg: 'could not send the last spans' }),
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
