import type { NatsServer } from './nats-server.js';

/**
 * Starts NATS (JetStream, monitoring on 8222) in a container through `@testcontainers/nats`.
 * Loaded lazily: importing testcontainers costs time and is only needed when an engine runs.
 */
export async function startNatsContainer(image: string): Promise<NatsServer> {
  const { NatsContainer } = await import('@testcontainers/nats');
  const container = await new NatsContainer(image)
    .withJetStream()
    .withArg('store_dir', '/data')
    .withArg('http_port', '8222')
    .withExposedPorts(4222, 8222)
    .start();
  let stopped = false;
  const host = container.getHost();
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await container.stop({ remove: true, removeVolumes: true });
  };
  const halt = async (): Promise<void> => {
    await container.stop({ remove: false });
  };
  return {
    engine: 'container',
    url: `nats://${host}:${container.getMappedPort(4222)}`,
    port: container.getMappedPort(4222),
    monitorUrl: `http://${host}:${container.getMappedPort(8222)}`,
    storeDir: '/data',
    name: container.getName(),
    pid: undefined,
    output: () => '',
    running: () => !stopped,
    restart: async () => {
      await container.restart();
    },
    halt,
    reload: async () => {
      const result = await container.exec(['kill', '-HUP', '1']);
      if (result.exitCode !== 0) throw new Error(`could not reload NATS: ${result.output}`);
    },
    start: async () => {
      await container.restart();
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
