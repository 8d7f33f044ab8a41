import { writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';

/** A kubeconfig that points kubectl and client libraries at the simulator. */
export function kubeconfigYaml(url: string, name = 'kube-sim'): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    // client-node 1.4 refuses plain HTTP unless TLS verification is marked as skipped.
    clusters: [{ name, cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name, user: { token: 'kube-sim' } }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: 'default' } }],
    'current-context': name,
    preferences: {},
  });
}

export async function writeKubeconfig(path: string, url: string): Promise<void> {
  await writeFile(path, kubeconfigYaml(url), { mode: 0o600 });
}
