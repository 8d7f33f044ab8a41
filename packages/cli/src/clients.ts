/** The clients a command needs, made from the parsed configuration. */
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeClient, loadKubeConfig } from '@plugline/kube';
import type { CliConfig } from './config.js';
import { CliError } from './errors.js';

export const FIELD_MANAGER = 'plugctl';

export interface Kube {
  readonly kc: KubeConfig;
  readonly client: KubeClient;
  /** `-n`, else the current context's namespace, else `default`. */
  readonly namespace: string;
}

export function kubeFrom(config: CliConfig): Kube {
  const kc = loadKubeConfig(
    config.kubeconfig === undefined ? {} : { kubeconfig: config.kubeconfig },
  );
  const contextNs = kc.getContextObject(kc.getCurrentContext())?.namespace;
  return {
    kc,
    client: new KubeClient({ kc, fieldManager: FIELD_MANAGER }),
    namespace:
      config.namespace ?? (contextNs !== undefined && contextNs !== '' ? contextNs : 'default'),
  };
}

export interface Nats extends AsyncDisposable {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  close(): Promise<void>;
}

/** Connects to NATS for reading the event stream (no reconnect loop: a CLI fails fast). */
export async function natsFrom(config: CliConfig): Promise<Nats> {
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: [...config.natsUrls],
      name: 'plugctl',
      timeout: 3000,
      maxReconnectAttempts: 10,
      reconnectTimeWait: 250,
    });
  } catch (err) {
    throw new CliError(
      `cannot connect to NATS at ${config.natsUrls.join(',')} (set --nats or NATS_URL): ${err instanceof Error ? err.message : String(err)}`,
      1,
      'NatsUnreachable',
      { cause: err },
    );
  }
  const close = async (): Promise<void> => {
    if (!nc.isClosed()) await nc.close();
  };
  return { nc, js: jetstream(nc, { timeout: 5000 }), close, [Symbol.asyncDispose]: close };
}
