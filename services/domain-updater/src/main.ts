import { connectBus, runServiceMain } from '@plugline/bus';
import { loadKubeConfig } from '@plugline/kube';

import { parseConfig } from './config.js';
import { provisionDomainUpdater, startDomainUpdater } from './service.js';

/** `tsx services/domain-updater/src/main.ts`: one domain-updater for `NODE_NAME`. */
runServiceMain({
  name: 'domain-updater',
  env: process.env,
  parse: parseConfig,
  start: async (config, { logger, metrics }) => {
    const kc = loadKubeConfig({ kubeconfig: config.kubeconfig });
    const bus = await connectBus({
      servers: config.natsUrls,
      auth: config.natsAuth,
      name: `domain-updater@${config.nodeName}`,
      logger,
    });
    await provisionDomainUpdater(bus, config);
    const updater = await startDomainUpdater(config, { bus, kc, logger, metrics });
    return {
      ready: {
        nats: () => bus.connected(),
        consumer: () => updater.stage.bound(),
        informers: () => updater.ready(),
      },
      readyFields: { node: config.nodeName, hypervisor: config.hypervisor },
      stop: async () => {
        await updater.stop();
        await bus.drain();
      },
    };
  },
});
