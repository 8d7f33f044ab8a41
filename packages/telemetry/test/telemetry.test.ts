import { describe, expect, it } from 'vitest';
import {
  childLogger,
  createLogger,
  createMetrics,
  injectTrace,
  memoryDestination,
  startHealthServer,
  traceFields,
  withSpan,
} from '../src/index.js';

function headerMap(): Map<string, string> {
  return new Map<string, string>();
}

describe('createLogger', () => {
  it('writes JSON with child bindings and redacts secrets', () => {
    const sink = memoryDestination();
    const logger = createLogger({ name: 'node-mounter', level: 'debug' }, sink);
    const child = childLogger(logger, {
      stage: 'node-mounter',
      namespace: 'ns1',
      vmi: 'vm1',
      volume: undefined,
    });
    child.info(
      {
        user: { name: 'alice', password: 'hunter2', token: 'abc' },
        kubeconfig: { users: [{ name: 'u', user: { token: 'kt', 'client-key-data': 'KEY' } }] },
        headers: { authorization: 'Bearer x' },
      },
      'hello',
    );
    const line = sink.lines[0]!;
    expect(line).toMatchObject({
      name: 'node-mounter',
      stage: 'node-mounter',
      namespace: 'ns1',
      vmi: 'vm1',
      msg: 'hello',
    });
    expect(line).not.toHaveProperty('volume');
    const text = JSON.stringify(line);
    for (const secret of ['hunter2', '"abc"', '"kt"', 'KEY', 'Bearer x'])
      expect(text).not.toContain(secret);
    expect(text).toContain('alice');
  });
});

describe('childLogger', () => {
  it('writes each binding once when a child binds what its parent already does', () => {
    const raw: string[] = [];
    const logger = createLogger(
      { name: 'spec-watcher' },
      { write: (line: string) => raw.push(line) },
    );
    const stage = childLogger(logger, { stage: 'spec-watcher' });
    const runtime = childLogger(stage, { stage: 'spec-watcher', node: undefined });
    const unit = childLogger(runtime, { stage: 'spec-watcher', vmi: 'vm1' });
    unit.warn({ consumer: 'spec-watcher' }, 'removed finished work items the server kept');
    expect(raw).toHaveLength(1);
    expect(raw[0]!.match(/"stage":/g)).toHaveLength(1);
    expect(JSON.parse(raw[0]!)).toMatchObject({ stage: 'spec-watcher', vmi: 'vm1' });
    // A different value is still bound: the child's own.
    const other = childLogger(stage, { stage: 'projector' });
    other.info('x');
    expect(JSON.parse(raw[1]!)).toMatchObject({ stage: 'projector' });
  });
});

describe('createMetrics and the health server', () => {
  it('serves /healthz, /readyz (503 until ready) and /metrics', async () => {
    const metrics = createMetrics();
    metrics.messagesHandled.inc({ stage: 'node-mounter', outcome: 'done' });
    metrics.deadLetters.inc({ stage: 'node-mounter', reason: 'oversized' });
    metrics.effectDuration.observe({ stage: 'node-mounter', effect: 'mount' }, 0.02);
    let ready = false;
    await using server = await startHealthServer({
      registry: metrics.registry,
      ready: { nats: () => ready, consumers: () => Promise.resolve(true) },
    });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const notReady = await fetch(`${server.url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ok: false, checks: { nats: false, consumers: true } });
    ready = true;
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toContain(
      'plugline_messages_handled_total{stage="node-mounter",outcome="done"} 1',
    );
    expect(text).toContain(
      'plugline_dead_letters_total{stage="node-mounter",reason="oversized"} 1',
    );
    expect(text).toContain(
      'plugline_effect_duration_seconds_bucket{le="0.05",stage="node-mounter",effect="mount"} 1',
    );
    expect(text).toContain('plugline_process_cpu_user_seconds_total');
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
  });
});

describe('trace context', () => {
  it('is a no-op when no tracer or propagator is registered', async () => {
    const headers = headerMap();
    await withSpan('noop', () => injectTrace(headers));
    expect(headers.size).toBe(0);
    expect(traceFields()).toEqual({});
  });
});
