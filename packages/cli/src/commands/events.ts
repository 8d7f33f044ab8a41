import { parseFlags, str } from '../args.js';
import { natsFrom } from '../clients.js';
import { parseCliConfig } from '../config.js';
import { ExitCode, UsageError } from '../errors.js';
import { countEvents, openEventStream, type EventScope } from '../event-stream.js';
import type { Io } from '../io.js';
import { formatEventLine } from '../render.js';
import { kubeFrom } from '../clients.js';

export const EVENTS_USAGE = `Show the event stream: every fact every stage established about each volume.

Usage:
  plugctl events [VMI] [--volume NAME] [--follow] [-o json] [-n NAMESPACE | -A]

Flags:
  -f, --follow               keep printing new events
  -o, --output string        json: one CloudEvent per line
      --volume string        only this volume
  -A, --all-namespaces       every namespace
`;

const OPTIONS = {
  follow: { type: 'boolean', short: 'f' },
  output: { type: 'string', short: 'o' },
  volume: { type: 'string' },
  'all-namespaces': { type: 'boolean', short: 'A' },
} as const;

function scopeOf(
  namespace: string | undefined,
  vmi: string | undefined,
  volume: string | undefined,
): EventScope {
  const scope: EventScope = {};
  if (namespace !== undefined) scope.namespace = namespace;
  if (vmi !== undefined) scope.vmi = vmi;
  if (volume !== undefined) scope.volume = volume;
  return scope;
}

export async function eventsCommand(argv: readonly string[], io: Io): Promise<ExitCode> {
  const { values, positionals } = parseFlags(argv, OPTIONS);
  if (values.help === true) {
    io.out(EVENTS_USAGE);
    return ExitCode.Ok;
  }
  if (positionals.length > 1)
    throw new UsageError(`accepts at most 1 arg(s), received ${positionals.length}`);
  const output = str(values.output) ?? 'text';
  if (output !== 'text' && output !== 'json') {
    throw new UsageError(`unknown output format "${output}", allowed formats are: json`);
  }
  const config = parseCliConfig(values, io.env);
  const all = values['all-namespaces'] === true;
  // The namespace comes from -n or the kubeconfig context; without a kubeconfig, every namespace.
  let namespace: string | undefined;
  if (!all) {
    try {
      namespace = kubeFrom(config).namespace;
    } catch {
      namespace = config.namespace;
    }
  }
  const scope = scopeOf(namespace, positionals[0], str(values.volume));
  const follow = values.follow === true;
  await using nats = await natsFrom(config);
  if (!follow && (await countEvents(nats.js, scope)) === 0) return ExitCode.Ok;
  const stream = await openEventStream(nats.js, scope, 'all');
  const onAbort = (): void => stream.stop();
  io.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const { event, pending } of stream) {
      io.out(output === 'json' ? `${JSON.stringify(event)}\n` : `${formatEventLine(event)}\n`);
      if (!follow && pending === 0) break;
    }
  } finally {
    io.signal?.removeEventListener('abort', onAbort);
    stream.stop();
  }
  return ExitCode.Ok;
}
