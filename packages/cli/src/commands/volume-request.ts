import { parseDuration, positionalArgs, str, type Parsed } from '../args.js';
import { kubeFrom, type Kube } from '../clients.js';
import { parseCliConfig, type CliConfig } from '../config.js';
import { ExitCode } from '../errors.js';
import type { Io } from '../io.js';
import type { VolumeRequestResult } from '../volume.js';
import { DEFAULT_TIMEOUT_MS, openFollower, type Follower } from './follow.js';

/** The flags `addvolume` and `removevolume` share, as virtctl's two commands do. */
export const VOLUME_REQUEST_OPTIONS = {
  'volume-name': { type: 'string' },
  'dry-run': { type: 'boolean' },
  persist: { type: 'boolean' },
  wait: { type: 'boolean' },
  timeout: { type: 'string' },
} as const;

type SharedValues = Parsed<
  Record<keyof typeof VOLUME_REQUEST_OPTIONS, string | boolean | undefined>
>['values'];

/** What a volume request's shared flags select. */
export interface VolumeRequest {
  readonly vmi: string;
  /** `--volume-name`; empty when not given (the request itself says it is required). */
  readonly volumeName: string;
  readonly dryRun: boolean;
  /** `--wait`, unless a dry run or no volume leaves nothing to follow. */
  readonly follow: boolean;
  readonly timeoutMs: number;
  readonly config: Readonly<CliConfig>;
  readonly kube: Kube;
}

/**
 * Reads the shared flags and makes the clients. `--persist` is accepted and warned about, as
 * virtctl does since the VM's template is always updated.
 */
export function volumeRequest(values: SharedValues, positionals: string[], io: Io): VolumeRequest {
  const [vmi] = positionalArgs(positionals, ['vmi']) as [string];
  const volumeName = str(values['volume-name']) ?? '';
  const dryRun = values['dry-run'] === true;
  const timeout = str(values.timeout);
  const timeoutMs =
    timeout === undefined ? DEFAULT_TIMEOUT_MS : parseDuration(timeout, '--timeout');
  if (values.persist === true) {
    io.err(
      'Flag --persist has been deprecated, the VM template is always updated when the VMI has a VM\n',
    );
  }
  const config = parseCliConfig(values, io.env);
  return {
    vmi,
    volumeName,
    dryRun,
    follow: values.wait === true && !dryRun && volumeName !== '',
    timeoutMs,
    config,
    kube: kubeFrom(config),
  };
}

/**
 * Sends the request and reports it; with `--wait`, then follows the volume's phases. The event
 * stream is opened before the request is sent, so its first phase cannot be missed.
 */
export async function sendVolumeRequest(
  request: VolumeRequest,
  io: Io,
  how: {
    /** The volume as its phases name it (addvolume's `--disk-name` when given). */
    volume: string;
    operation: 'plug' | 'unplug';
    send: () => Promise<VolumeRequestResult>;
    report: (result: VolumeRequestResult) => void;
  },
): Promise<ExitCode> {
  const { kube } = request;
  let follower: Follower | undefined;
  if (request.follow) {
    follower = await openFollower(request.config, io, {
      scope: { namespace: kube.namespace, vmi: request.vmi, volume: how.volume },
      operation: how.operation,
      timeoutMs: request.timeoutMs,
      client: kube.client,
    });
  }
  try {
    const startedAt = Date.now();
    const result = await how.send();
    how.report(result);
    if (result.dryRun || follower === undefined) return ExitCode.Ok;
    return await follower.follow(result.name, startedAt);
  } finally {
    await follower?.close();
  }
}
