/**
 * The floor: the same steps as the chain, done directly by one script with no bus and no state
 * machines — create the attachment pod and wait for it to run, bind-mount the disk image into the
 * launcher's hotplug folder, attach it in a simulated hypervisor (same simulator, same state-file
 * persistence and guest detach delay as domain-updater's), patch the VMI status; and back.
 * It mounts with the same mount(2)/umount2(2) calls node-mounter makes, so a cheaper mount in the
 * chain does not make the ratio look better than it is.
 */
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { V1Pod } from '@kubernetes/client-node';
import { VolumePhase, type VirtualMachineInstance } from '@plugline/contracts';
import {
  createSimulatedDriver,
  diskXml,
  DeviceEventType,
  type SimulatedDriver,
} from '@plugline/hypervisor';
import type { KubeClient } from '@plugline/kube';
import { bindMount, unmount } from '@plugline/node-mounter';
import type { Observer } from './observer.js';

export const FLOOR_STAGES = ['pod running', 'mount', 'attach', 'status patch'] as const;
export const FLOOR_UNPLUG_STAGES = ['detach', 'unmount', 'pod deleted', 'status patch'] as const;

export interface FloorOp {
  latencyMs: number;
  stages: Record<string, number>;
}

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

export class Floor {
  private constructor(
    private readonly client: KubeClient,
    private readonly obs: Observer,
    private readonly driver: SimulatedDriver,
    private readonly target: FloorTarget,
    private readonly domain: string,
  ) {}

  static async start(
    client: KubeClient,
    obs: Observer,
    target: FloorTarget,
    stateDir: string,
    detachDelayMs: number,
  ): Promise<Floor> {
    const driver = createSimulatedDriver({
      detachDelayMs,
      stateDir: join(stateDir, 'floor-hypervisor'),
    });
    const domain = `${target.ns}_${target.vmi}`;
    await driver.defineDomain(domain);
    return new Floor(client, obs, driver, target, domain);
  }

  private hotplugDir(): string {
    const t = this.target;
    return `${t.kubeletRoot}/pods/${t.launcherUid}/volumes/kubernetes.io~empty-dir/hotplug-disks`;
  }

  async plug(volume: string, podName: string): Promise<FloorOp & { podUid: string }> {
    const t = this.target;
    const marks: number[] = [performance.now()];
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
    return { ...summarize(marks, FLOOR_STAGES), podUid };
  }

  async unplug(volume: string, podName: string): Promise<FloorOp> {
    const t = this.target;
    const marks: number[] = [performance.now()];
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
    await this.driver.close();
  }
}

function summarize(marks: number[], names: readonly string[]): FloorOp {
  const stages: Record<string, number> = {};
  names.forEach((name, i) => {
    stages[name] = (marks[i + 1] as number) - (marks[i] as number);
  });
  return { latencyMs: (marks.at(-1) as number) - (marks[0] as number), stages };
}
