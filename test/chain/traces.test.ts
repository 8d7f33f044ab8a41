/**
 * Traces: with OpenTelemetry's variables set, the four services export their spans over OTLP/HTTP
 * (to a receiver here, as to a collector), and one plug, or one unplug, is one trace across them:
 * from the spec change the spec-watcher saw to the status write that ends it.
 */
import { createPvc, ensureNamespace } from '@plugline/cli';
import {
  startOtlpReceiver,
  waitFor,
  type OtlpReceiver,
  type ReceivedSpan,
} from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, plugctlIn, startChain, type ChainFixture } from './helpers.js';

const NS = 'traces';
const SERVICES = ['spec-watcher', 'attachment-orchestrator', 'node-mounter', 'domain-updater'];

/**
 * The spans of one trace, once the projector's span for `last` (an event type) is in it and the
 * spans of every service with their parents have arrived (each goes out once it ends).
 */
async function traceEndingWith(
  receiver: OtlpReceiver,
  operationId: () => string | undefined,
  last: string,
): Promise<ReceivedSpan[]> {
  return waitFor(
    () => {
      const id = operationId();
      const end = receiver.spans.find(
        (s) =>
          s.name === 'spec-watcher project' &&
          s.attributes['plugline.operation_id'] === id &&
          String(s.attributes['plugline.events']).split(',').includes(last),
      );
      if (end === undefined) return undefined;
      const spans = receiver.spans.filter((s) => s.traceId === end.traceId);
      const ids = new Set(spans.map((s) => s.spanId));
      const complete =
        SERVICES.every((service) => spans.some((s) => s.serviceName === service)) &&
        spans.every((s) => s.parentSpanId === undefined || ids.has(s.parentSpanId));
      return complete ? spans : undefined;
    },
    { timeout: 30_000, description: `the trace that ends with the projector's ${last}` },
  );
}

function spanOf(spans: readonly ReceivedSpan[], service: string, cause?: string): ReceivedSpan {
  const found = spans.find(
    (s) =>
      s.serviceName === service &&
      s.name === `${service} work` &&
      (cause === undefined || s.attributes['plugline.cause'] === cause),
  );
  if (found === undefined) throw new Error(`no ${service} span (${cause ?? 'any cause'})`);
  return found;
}

function parentOf(spans: readonly ReceivedSpan[], span: ReceivedSpan): ReceivedSpan | undefined {
  return spans.find((s) => s.spanId === span.parentSpanId);
}

/** The trace's one root (every other span's parent is in the trace: see traceEndingWith). */
function rootOf(spans: readonly ReceivedSpan[]): ReceivedSpan {
  const roots = spans.filter((s) => s.parentSpanId === undefined);
  expect(roots).toHaveLength(1);
  return roots[0]!;
}

describe.skipIf(!isRoot)('traces', () => {
  let receiver: OtlpReceiver;
  let chain: ChainFixture;

  beforeAll(async () => {
    // Behind authentication, as a hosted collector is: the services send the header they are given.
    receiver = await startOtlpReceiver({ requireHeaders: { authorization: 'Bearer t0ken' } });
    chain = await startChain({
      serviceEnv: {
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20t0ken',
        OTEL_BSP_SCHEDULE_DELAY: '50',
      },
    });
  }, 180_000);
  afterAll(async () => {
    await chain?.stop();
    await receiver?.close();
  }, 60_000);

  /**
   * Runs `plugctl <command> --wait` on the test's volume and returns what it printed and the trace
   * of its operation (named by node-mounter's span of that operation).
   */
  async function traced(
    command: 'addvolume' | 'removevolume',
    operation: 'plug' | 'unplug',
    lastEvent: string,
  ): Promise<{ out: string; spans: ReceivedSpan[]; operationId: string | undefined }> {
    const r = await plugctlIn(chain.stack, command, 'vm', '-n', NS, '--volume-name=data', '--wait');
    expect(r.code).toBe(0);
    const operationId = (): string | undefined =>
      receiver.spans.find(
        (s) => s.serviceName === 'node-mounter' && s.attributes['plugline.operation'] === operation,
      )?.attributes['plugline.operation_id'] as string | undefined;
    const spans = await traceEndingWith(receiver, operationId, lastEvent);
    return { out: r.out, spans, operationId: operationId() };
  }

  it('one plug is one trace across the four services, and so is its unplug', async () => {
    await ensureNamespace(chain.stack.kc, NS);
    await chain.stack.createVmi({ namespace: NS, name: 'vm' });
    await createPvc(chain.stack.kc, { namespace: NS, name: 'data', mode: 'Filesystem' });
    const {
      out: plugged,
      spans: plug,
      operationId: plugId,
    } = await traced('addvolume', 'plug', 'ready');

    expect(new Set(plug.map((s) => s.serviceName))).toEqual(new Set(SERVICES));
    // `--wait` names the trace, for the operator to look it up.
    expect(plugged).toMatch(
      new RegExp(`^Volume data is Ready as sda after \\S+ \\(trace ${plug[0]!.traceId}\\)$`, 'm'),
    );
    // It starts where the spec change was seen, and each stage hangs off the one that nudged it:
    // the orchestrator's look once the pod runs continues the trace of the plug it waited for.
    expect(rootOf(plug)).toMatchObject({
      serviceName: 'spec-watcher',
      attributes: { 'plugline.cause': 'spec', 'plugline.operation': 'plug' },
    });
    const requested = spanOf(plug, 'attachment-orchestrator', 'requested');
    const mounter = spanOf(plug, 'node-mounter');
    const updater = spanOf(plug, 'domain-updater');
    expect(requested.attributes['plugline.outcome']).toBe('waiting');
    expect(parentOf(plug, mounter)).toMatchObject({
      serviceName: 'attachment-orchestrator',
      parentSpanId: requested.spanId,
      attributes: { 'plugline.cause': 'informer-pod' },
    });
    expect(updater.parentSpanId).toBe(mounter.spanId);
    for (const s of [requested, mounter, updater]) {
      expect(s.attributes['plugline.operation_id']).toBe(plugId);
    }
    expect([mounter, updater].map((s) => s.attributes['plugline.outcome'])).toEqual([
      'done',
      'done',
    ]);
    expect(plug.filter((s) => s.statusCode === 2)).toEqual([]);

    const { out: unplugged, spans: unplug } = await traced('removevolume', 'unplug', 'released');
    expect(unplug[0]!.traceId).not.toBe(plug[0]!.traceId);
    expect(unplugged).toMatch(
      new RegExp(`^Volume data was removed after \\S+ \\(trace ${unplug[0]!.traceId}\\)$`, 'm'),
    );
    expect(new Set(unplug.map((s) => s.serviceName))).toEqual(new Set(SERVICES));
    expect(rootOf(unplug)).toMatchObject({
      serviceName: 'spec-watcher',
      attributes: { 'plugline.cause': 'spec', 'plugline.operation': 'unplug' },
    });
    // Unplug runs the chain backwards, and waits twice: for the guest to let the disk go, and for
    // the attachment pod to go.
    const root = rootOf(unplug);
    const requestedDetach = spanOf(unplug, 'domain-updater', 'unplug-requested');
    const unmounted = spanOf(unplug, 'node-mounter');
    const release = spanOf(unplug, 'attachment-orchestrator', 'unmounted-from-pod');
    expect(requestedDetach).toMatchObject({
      parentSpanId: root.spanId,
      attributes: { 'plugline.outcome': 'waiting' },
    });
    expect(parentOf(unplug, unmounted)).toMatchObject({
      serviceName: 'domain-updater',
      parentSpanId: requestedDetach.spanId,
      attributes: { 'plugline.cause': 'device-removed' },
    });
    expect(release.parentSpanId).toBe(unmounted.spanId);
    expect(
      unplug.filter(
        (s) =>
          s.attributes['plugline.cause'] === 'informer-pod' && s.parentSpanId === release.spanId,
      ),
    ).not.toEqual([]);
    expect(unplug.filter((s) => s.statusCode === 2)).toEqual([]);
    expect(receiver.refused).toBe(0);
  }, 120_000);
});
