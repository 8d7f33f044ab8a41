import { parseDuration, parseFlags, positionalArgs, str } from '../args.js';
import { kubeFrom } from '../clients.js';
import { parseCliConfig } from '../config.js';
import { ExitCode } from '../errors.js';
import type { Io } from '../io.js';
import { removeVolume } from '../volume.js';
import { DEFAULT_TIMEOUT_MS, openFollower, type Follower } from './follow.js';

export const REMOVEVOLUME_USAGE = `Remove a hotplugged volume from a running VM.

Usage:
  plugctl removevolume VMI --volume-name=NAME [flags]

Flags:
      --volume-name string   name of the volume to remove (required)
      --dry-run              validate the request without changing anything
      --persist              deprecated, no effect
      --wait                 follow the operation until the volume is gone (a guest that
                             holds the disk past the detach timeout is shown, and followed past)
      --timeout duration     how long --wait waits (default 5m)
  -n, --namespace string     namespace (default: the kubeconfig context's)
      --kubeconfig string    kubeconfig file (default: $KUBECONFIG, ~/.kube/config)
      --nats string          NATS server URLs for --wait (default: $NATS_URL)
`;

const OPTIONS = {
  'volume-name': { type: 'string' },
  'dry-run': { type: 'boolean' },
  persist: { type: 'boolean' },
  wait: { type: 'boolean' },
  timeout: { type: 'string' },
} as const;

export async function removevolumeCommand(argv: readonly string[], io: Io): Promise<ExitCode> {
  const { values, positionals } = parseFlags(argv, OPTIONS);
  if (values.help === true) {
    io.out(REMOVEVOLUME_USAGE);
    return ExitCode.Ok;
  }
  const [vmi] = positionalArgs(positionals, ['vmi']) as [string];
  const volumeName = str(values['volume-name']) ?? '';
  const dryRun = values['dry-run'] === true;
  const timeoutMs =
    str(values.timeout) === undefined
      ? DEFAULT_TIMEOUT_MS
      : parseDuration(str(values.timeout) as string, '--timeout');
  if (values.persist === true) {
    io.err(
      'Flag --persist has been deprecated, the VM template is always updated when the VMI has a VM\n',
    );
  }
  const config = parseCliConfig(values, io.env);
  const kube = kubeFrom(config);
  let follower: Follower | undefined;
  if (values.wait === true && !dryRun && volumeName !== '') {
    follower = await openFollower(config, io, {
      scope: { namespace: kube.namespace, vmi, volume: volumeName },
      operation: 'unplug',
      timeoutMs,
      client: kube.client,
    });
  }
  try {
    const startedAt = Date.now();
    const result = await removeVolume(kube.client, {
      namespace: kube.namespace,
      vmi,
      volumeName,
      dryRun,
    });
    if (result.dryRun) {
      io.out(
        `Dry run: the request to remove volume ${result.name} from ${result.target} ${vmi} is valid; nothing was changed.\n`,
      );
      return ExitCode.Ok;
    }
    io.out(`Successfully submitted remove volume request to VM ${vmi} for volume ${volumeName}\n`);
    if (follower === undefined) return ExitCode.Ok;
    return await follower.follow(result.name, startedAt);
  } finally {
    await follower?.close();
  }
}
