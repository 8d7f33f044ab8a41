import { KubevirtLabel } from '@plugline/contracts';

/**
 * A minimal VMI manifest that virt-controller has placed on `node`: labelled
 * `kubevirt.io/nodeName`, which is what node agents select their VMIs by.
 */
export function placedVmi(name: string, node: string): Record<string, unknown> {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: { name, labels: { [KubevirtLabel.NodeName]: node } },
    spec: { domain: { devices: {}, resources: { requests: { memory: '64Mi' } } } },
  };
}
