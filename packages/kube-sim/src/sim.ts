import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { writeKubeconfig } from './kubeconfig.js';
import { KubeletSim } from './kubelet.js';
import { Types } from './resources.js';
import { ApiServer } from './server.js';
import { StorageControllers } from './storage-controllers.js';
import { VmiNodeLabels } from './vmi-node-labels.js';
import { Store } from './store.js';
import { makeValidator } from './validation.js';
import { KubeletLayout, detachLoop, loopDevicesUnder, removeTree } from './volumes.js';

export interface KubeSimOptions {
  /** The kubelet root folder (default: a fresh temp folder, removed on stop). */
  kubeletRoot?: string;
  /** Node names (default `['node-1']`). */
  nodes?: string[];
  /** Time from volumes ready to pod Running (default 30 ms). */
  podStartLatencyMs?: number;
  /** How long a DataVolume import takes (default 200 ms). */
  dataVolumeImportMs?: number;
  /** Where to write the kubeconfig (default: in the sim's temp folder). */
  kubeconfigPath?: string;
  /** Watch history kept per resource type; older versions answer 410 Gone (default 10,000). */
  watchCacheSize?: number;
  /** How often watches that allow bookmarks get one (default 1,000 ms). */
  bookmarkIntervalMs?: number;
  /** Storage classes that bind on first consumer (default `['local-wffc']`). */
  waitForFirstConsumerClasses?: string[];
  /** Namespaces to create at start, besides `default` and `kube-system`. */
  namespaces?: string[];
  logger?: Logger;
  /** Run the scheduler, kubelets, PV binder and DataVolume importer (default true). */
  kubelet?: boolean;
  /**
   * Label each VMI with the node in its `status.nodeName` (`kubevirt.io/nodeName`), as
   * virt-controller does once it schedules one (default true).
   */
  vmiNodeLabels?: boolean;
  /** Loopback port (default random). */
  port?: number;
}

export const FailureKind = {
  PvcNeverBinds: 'pvc-never-binds',
  ImportFails: 'import-fails',
} as const;
export type FailureKind = (typeof FailureKind)[keyof typeof FailureKind];

export interface InjectedFailure {
  kind: FailureKind;
  namespace: string;
  /** The PVC (or DataVolume) name. */
  name: string;
}

/** A running simulator: API server, and unless disabled, scheduler, kubelets and storage. */
export interface KubeSim extends AsyncDisposable {
  readonly url: string;
  readonly kubeconfigPath: string;
  readonly kubeletRoot: string;
  readonly layout: KubeletLayout;
  readonly nodes: readonly string[];
  /** The API server's storage, for in-process reads and writes. */
  readonly store: Store;
  /** Closes every open watch connection (clients resume from their last version). */
  dropWatches(): number;
  /** Forgets the watch history: resuming from an older version answers 410 Gone. */
  compact(): void;
  /** Makes a PVC never bind or a DataVolume's import fail (same as the annotations). */
  injectFailure(failure: InjectedFailure): void;
  /** Loop devices attached now, by PV name. */
  loopDevices(): Map<string, string>;
  /** Watch events of one kind (`Pod`, `VirtualMachineInstance`) sent so far, every client's. */
  watchEventsSent(kind: string): number;
  stop(): Promise<void>;
}

async function detachStale(layout: KubeletLayout, log: Logger): Promise<void> {
  try {
    for (const { device } of await loopDevicesUnder(layout.stateDir())) {
      await detachLoop(device);
      log.warn({ device }, 'detached a loop device left by an earlier run');
    }
  } catch (err) {
    log.debug({ err }, 'losetup unavailable: block volumes will fail');
  }
}

export async function startKubeSim(options: KubeSimOptions = {}): Promise<KubeSim> {
  const log = options.logger ?? pino({ level: 'silent' });
  const workDir = await mkdtemp(join(tmpdir(), 'kube-sim-'));
  const kubeletRoot = resolve(options.kubeletRoot ?? join(workDir, 'kubelet'));
  await mkdir(kubeletRoot, { recursive: true });
  const layout = new KubeletLayout(kubeletRoot);
  const nodes = options.nodes ?? ['node-1'];
  const store = new Store(options.watchCacheSize ?? 10_000);
  store.addValidator(makeValidator());
  for (const ns of new Set(['default', 'kube-system', ...(options.namespaces ?? [])])) {
    store.create(Types.namespaces, { metadata: { name: ns } });
  }
  const failures = { neverBind: new Set<string>(), importFails: new Set<string>() };
  const wffc = options.waitForFirstConsumerClasses ?? ['local-wffc'];
  let storage: StorageControllers | undefined;
  let kubelet: KubeletSim | undefined;
  if (options.kubelet ?? true) {
    await detachStale(layout, log);
    store.gracefulPods = true;
    storage = new StorageControllers({
      store,
      logger: log,
      dataVolumeImportMs: options.dataVolumeImportMs ?? 200,
      waitForFirstConsumerClasses: wffc,
      failures,
    });
    kubelet = new KubeletSim({
      store,
      logger: log,
      layout,
      nodes,
      podStartLatencyMs: options.podStartLatencyMs ?? 30,
      waitForFirstConsumerClasses: wffc,
      storage,
    });
    storage.start();
    kubelet.start();
  }
  const labels = options.vmiNodeLabels === false ? undefined : new VmiNodeLabels(store, log);
  labels?.start();
  const server = new ApiServer({
    store,
    logger: log,
    bookmarkIntervalMs: options.bookmarkIntervalMs,
  });
  const url = await server.listen('127.0.0.1', options.port ?? 0);
  const kubeconfigPath = resolve(options.kubeconfigPath ?? join(workDir, 'kubeconfig'));
  await writeKubeconfig(kubeconfigPath, url);
  log.info({ url, kubeconfig: kubeconfigPath, kubeletRoot }, 'kube-sim started');

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await server.close();
      await kubelet?.stop();
      await storage?.stop();
      await labels?.stop();
      store.close();
      await removeTree(workDir);
      log.info('kube-sim stopped');
    })());

  return {
    url,
    kubeconfigPath,
    kubeletRoot,
    layout,
    nodes,
    store,
    dropWatches: () => store.dropWatches(),
    compact: () => store.compact(),
    injectFailure: (f) => {
      const key = `${f.namespace}/${f.name}`;
      if (f.kind === FailureKind.PvcNeverBinds) failures.neverBind.add(key);
      else failures.importFails.add(key);
    },
    loopDevices: () => kubelet?.loopDevices() ?? new Map(),
    watchEventsSent: (kind) => server.metrics.watchEventsSent(kind),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
