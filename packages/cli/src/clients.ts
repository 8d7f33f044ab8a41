/** The clients a command needs, made from the parsed configuration. */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import type { KubeConfig } from '@kubernetes/client-node';
import { connectBus, type Bus } from '@plugline/bus';
import { ConfigError } from '@plugline/contracts';
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

/**
 * The Kubernetes client. With no kubeconfig anywhere and outside a pod, client-node would fall
 * back to `http://localhost:8080` and fail each request with a TLS complaint: a user who forgot
 * to source the embedded default's env is told so instead.
 */
export function kubeFrom(config: CliConfig): Kube {
  if (config.kubeconfig === undefined && !config.inCluster) {
    throw new CliError(
      'no kubeconfig found: set KUBECONFIG or pass --kubeconfig (the embedded default started by `plugctl up` writes .plugline/kubeconfig; `source .plugline/env` sets it)',
      1,
      'NoKubeconfig',
    );
  }
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

/**
 * Connects to NATS for reading the event stream, with the credentials of `config.natsAuth` (the
 * same variables and handling as the services'; a creds file is read at each connect). No
 * reconnect loop: a CLI fails fast.
 */
export async function natsFrom(config: CliConfig): Promise<Nats> {
  let bus: Bus;
  try {
    bus = await connectBus({
      servers: config.natsUrls,
      name: 'plugctl',
      auth: config.natsAuth,
      maxReconnectAttempts: 10,
      reconnectTimeWaitMs: 250,
    });
  } catch (err) {
    if (err instanceof ConfigError) throw err; // an unreadable NATS_CREDS: its own message
    throw new CliError(
      `cannot connect to NATS at ${config.natsUrls.join(',')} (set --nats or NATS_URL${config.natsAuth === undefined ? '' : ', and check the NATS credentials'}): ${err instanceof Error ? err.message : String(err)}`,
      1,
      'NatsUnreachable',
      { cause: err },
    );
  }
  const close = (): Promise<void> => bus.close();
  return { nc: bus.nc, js: bus.js, close, [Symbol.asyncDispose]: close };
}
