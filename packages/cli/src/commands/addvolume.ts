import { parseFlags, str } from '../args.js';
import { ExitCode } from '../errors.js';
import type { Io } from '../io.js';
import { addVolume } from '../volume.js';
import { sendVolumeRequest, VOLUME_REQUEST_OPTIONS, volumeRequest } from './volume-request.js';

export const ADDVOLUME_USAGE = `Add a volume to a running VM.

Usage:
  plugctl addvolume VMI --volume-name=NAME [flags]

Examples:
  # Add a PVC (or a DataVolume of that name) to the VMI 'demo' and wait until it is Ready
  plugctl addvolume demo --volume-name=demo-fs --wait

Flags:
      --volume-name string   name of the DataVolume or PVC to add (required)
      --disk-name string     name of the disk (and volume) in the VM; default the volume name
      --serial string        serial number of the disk; default the disk name
      --cache string         none, writethrough or writeback
      --disk-type string     disk (default) or lun
      --bus string           scsi (default) or virtio (disk only)
      --dry-run              validate the request without changing anything
      --persist              deprecated, no effect (the VM's template is always updated)
      --wait                 follow the operation until the volume is Ready
      --timeout duration     how long --wait waits (default 5m)
  -n, --namespace string     namespace (default: the kubeconfig context's)
      --kubeconfig string    kubeconfig file (default: $KUBECONFIG, ~/.kube/config)
      --nats string          NATS server URLs for --wait (default: $NATS_URL)
`;

const OPTIONS = {
  ...VOLUME_REQUEST_OPTIONS,
  'disk-name': { type: 'string' },
  serial: { type: 'string' },
  cache: { type: 'string' },
  'disk-type': { type: 'string' },
  bus: { type: 'string' },
} as const;

export async function addvolumeCommand(argv: readonly string[], io: Io): Promise<ExitCode> {
  const { values, positionals } = parseFlags(argv, OPTIONS);
  if (values.help === true) {
    io.out(ADDVOLUME_USAGE);
    return ExitCode.Ok;
  }
  const request = volumeRequest(values, positionals, io);
  const { vmi, volumeName, kube } = request;
  const diskName = str(values['disk-name']);
  return sendVolumeRequest(request, io, {
    volume: diskName !== undefined && diskName !== '' ? diskName : volumeName,
    operation: 'plug',
    send: () =>
      addVolume(kube.client, {
        namespace: kube.namespace,
        vmi,
        flags: {
          volumeName,
          diskName,
          serial: str(values.serial),
          cache: str(values.cache),
          diskType: str(values['disk-type']),
          bus: str(values.bus),
          dryRun: request.dryRun,
        },
      }),
    report: (result) => {
      if (result.dryRun) {
        io.out(
          `Dry run: the request to add volume ${result.name} to ${result.target} ${vmi} is valid; nothing was changed.\n`,
        );
        io.out(
          `${JSON.stringify({ volume: result.options?.volumeSource, disk: result.options?.disk })}\n`,
        );
        return;
      }
      io.out(`Successfully submitted add volume request to VM ${vmi} for volume ${volumeName}\n`);
    },
  });
}
