import { asError } from '@plugline/contracts';
import {
  createLogger,
  createMetrics,
  startHealthServer,
  startTracing,
  type HealthCheck,
  type Logger,
  type PluglineMetrics,
} from '@plugline/telemetry';

import type { Env, ServiceBaseConfig } from './service-config.js';

/** What a service's `start` hands back to {@link runServiceMain}. */
export interface RunningService {
  /** The `/readyz` checks (e.g. NATS connected, consumers bound, informers synced). */
  readonly ready: Readonly<Record<string, HealthCheck>>;
  /** Extra fields of the `ready` log line (e.g. the node). */
  readonly readyFields?: Readonly<Record<string, unknown>>;
  /** Stops the stage(s) and informers and drains NATS. */
  stop(): Promise<void>;
}

export interface ServiceMainOptions<C extends ServiceBaseConfig> {
  /** The logger's name and the process's name in the fatal line. */
  readonly name: string;
  /** The environment, handed over by `main.ts` (this module never reads the process environment itself). */
  readonly env: Env;
  /** The service's `parseConfig`: called once, with {@link env}. */
  readonly parse: (env: Env) => C;
  /** Connects, provisions and starts the service. */
  start(config: C, deps: { logger: Logger; metrics: PluglineMetrics }): Promise<RunningService>;
}

/**
 * The bootstrap of a service's `main.ts`: parses the config, creates the logger and metrics,
 * starts the trace export when the `OTEL_*` variables ask for one, then the service and its
 * health server (`/healthz`, `/readyz`, `/metrics`), logs ONE
 * `{"msg":"ready","healthUrl":...}` line, and on SIGTERM/SIGINT stops the service, closes the
 * health server and exits 0 (1 if the stop threw). A failure to start is logged as one JSON line
 * on stderr and exits 1.
 */
export function runServiceMain<C extends ServiceBaseConfig>(options: ServiceMainOptions<C>): void {
  bootstrap(options).catch((err: unknown) => {
    const error = asError(err);
    process.stderr.write(
      `${JSON.stringify({ level: 60, name: options.name, msg: `${options.name} failed to start`, err: { type: error.name, message: error.message } })}\n`,
    );
    process.exit(1);
  });
}

async function bootstrap<C extends ServiceBaseConfig>(
  options: ServiceMainOptions<C>,
): Promise<void> {
  const config = options.parse(options.env);
  const logger = createLogger({
    level: config.logLevel,
    pretty: config.logPretty,
    name: options.name,
  });
  const metrics = createMetrics();
  const traces = config.traces;
  const tracing =
    traces === undefined
      ? undefined
      : await startTracing({ ...traces, serviceName: traces.serviceName ?? options.name }, logger);
  const service = await options.start(config, { logger, metrics });
  const health = await startHealthServer({
    port: config.healthPort,
    host: config.healthHost,
    ready: service.ready,
    registry: metrics.registry,
  });
  logger.info({ healthUrl: health.url, ...service.readyFields }, 'ready');

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    void (async () => {
      let code = 0;
      try {
        await service.stop();
        await health.close();
      } catch (err) {
        logger.error({ err }, 'unclean stop');
        code = 1;
      }
      // After the stop: the spans of the handlings it waited for go out too.
      await tracing?.shutdown();
      process.exit(code);
    })();
  };
  // `on`, not `once`: a signal sent to the process group may arrive twice (directly and relayed
  // by tsx); a second one must not kill the process mid-stop.
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
