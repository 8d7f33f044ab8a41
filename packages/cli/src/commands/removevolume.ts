import { parseFlags } from '../args.js';
import { ExitCode } from '../errors.js';
import type { Io } from '../io.js';
import { removeVolume } from '../volume.js';
import { sendVolumeRequest, VOLUME_REQUEST_OPTIONS, volumeRequest } from './volume-request.js';

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

export async function removevolumeCommand(argv: readonly string[], io: Io): Promise<ExitCode> {
  const { values, positionals } = parseFlags(argv, VOLUME_REQUEST_OPTIONS);
  if (values.help === true) {
    io.out(REMOVEVOLUME_USAGE);
    return ExitCode.Ok;
  }
  const request = volumeRequest(values, positionals, io);
  const { vmi, volumeName, kube } = request;
  return sendVolumeRequest(request, io, {
    volume: volumeName,
    operation: 'unplug',
    send: () =>
      removeVolume(kube.client, {
        namespace: kube.namespace,
        vmi,
        volumeName,
        dryRun: request.dryRun,
      }),
    report: (result) => {
      if (result.dryRun) {
        io.out(
          `Dry run: the request to remove volume ${result.name} from ${result.target} ${vmi} is valid; nothing was changed.\n`,
        );
        return;
      }
      io.out(
        `Successfully submitted remove volume request to VM ${vmi} for volume ${volumeName}\n`,
      );
    },
  });
}
