/**
 * The attachment-orchestrator process: `node_modules/.bin/tsx services/attachment-orchestrator/src/main.ts`.
 * Parses the environment, connects, provisions, starts the stage and the informers, serves
 * `/healthz`, `/readyz` and `/metrics`, logs `{"msg":"ready","healthUrl":...}`, and drains on
 * SIGTERM/SIGINT.
 */
import { connectBus, provision, runServiceMain } from '@plugline/bus';
import { Stage } from '@plugline/contracts';
import { loadKubeConfig } from '@plugline/kube';

import { parseConfig } from './config.js';
import { startAttachmentOrchestrator } from './service.js';

runServiceMain({
  name: Stage.AttachmentOrchestrator,
  env: process.env,
  parse: parseConfig,
  start: async (config, { logger, metrics }) => {
    const kc = loadKubeConfig({ kubeconfig: config.kubeconfig });
    const bus = await connectBus({
      servers: config.natsUrls,
      auth: config.natsAuth,
      name: `${Stage.AttachmentOrchestrator}@${process.pid}`,
      logger,
    });
    await provision(bus, {
      replicas: config.streamReplicas,
      consumers: [{ stage: Stage.AttachmentOrchestrator, ackWaitMs: config.ackWaitMs }],
    });
    const service = await startAttachmentOrchestrator(config, { bus, kc, logger, metrics });
    return {
      ready: {
        nats: () => bus.connected(),
        consumers: () => service.stage.bound(),
        informers: () => service.ready(),
      },
      stop: async () => {
        await service.stop();
        await bus.drain();
      },
    };
  },
});
