// The simulator as its own process: prints one JSON line `{"url","kubeconfig","kubeletRoot"}`
// on stdout when ready and stops cleanly (volumes torn down, loop devices detached) on
// SIGTERM/SIGINT. Flags: --kubeconfig PATH --kubelet-root PATH --nodes a,b --port N
// --pod-start-latency-ms N --import-ms N --namespaces a,b --no-kubelet; LOG_LEVEL from env.
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { startKubeSim } from './sim.js';
import type { KubeSimOptions } from './sim.js';

function num(value: string | undefined): number | undefined {
  return value === undefined ? undefined : Number(value);
}

function list(value: string | undefined): string[] | undefined {
  return value?.split(',').filter((s) => s.length > 0);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kubeconfig: { type: 'string' },
      'kubelet-root': { type: 'string' },
      nodes: { type: 'string' },
      port: { type: 'string' },
      'pod-start-latency-ms': { type: 'string' },
      'import-ms': { type: 'string' },
      namespaces: { type: 'string' },
      'no-kubelet': { type: 'boolean' },
    },
  });
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'info' }, pino.destination(2));
  const options: KubeSimOptions = {
    logger,
    kubeconfigPath: values.kubeconfig,
    kubeletRoot: values['kubelet-root'],
    nodes: list(values.nodes),
    port: num(values.port),
    podStartLatencyMs: num(values['pod-start-latency-ms']),
    dataVolumeImportMs: num(values['import-ms']),
    namespaces: list(values.namespaces),
    kubelet: !values['no-kubelet'],
  };
  const sim = await startKubeSim(options);
  process.stdout.write(
    `${JSON.stringify({ url: sim.url, kubeconfig: sim.kubeconfigPath, kubeletRoot: sim.kubeletRoot })}\n`,
  );
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'stopping');
    sim.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
