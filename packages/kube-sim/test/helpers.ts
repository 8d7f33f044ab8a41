import { randomBytes } from 'node:crypto';
import { ApiException } from '@kubernetes/client-node';

/** A long random suffix, so names never collide between tests. */
export function rand(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** The HTTP code and parsed Status body of a failed client-node call. */
export async function failure(
  p: Promise<unknown>,
): Promise<{ code: number; status: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException) {
      const body = err.body as unknown;
      const status = (typeof body === 'string' ? JSON.parse(body) : body) as Record<
        string,
        unknown
      >;
      return { code: err.code, status };
    }
    throw err;
  }
  throw new Error('expected the call to fail');
}

/** A VirtualMachineInstance that satisfies KubeVirt's schema. */
export function vmi(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachineInstance',
    metadata: { name, labels },
    spec: {
      domain: {
        devices: {
          disks: [{ name: 'containerdisk', disk: { bus: 'virtio' } }],
        },
        resources: { requests: { memory: '128Mi' } },
      },
      volumes: [
        {
          name: 'containerdisk',
          containerDisk: { image: 'quay.io/kubevirt/cirros-container-disk-demo' },
        },
      ],
    },
  };
}

export function pod(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels: { app: 'conformance' } },
    spec: { containers: [{ name: 'main', image: 'busybox' }], ...extra },
  };
}
