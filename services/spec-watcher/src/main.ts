import { runServiceMain } from '@plugline/bus';

import { parseConfig } from './config.js';
import { startSpecWatcher } from './service.js';

/** `tsx services/spec-watcher/src/main.ts`: the spec-watcher as a process. */
runServiceMain({
  name: 'spec-watcher',
  env: process.env,
  parse: parseConfig,
  start: async (config, deps) => {
    const service = await startSpecWatcher(config, deps);
    return { ready: service.readyChecks(), stop: () => service.stop() };
  },
});
