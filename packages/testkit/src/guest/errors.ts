import { PluglineError } from '@plugline/contracts';

/** The guest harness could not build the guest, start libvirt, or boot or tear down a domain. */
export class GuestHarnessError extends PluglineError {
  override name = 'GuestHarnessError';
  constructor(message: string, options?: ErrorOptions) {
    super('GuestHarnessFailed', message, options);
  }
}
