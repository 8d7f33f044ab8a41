/**
 * What the domain-updater reads before each work item (the `observed` of the work event): the
 * desired direction from the VMI spec, the live domain's disk of the volume, and for a plug the
 * converted `<disk>`. Built by the service's `load` (I/O); the machine only reads this data.
 */

/** A disk to attach: the converted `<disk>` XML and the target it was given. */
export interface PlugPlan {
  readonly diskXml: string;
  readonly target: string;
  /** The source as libvirt sees it (in the host or the launcher's folder). */
  readonly sourcePath: string;
  readonly bus: string;
}

export interface Problem {
  readonly reason: string;
  readonly message: string;
}

export type Observation =
  /** Nothing to do on this node: the VMI is gone, not running, or runs elsewhere. */
  | { readonly kind: 'gone'; readonly why: string }
  /** The hypervisor or the domain cannot be read now (retry). */
  | ({ readonly kind: 'unavailable' } & Problem)
  | {
      readonly kind: 'observed';
      readonly domain: string;
      readonly vmiUID: string;
      /** `plug` while the volume and its disk are in the VMI spec; `unplug` otherwise. */
      readonly desired: 'plug' | 'unplug';
      /** The live domain's disk with alias `ua-<volume>`, if any. */
      readonly present: { readonly target: string } | null;
      /**
       * When (epoch ms) this process last saw the disk's `device-removed`, read before the domain
       * was: a detach requested before it is over, whatever the unit's snapshot says.
       */
      readonly removedAt?: number;
      /** Whether the volume's source exists in the launcher's hotplug folder (node-mounter's work). */
      readonly sourceReady: boolean;
      /** The disk to attach (plug, not present, source ready, converted). */
      readonly plan: PlugPlan | null;
      /** Why the disk cannot be converted (a spec problem retrying cannot fix). */
      readonly planError: Problem | null;
    };

export const ObservationKind = {
  Gone: 'gone',
  Unavailable: 'unavailable',
  Observed: 'observed',
} as const;

/** Reads an untrusted `observed` value; anything unexpected counts as `unavailable`. */
export function asObservation(value: unknown): Observation {
  const kind = (value as { kind?: unknown } | null | undefined)?.kind;
  if (kind === 'gone' || kind === 'unavailable' || kind === 'observed') return value as Observation;
  return {
    kind: 'unavailable',
    reason: 'NotObserved',
    message: 'the work item was not observed (no load result)',
  };
}
