import { KubeConfig } from '@kubernetes/client-node';
import { ConfigError } from '@plugline/contracts';

/** Where to find the cluster: an explicit kubeconfig path, or the standard resolution. */
export interface LoadKubeConfigOptions {
  /**
   * Path of a kubeconfig file. When absent, client-node's `loadFromDefault()` applies
   * (`$KUBECONFIG`, `~/.kube/config`, then the in-cluster service account). Read the path
   * from the environment in the service's `config.ts`, not here.
   */
  kubeconfig?: string;
}

/**
 * Loads a KubeConfig and checks it names a current cluster.
 *
 * @throws ConfigError (field `kubeconfig`) when the file cannot be read or has no current cluster.
 */
export function loadKubeConfig(options: LoadKubeConfigOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (options.kubeconfig) kc.loadFromFile(options.kubeconfig);
    else kc.loadFromDefault();
  } catch (err) {
    const where = options.kubeconfig ?? 'the default locations';
    throw new ConfigError('kubeconfig', `cannot load a kubeconfig from ${where}`, { cause: err });
  }
  if (!kc.getCurrentCluster()) {
    throw new ConfigError('kubeconfig', 'the kubeconfig has no current cluster');
  }
  return kc;
}
