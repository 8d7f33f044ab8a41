/** connectBus with the credentials a service's config carries (`natsAuth`), on real servers. */
import { ConfigError } from '@plugline/contracts';
import { startNats, type NatsServer } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { connectBus, envNatsAuth, type Bus } from '../src/index.js';

let withUser: NatsServer;
let withToken: NatsServer;
const buses: Bus[] = [];

beforeAll(async () => {
  [withUser, withToken] = await Promise.all([
    startNats({ args: ['--user', 'spec-watcher', '--pass', 'pw-1'] }),
    startNats({ args: ['--auth', 'tok-1'] }),
  ]);
}, 30_000);

afterAll(async () => {
  await Promise.allSettled(buses.map((b) => b.close()));
  await Promise.allSettled([withUser?.stop(), withToken?.stop()]);
});

async function connect(server: NatsServer, env: Record<string, string>): Promise<Bus> {
  const bus = await connectBus({
    servers: server.url,
    auth: envNatsAuth(env),
    maxReconnectAttempts: 0,
  });
  buses.push(bus);
  return bus;
}

describe('connectBus with natsAuth', () => {
  it('authenticates with NATS_USER + NATS_PASSWORD', async () => {
    const bus = await connect(withUser, { NATS_USER: 'spec-watcher', NATS_PASSWORD: 'pw-1' });
    expect(bus.connected()).toBe(true);
    await expect(
      connect(withUser, { NATS_USER: 'spec-watcher', NATS_PASSWORD: 'wrong' }),
    ).rejects.toThrow(/authorization/i);
  });

  it('authenticates with NATS_TOKEN', async () => {
    const bus = await connect(withToken, { NATS_TOKEN: 'tok-1' });
    expect(bus.connected()).toBe(true);
    await expect(connect(withToken, { NATS_TOKEN: 'tok-2' })).rejects.toThrow(/authorization/i);
  });

  it('is refused without credentials where the server wants them', async () => {
    await expect(connect(withUser, {})).rejects.toThrow(/authorization/i);
  });

  it('names NATS_CREDS when the creds file cannot be read', async () => {
    const failed = connect(withUser, { NATS_CREDS: '/nonexistent/plugline.creds' });
    await expect(failed).rejects.toBeInstanceOf(ConfigError);
    await expect(failed).rejects.toMatchObject({ field: 'NATS_CREDS' });
  });
});
