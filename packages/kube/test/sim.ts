import type { KubeConfig } from '@kubernetes/client-node';
import { startKubeSim, type KubeSim } from '@plugline/kube-sim';
import type { Logger } from 'pino';
import { afterAll, beforeAll } from 'vitest';
import { KubeClient } from '../src/index.js';
import { createNamespace, kubeConfigFor } from './helpers.js';

/** A kube-sim API server (no kubelet) shared by the tests of one file, and what they talk to it with. */
export interface SimEnv {
  readonly sim: KubeSim;
  /** A KubeConfig for the simulator, without credentials. */
  readonly kc: KubeConfig;
  /** A client with the field manager `plugline-test`. */
  readonly client: KubeClient;
  /** A namespace made for the file. */
  readonly ns: string;
}

/**
 * Starts a kube-sim before the calling file's tests and stops it after them. The fields may be
 * read only inside tests and hooks; `logger` goes to the client.
 */
export function useKubeSim(options: { logger?: Logger } = {}): SimEnv {
  let env: SimEnv | undefined;
  let sim: KubeSim | undefined;
  const current = (): SimEnv => {
    if (env === undefined) throw new Error('kube-sim runs only while the tests of the file run');
    return env;
  };

  beforeAll(async () => {
    sim = await startKubeSim({ kubelet: false });
    const kc = kubeConfigFor(sim.url);
    const client = new KubeClient({ kc, fieldManager: 'plugline-test', logger: options.logger });
    env = { sim, kc, client, ns: await createNamespace(kc) };
  });

  afterAll(async () => {
    env = undefined;
    await sim?.stop();
  });

  return {
    get sim() {
      return current().sim;
    },
    get kc() {
      return current().kc;
    },
    get client() {
      return current().client;
    },
    get ns() {
      return current().ns;
    },
  };
}
