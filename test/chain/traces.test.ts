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

/** The spans above `span`, nearest first, up to the trace's root. */
function lineOf(spans: readonly ReceivedSpan[], span: ReceivedSpan): ReceivedSpan[] {
  const line: ReceivedSpan[] = [];
  for (let at = parentOf(spans, span); at !== undefined; at = parentOf(spans, at)) line.push(at);
  return line;
}

/** The names of the effect spans directly under a look. */
function effectsOf(spans: readonly ReceivedSpan[], look: ReceivedSpan): string[] {
  return spans
    .filter((s) => s.parentSpanId === look.spanId && 'plugline.effect' in s.attributes)
    .map((s) => s.name);
}

function outcomes(looks: readonly ReceivedSpan[]): unknown[] {
  return looks.map((s) => s.attributes['plugline.outcome']);
}

/** The trace as a tree, one span a line: what a failed assertion shows. */
function describeTrace(spans: readonly ReceivedSpan[]): string {
  const lines: string[] = [];
  const walk = (parent: string | undefined, depth: number): void => {
    for (const s of spans.filter((c) => c.parentSpanId === parent)) {
      const cause = s.attributes['plugline.cause'] ?? s.attributes['plugline.events'] ?? '';
      const outcome = s.attributes['plugline.outcome'] ?? '';
      lines.push(`${'  '.repeat(depth)}${s.name} ${String(cause)} ${String(outcome)}`);
      walk(s.spanId, depth + 1);
    }
  };
  walk(undefined, 0);
  return `the trace:\n${lines.join('\n')}`;
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
    // It starts where the spec change was seen, and each stage hangs off the one that nudged it;
    // the orchestrator's look once the pod runs continues the trace of the plug it waited for.
    const plugTree = describeTrace(plug);
    expect(rootOf(plug), plugTree).toMatchObject({
      serviceName: 'spec-watcher',
      attributes: { 'plugline.cause': 'spec', 'plugline.operation': 'plug' },
    });
    const requested = spanOf(plug, 'attachment-orchestrator', 'requested');
    const mounter = spanOf(plug, 'node-mounter');
    const updater = spanOf(plug, 'domain-updater');
    expect(lineOf(plug, mounter), plugTree).toContain(requested);
    expect(updater.parentSpanId, plugTree).toBe(mounter.spanId);
    for (const s of [requested, mounter, updater]) {
      expect(s.attributes['plugline.operation_id'], plugTree).toBe(plugId);
    }
    expect(outcomes([mounter, updater]), plugTree).toEqual(['done', 'done']);
    // Inside a look, its effects: the bind mount, the disk's attach.
    expect(effectsOf(plug, mounter), plugTree).toContain('node-mounter plug');
    expect(effectsOf(plug, updater), plugTree).toContain('domain-updater attach');
    expect(
      plug.filter((s) => s.statusCode === 2),
      plugTree,
    ).toEqual([]);

    const { out: unplugged, spans: unplug } = await traced('removevolume', 'unplug', 'released');
    const unplugTree = describeTrace(unplug);
    expect(unplug[0]!.traceId).not.toBe(plug[0]!.traceId);
    expect(unplugged).toMatch(
      new RegExp(`^Volume data was removed after \\S+ \\(trace ${unplug[0]!.traceId}\\)$`, 'm'),
    );
    expect(new Set(unplug.map((s) => s.serviceName)), unplugTree).toEqual(new Set(SERVICES));
    // Unplug runs the chain backwards: the disk leaves the guest, then the mount, then the pod.
    const root = rootOf(unplug);
    expect(root, unplugTree).toMatchObject({
      serviceName: 'spec-watcher',
      attributes: { 'plugline.cause': 'spec', 'plugline.operation': 'unplug' },
    });
    const unmounted = spanOf(unplug, 'node-mounter');
    const release = spanOf(unplug, 'attachment-orchestrator', 'unmounted-from-pod');
    expect(
      lineOf(unplug, unmounted).map((s) => s.serviceName),
      unplugTree,
    ).toEqual(expect.arrayContaining(['domain-updater', 'spec-watcher']));
    expect(lineOf(unplug, unmounted).at(-1), unplugTree).toBe(root);
    expect(release.parentSpanId, unplugTree).toBe(unmounted.spanId);
    expect(
      unplug.filter((s) => s.statusCode === 2),
      unplugTree,
    ).toEqual([]);
    expect(receiver.refused).toBe(0);
  }, 120_000);
});
