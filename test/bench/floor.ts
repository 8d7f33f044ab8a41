/**
 * The floor: the same steps as the chain, done directly by one script with no bus and no state
 * machines — create the attachment pod and wait for it to run, bind-mount the disk image into the
 * launcher's hotplug folder, attach it in a simulated hypervisor (same simulator, same state-file
 * persistence and guest detach delay as domain-updater's), patch the VMI status; and back.
 * It mounts with the same mount(2)/umount2(2) calls node-mounter makes, so a cheaper mount in the
 * chain does not make the ratio look better than it is.
 *
 * It is timed between the chain's own end points: from a request patched onto the VMI, which the
 * script learns of through its own watch as the spec-watcher does, to the status entry as the
 * bench's watch sees it. The request is an annotation, not a spec volume, which the chain would
 * act on too; it is one VMI patch and one watch event all the same. The four steps alone are
 * reported as well (`stepsMs`).
 */
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import { VolumePhase, type VirtualMachineInstance } from '@plugline/contracts';
import {
  createSimulatedDriver,
  diskXml,
  DeviceEventType,
  type SimulatedDriver,
} from '@plugline/hypervisor';
import type { KubeClient } from '@plugline/kube';
import { bindMount, unmount } from '@plugline/node-mounter';
import { restartingWatch, WaitSet, type Observer, type VolumeView } from './observer.js';

export const FLOOR_STAGES = [
  'request seen',
  'pod running',
  'mount',
  'attach',
  'status patch',
  'status seen',
] as const;
export const FLOOR_UNPLUG_STAGES = [
  'request seen',
  'detach',
  'unmount',
  'pod deleted',
  'status patch',
  'status seen',
] as const;
/** The stages that are the steps themselves, without the request and the status being seen. */
const STEPS_BETWEEN_END_POINTS = 4;

export interface FloorOp {
  latencyMs: number;
  /** The steps alone: from the request seen to the status patch's response. */
  stepsMs: number;
  stages: Record<string, number>;
}

/** The annotation that asks the floor's script to plug (its value: the volume) or unplug. */
const REQUEST_ANNOTATION = 'bench.plugline.io/floor-volume';
const REQUEST_POINTER = `/metadata/annotations/${REQUEST_ANNOTATION.replace('/', '~1')}`;

export interface FloorTarget {
  ns: string;
  vmi: string;
  node: string;
  launcherUid: string;
  kubeletRoot: string;
  claim: string;
  /** `pvc.spec.volumeName`. */
  pv: string;
}

/** What the floor script's watch last saw of its VMI: the volume it is asked to plug, if any. */
interface RequestView {
  requested: string | undefined;
}

/** The floor script's own watch of its VMI (a connection of its own, as a controller has). */
class RequestWatch {
  #view: RequestView | undefined;
  #stopped = false;
  readonly #waits = new WaitSet<RequestView>(() => this.#view);
  #abort: AbortController | undefined;

  private constructor(private readonly vmi: string) {}

  static async start(kc: KubeConfig, ns: string, vmi: string): Promise<RequestWatch> {
    const w = new RequestWatch(vmi);
    const synced = w.until((v) => v !== undefined, 30_000);
    await restartingWatch(
      kc,
      `/apis/kubevirt.io/v1/namespaces/${ns}/virtualmachineinstances`,
      (type, obj) => w.#onVmi(type, obj as VirtualMachineInstance),
      { stopped: () => w.#stopped, started: (ac) => (w.#abort = ac) },
    );
    await synced;
    return w;
  }

  #onVmi(type: string, vmi: VirtualMachineInstance): void {
    if (vmi.metadata.name !== this.vmi) return;
    const requested =
      type === 'DELETED' ? undefined : vmi.metadata.annotations?.[REQUEST_ANNOTATION];
    this.#view = { requested };
    this.#waits.changed(this.vmi, this.#view, performance.now());
  }

  /** Resolves with the time the watch sees its VMI satisfy `test`. */
  until(test: (view: RequestView | undefined) => boolean, timeoutMs: number): Promise<number> {
    return this.#waits.until(this.vmi, test, timeoutMs);
  }

  stop(): void {
    this.#stopped = true;
    this.#abort?.abort();
    this.#waits.cancelAll();
  }
}

export interface FloorOptions {
  kc: KubeConfig;
  client: KubeClient;
  /** The bench's watch, which times the status entry (as it does the chain's). */
  obs: Observer;
  target: FloorTarget;
  stateDir: string;
  detachDelayMs: number;
}

export class Floor {
  private readonly client: KubeClient;
  private readonly obs: Observer;
  private readonly target: FloorTarget;
  private readonly domain: string;

  private constructor(
    options: FloorOptions,
    private readonly requests: RequestWatch,
    private readonly driver: SimulatedDriver,
  ) {
    this.client = options.client;
    this.obs = options.obs;
    this.target = options.target;
    this.domain = `${options.target.ns}_${options.target.vmi}`;
  }

  static async start(options: FloorOptions): Promise<Floor> {
    const { kc, client, target } = options;
    const vmi = await client.getVmi(target.ns, target.vmi);
    if (vmi.metadata.annotations === undefined) {
      await client.patchVmi(target.ns, target.vmi, [
        { op: 'add', path: '/metadata/annotations', value: {} },
      ]);
    }
    const requests = await RequestWatch.start(kc, target.ns, target.vmi);
    const driver = createSimulatedDriver({
      detachDelayMs: options.detachDelayMs,
      stateDir: join(options.stateDir, 'floor-hypervisor'),
    });
    const floor = new Floor(options, requests, driver);
    await driver.defineDomain(floor.domain);
    return floor;
  }

  /** Patches the request onto the VMI (the user's step) and waits until the script's watch sees it. */
  private async request(volume: string | undefined): Promise<number> {
    const t = this.target;
    const seen = this.requests.until((v) => v !== undefined && v.requested === volume, 30_000);
    await this.client.patchVmi(
      t.ns,
      t.vmi,
      volume === undefined
        ? [{ op: 'remove', path: REQUEST_POINTER }]
        : [{ op: 'add', path: REQUEST_POINTER, value: volume }],
    );
    return seen;
  }

  /** When the bench's watch saw the volume's status entry satisfy `test`. */
  private statusSeen(volume: string, test: (v: VolumeView | undefined) => boolean) {
    const t = this.target;
    return this.obs.volumeObservedAt(`${t.ns}/${t.vmi}/${volume}`, test, 30_000);
  }

  private hotplugDir(): string {
    const t = this.target;
    return `${t.kubeletRoot}/pods/${t.launcherUid}/volumes/kubernetes.io~empty-dir/hotplug-disks`;
  }

  async plug(volume: string, podName: string): Promise<FloorOp & { podUid: string }> {
    const t = this.target;
    const marks: number[] = [performance.now()];
    marks.push(await this.request(volume));
    const pod: V1Pod = {
      metadata: { name: podName, namespace: t.ns },
      spec: {
        nodeName: t.node,
        containers: [
          {
            name: 'hotplug-disk',
            image: 'quay.io/kubevirt/virt-launcher:v1.6.0',
            volumeMounts: [{ name: volume, mountPath: `/path/${volume}` }],
          },
        ],
        volumes: [{ name: volume, persistentVolumeClaim: { claimName: t.claim } }],
      },
    };
    const created = await this.client.createPod(t.ns, pod);
    const podUid = created.object.metadata?.uid ?? '';
    marks.push(
      await this.obs.untilPod(`${t.ns}/${podName}`, (v) => v?.phase === 'Running', 30_000),
    );
    const source = `${t.kubeletRoot}/pods/${podUid}/volumes/kubernetes.io~csi/${t.pv}/mount/disk.img`;
    const dest = join(this.hotplugDir(), `${volume}.img`);
    await writeFile(dest, '');
    bindMount(source, dest);
    marks.push(performance.now());
    const xml = diskXml({
      volumeName: volume,
      disk: { name: volume, disk: { bus: 'scsi' } },
      volumeMode: 'Filesystem',
      target: 'sda',
      hotplugDir: this.hotplugDir(),
    });
    const added = this.deviceEvent(DeviceEventType.Added, volume);
    await this.driver.attachDisk(this.domain, xml);
    await added;
    marks.push(performance.now());
    await this.client.patchVmiStatus(t.ns, t.vmi, [
      {
        op: 'add',
        path: '/status/volumeStatus/-',
        value: { name: volume, target: 'sda', phase: VolumePhase.Ready, reason: 'VolumeReady' },
      },
    ]);
    marks.push(performance.now());
    marks.push(await this.statusSeen(volume, (v) => v?.phase === VolumePhase.Ready));
    return { ...summarize(marks, FLOOR_STAGES), podUid };
  }

  async unplug(volume: string, podName: string): Promise<FloorOp> {
    const t = this.target;
    const marks: number[] = [performance.now()];
    marks.push(await this.request(undefined));
    const removed = this.deviceEvent(DeviceEventType.Removed, volume);
    await this.driver.detachDisk(this.domain, 'sda');
    await removed;
    marks.push(performance.now());
    const dest = join(this.hotplugDir(), `${volume}.img`);
    await unmount(dest);
    await rm(dest, { force: true });
    marks.push(performance.now());
    await this.client.deletePod(t.ns, podName);
    marks.push(await this.obs.untilPod(`${t.ns}/${podName}`, (v) => v?.present === false, 30_000));
    const vmi: VirtualMachineInstance = await this.client.getVmi(t.ns, t.vmi);
    const index = (vmi.status?.volumeStatus ?? []).findIndex((s) => s.name === volume);
    await this.client.patchVmiStatus(t.ns, t.vmi, [
      { op: 'test', path: `/status/volumeStatus/${index}/name`, value: volume },
      { op: 'remove', path: `/status/volumeStatus/${index}` },
    ]);
    marks.push(performance.now());
    marks.push(await this.statusSeen(volume, (v) => v?.present === false));
    return summarize(marks, FLOOR_UNPLUG_STAGES);
  }

  private deviceEvent(type: DeviceEventType, volume: string): Promise<void> {
    return new Promise((resolve) => {
      const off = this.driver.subscribe((e) => {
        if (e.type === type && e.domain === this.domain && e.alias === `ua-${volume}`) {
          off();
          resolve();
        }
      });
    });
  }

  async close(): Promise<void> {
    this.requests.stop();
    await this.driver.close();
  }
}

function summarize(marks: number[], names: readonly string[]): FloorOp {
  const stages: Record<string, number> = {};
  names.forEach((name, i) => {
    // The status can be seen before the patch's response arrives: that stage is then 0.
    stages[name] = Math.max(0, (marks[i + 1] as number) - (marks[i] as number));
  });
  const stepsEnd = marks[1 + STEPS_BETWEEN_END_POINTS] as number;
  return {
    latencyMs: (marks.at(-1) as number) - (marks[0] as number),
    stepsMs: stepsEnd - (marks[1] as number),
    stages,
  };
}
