import { buildEvent, type EventType, type VolumeEvent } from '@plugline/contracts';
import { join, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { nextSteps } from '../src/commands/up.js';
import {
  findReadyLine,
  formatEventLine,
  formatTable,
  parseCliConfig,
  parseDuration,
  run,
  waitForOperation,
  WaitResult,
  type EventStream,
  type StreamedEvent,
} from '../src/index.js';

describe('parseDuration', () => {
  it.each([
    ['5m', 300_000],
    ['90s', 90_000],
    ['1m30s', 90_000],
    ['500ms', 500],
    ['2', 2000],
    ['1h', 3_600_000],
  ])('%s is %d ms', (text, ms) => expect(parseDuration(text, '--timeout')).toBe(ms));

  it.each(['', 'soon', '5x', '1m x'])('refuses %j as Go does', (text) => {
    expect(() => parseDuration(text, '--timeout')).toThrow(
      `invalid argument "${text}" for "--timeout" flag: time: invalid duration`,
    );
  });
});

describe('parseCliConfig', () => {
  it('takes flags over the environment, and the first KUBECONFIG entry', () => {
    const c = parseCliConfig(
      { nats: 'nats://127.0.0.1:1,nats://127.0.0.1:2', kubeconfig: '/k/flag' },
      { NATS_URL: 'nats://127.0.0.1:9', KUBECONFIG: '/k/a:/k/b' },
    );
    expect(c.natsUrls).toEqual(['nats://127.0.0.1:1', 'nats://127.0.0.1:2']);
    expect(c.natsGiven).toBe(true);
    expect(c.kubeconfig).toBe('/k/flag');
    const e = parseCliConfig({}, { NATS_URL: 'nats://127.0.0.1:9', KUBECONFIG: '/k/a:/k/b' });
    expect(e.kubeconfig).toBe('/k/a');
    expect(e.natsUrls).toEqual(['nats://127.0.0.1:9']);
  });

  it('defaults NATS to 4222 without saying it was given, and names a bad variable', () => {
    const c = parseCliConfig({}, { HOME: '/nonexistent' });
    expect(c.natsUrls).toEqual(['nats://127.0.0.1:4222']);
    expect(c.natsGiven).toBe(false);
    expect(c.kubeconfig).toBeUndefined();
    expect(() => parseCliConfig({}, { NATS_URL: 'not a url' })).toThrow(/NATS_URL/);
  });
});

describe('findReadyLine', () => {
  it("finds a service's ready line among other output", () => {
    const text = [
      'garbage',
      '{"level":30,"msg":"starting"}',
      '{"level":30,"healthUrl":"http://127.0.0.1:4","msg":"ready"}',
    ].join('\n');
    expect(findReadyLine(text)).toBe('http://127.0.0.1:4');
    expect(findReadyLine('{"msg":"ready"}\n')).toBeUndefined();
  });
});

describe('formatTable', () => {
  it('pads columns as kubectl does', () => {
    expect(
      formatTable(
        ['VOLUME', 'PHASE'],
        [
          ['a', 'Ready'],
          ['longer-name', 'Bound'],
        ],
      ),
    ).toBe('VOLUME        PHASE\na             Ready\nlonger-name   Bound\n');
  });
});

describe('formatEventLine', () => {
  it('says when a fact is stated again because a resync asked for it', () => {
    const first = event('ready', 'op1', { target: 'sda', phase: 'Ready' });
    const again = event('ready', 'op1', {
      target: 'sda',
      phase: 'Ready',
      resync: '2026-12-06T23:00:00.000Z',
    });
    expect(formatEventLine(first).endsWith('[spec-watcher]  target sda, phase Ready')).toBe(true);
    expect(formatEventLine(again)).toContain(
      '[spec-watcher]  again, on resync, target sda, phase Ready',
    );
  });
});

describe('run', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return {
      out,
      err,
      io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t), env: {} },
    };
  };
  it('rejects an unknown command and bad flags with exit code 1', async () => {
    const a = io();
    expect(await run(['plug'], a.io)).toBe(1);
    expect(a.err.join('')).toContain('unknown command "plug"');
    const b = io();
    expect(await run(['addvolume', 'vm', '--no-such-flag'], b.io)).toBe(1);
    expect(b.err.join('')).toMatch(/Unknown option '--no-such-flag'/);
    const c = io();
    expect(await run(['addvolume', '--help'], c.io)).toBe(0);
    expect(c.out.join('')).toContain('--volume-name');
  });

  it('says where a kubeconfig comes from when there is none (not a TLS complaint about localhost)', async () => {
    const none = io();
    none.io.env = { HOME: join(tmpdir(), `plugctl-no-home-${randomUUID()}`) };
    expect(await run(['status', 'vm'], none.io)).toBe(1);
    expect(none.err.join('')).toBe(
      'no kubeconfig found: set KUBECONFIG or pass --kubeconfig (the embedded default started by `plugctl up` writes .plugline/kubeconfig; `source .plugline/env` sets it)\n',
    );
  });
});

// --- waitForOperation on a scripted stream ------------------------------------------------

function event(type: EventType, operationId: string, extra: Partial<VolumeEvent['data']> = {}) {
  return buildEvent({
    namespace: 'ns',
    vmi: 'vm',
    volume: 'v',
    type,
    stage: 'spec-watcher',
    id: `${operationId}-${type}`,
    data: { operationId, operation: 'plug', vmiUID: 'u', ...extra },
  });
}

function scripted(events: VolumeEvent[], hang = false): EventStream {
  let stopped = false;
  let wake: (() => void) | undefined;
  return {
    stop: () => {
      stopped = true;
      wake?.();
    },
    async *[Symbol.asyncIterator](): AsyncGenerator<StreamedEvent> {
      for (const [i, e] of events.entries()) {
        if (stopped) return;
        yield { event: e, seq: i + 1, pending: events.length - i - 1 };
      }
      if (hang && !stopped) await new Promise<void>((r) => (wake = r));
    },
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

describe('waitForOperation', () => {
  it('follows the first operation to ready, ignoring other operations and earlier events', async () => {
    const seen: string[] = [];
    const outcome = await waitForOperation(
      scripted([
        event('bound', 'old'),
        event('requested', 'op1'),
        event('removed', 'old'),
        event('bound', 'op1'),
        event('attached-to-node', 'op1', {
          node: 'n',
          attachPod: { name: 'hp-volume-x', uid: 'p' },
        }),
        event('ready', 'op1', { target: 'sda' }),
        event('requested', 'op2'),
      ]),
      {
        operation: 'plug',
        timeoutMs: 10_000,
        startedAt: Date.now() - 5,
        onEvent: (e) => seen.push(e.type.split('.').pop()!),
      },
    );
    expect(outcome.result).toBe(WaitResult.Done);
    expect(outcome.operationId).toBe('op1');
    expect(outcome.last?.data.target).toBe('sda');
    expect(seen).toEqual(['requested', 'bound', 'attached-to-node', 'ready']);
  });

  it('ends at failed, and times out on a silent stream', async () => {
    const failed = await waitForOperation(
      scripted([
        event('requested', 'a'),
        event('failed', 'a', { reason: 'MountFailed', message: 'no' }),
      ]),
      { operation: 'plug', timeoutMs: 10_000, startedAt: Date.now() },
    );
    expect(failed.result).toBe(WaitResult.Failed);
    expect(failed.last?.data.reason).toBe('MountFailed');
    const silent = await waitForOperation(scripted([event('requested', 'a')], true), {
      operation: 'plug',
      timeoutMs: 50,
      startedAt: Date.now(),
    });
    expect(silent.result).toBe(WaitResult.Timeout);
  });

  it('shows a guest holding the disk past the detach timeout and follows the unplug on to removed', async () => {
    const unplug = (type: EventType, extra: Partial<VolumeEvent['data']> = {}) =>
      event(type, 'u1', { operation: 'unplug', ...extra });
    const seen: string[] = [];
    const outcome = await waitForOperation(
      scripted([
        unplug('unplug-requested'),
        unplug('failed', { reason: 'DetachTimeout', message: 'the guest did not let go' }),
        unplug('detached-from-domain'),
        unplug('released'),
        unplug('removed'),
      ]),
      {
        operation: 'unplug',
        timeoutMs: 10_000,
        startedAt: Date.now(),
        onEvent: (e) => seen.push(e.type.split('.').pop()!),
      },
    );
    expect(outcome.result).toBe(WaitResult.Done);
    expect(seen).toEqual([
      'unplug-requested',
      'failed',
      'detached-from-domain',
      'released',
      'removed',
    ]);
  });
});

describe('nextSteps (what plugctl up says to type next)', () => {
  const checkout = resolve(import.meta.dirname, '../../..');
  const bin = join(checkout, 'packages', 'cli', 'bin');

  it('names the CLI and the state folder relative to a terminal in the checkout', () => {
    const text = nextSteps(join(checkout, '.plugline'), true, checkout);
    expect(text).toContain('export PATH=$PWD/packages/cli/bin:$PATH');
    expect(text).toContain('source .plugline/env');
  });

  it('names them by absolute path from a terminal outside it', () => {
    const text = nextSteps('/tmp/elsewhere/.plugline', false, '/tmp/elsewhere');
    expect(text).toContain(`export PATH=${bin}:$PATH`);
    expect(text).toContain('source .plugline/env');
    expect(text).not.toContain('../');
  });
});
