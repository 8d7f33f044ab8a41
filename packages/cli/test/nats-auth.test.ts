/**
 * plugctl's NATS credentials: the services' variables (`NATS_USER` + `NATS_PASSWORD`,
 * `NATS_TOKEN`, `NATS_CREDS`, parsed by @plugline/bus), against real nats-servers that require
 * them. (The `plugctl` user of deploy/nats/plugline.conf, with `--wait` against the services, is
 * in test/security/nats-services.test.ts.)
 */
import { connectBus, ensureStreams } from '@plugline/bus';
import { buildEvent, ConfigError, eventSubject } from '@plugline/contracts';
import { startNats, type NatsServer } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCliConfig, run } from '../src/index.js';

const PASSWORD = 'plugctl-secret-1';
const TOKEN = 'plugctl-token-1';

let withUser: NatsServer;
let withToken: NatsServer;

interface Captured {
  code: number;
  out: string;
  err: string;
}

/** `plugctl events -A -o json` in-process with `env`. */
async function events(env: Record<string, string>): Promise<Captured> {
  let out = '';
  let err = '';
  const code = await run(['events', '-A', '-o', 'json'], {
    out: (t) => (out += t),
    err: (t) => (err += t),
    env: { HOME: '/nonexistent', ...env },
  });
  return { code, out, err };
}

beforeAll(async () => {
  [withUser, withToken] = await Promise.all([
    startNats({ args: ['--user', 'plugctl', '--pass', PASSWORD] }),
    startNats({ args: ['--auth', TOKEN] }),
  ]);
  // One event on the user server, so `events` has something to show once it is let in.
  await using bus = await connectBus({
    servers: withUser.url,
    user: 'plugctl',
    pass: PASSWORD,
    maxReconnectAttempts: 0,
  });
  await ensureStreams(bus, { memory: true });
  const event = buildEvent({
    namespace: 'ns',
    vmi: 'vm',
    volume: 'data',
    type: 'requested',
    stage: 'spec-watcher',
    id: 'op-1-requested',
    data: { operationId: 'op-1', operation: 'plug', vmiUID: 'u' },
  });
  await bus.js.publish(
    eventSubject({ namespace: 'ns', vmi: 'vm', volume: 'data' }, 'requested'),
    JSON.stringify(event),
  );
  await using tokenBus = await connectBus({
    servers: withToken.url,
    token: TOKEN,
    maxReconnectAttempts: 0,
  });
  await ensureStreams(tokenBus, { memory: true });
}, 30_000);

afterAll(async () => {
  await Promise.allSettled([withUser?.stop(), withToken?.stop()]);
});

describe('plugctl NATS credentials', () => {
  it('reads the event stream as NATS_USER with NATS_PASSWORD', async () => {
    const r = await events({
      NATS_URL: withUser.url,
      NATS_USER: 'plugctl',
      NATS_PASSWORD: PASSWORD,
    });
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out.trim())).toMatchObject({ id: 'op-1-requested' });
  });

  it('is refused with a wrong password or none, and never prints the password', async () => {
    const wrong = await events({
      NATS_URL: withUser.url,
      NATS_USER: 'plugctl',
      NATS_PASSWORD: 'not-the-password',
    });
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(
      /cannot connect to NATS .*check the NATS credentials.*Authorization Violation/is,
    );
    expect(wrong.err).not.toContain('not-the-password');
    const none = await events({ NATS_URL: withUser.url });
    expect(none.code).toBe(1);
    expect(none.err).toMatch(/Authorization Violation/i);
  });

  it('connects with NATS_TOKEN', async () => {
    // Let in, it finds no event on this server: nothing printed, exit 0.
    const r = await events({ NATS_URL: withToken.url, NATS_TOKEN: TOKEN });
    expect(r).toEqual({ code: 0, out: '', err: '' });
    const wrong = await events({ NATS_URL: withToken.url, NATS_TOKEN: 'tok-2' });
    expect(wrong.err).toMatch(/cannot connect to NATS.*Authorization Violation/is);
  });

  it('parses the credentials as the services do: one kind, both halves, no password in a URL', () => {
    const c = parseCliConfig({}, { NATS_USER: 'plugctl', NATS_PASSWORD: PASSWORD });
    expect(c.natsAuth).toMatchObject({ kind: 'user', user: 'plugctl' });
    expect(JSON.stringify(c)).not.toContain(PASSWORD);
    expect(parseCliConfig({}, {}).natsAuth).toBeUndefined();
    expect(() => parseCliConfig({}, { NATS_USER: 'plugctl' })).toThrow(ConfigError);
    expect(() => parseCliConfig({}, { NATS_TOKEN: 't', NATS_CREDS: '/c.creds' })).toThrow(
      /only one way/,
    );
    expect(() => parseCliConfig({}, { NATS_CREDS: 'relative.creds' })).toThrow(/NATS_CREDS/);
    for (const [flags, env, field] of [
      [{ nats: `nats://plugctl:${PASSWORD}@127.0.0.1:4222` }, {}, '--nats'],
      [{}, { NATS_URL: `nats://plugctl:${PASSWORD}@127.0.0.1:4222` }, 'NATS_URL'],
    ] as const) {
      let error: unknown;
      try {
        parseCliConfig(flags, env);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect(error).toMatchObject({ field });
      expect(String((error as Error).message)).not.toContain(PASSWORD);
    }
  });

  it('names NATS_CREDS when the creds file cannot be read', async () => {
    const r = await events({ NATS_URL: withUser.url, NATS_CREDS: '/nonexistent/plugctl.creds' });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/NATS_CREDS.*\/nonexistent\/plugctl\.creds/);
  });
});
