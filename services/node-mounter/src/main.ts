import { runServiceMain } from '@plugline/bus';

import { parseConfig } from './config.js';
import { startNodeMounter } from './service.js';

/**
 * `tsx services/node-mounter/src/main.ts`: the node agent of one node (`NODE_NAME`). Parses the
 * config, starts the service and its health server, logs one `ready` line, and on SIGTERM/SIGINT
 * stops the stage and informers, drains NATS and exits 0.
 */
runServiceMain({
  name: 'node-mounter',
  env: process.env,
  parse: parseConfig,
  start: async (config, deps) => {
    const service = await startNodeMounter(config, deps);
    return {
      ready: service.readyChecks(),
      readyFields: { node: config.nodeName },
      stop: () => service.stop(),
    };
  },
});
