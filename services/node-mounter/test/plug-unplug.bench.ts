/**
 * What one plug and its unplug cost node-mounter on its own, with no bus and no cluster: real bind
 * mounts, device nodes and a devices cgroup on a kubelet layout in a temp folder, inside a private
 * mount namespace. Prints wall time per call and the process's CPU per plug + unplug, per round.
 *
 *   pnpm --filter @plugline/node-mounter bench [-- --cycles 300 --rounds 4]   (as root)
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { NodeMounter, VolumeMode } from '../src/index.js';
import type { PlugRequest } from '../src/index.js';
import { assertPrivateMountNamespace, HostFixture, mountsUnder } from './host.js';

const { values } = parseArgs({
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: {
    cycles: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '4' },
  },
});
const cycles = Number(values.cycles);
const rounds = Number(values.rounds);

interface Round {
  plugMs: number;
  unplugMs: number;
  cpuMs: number;
}

async function measure(mounter: NodeMounter, request: PlugRequest): Promise<Round> {
  let plugMs = 0;
  let unplugMs = 0;
  const cpu = process.cpuUsage();
  for (let i = 0; i < cycles; i++) {
    const plugged = performance.now();
    await mounter.plug(request);
    const unplugged = performance.now();
    await mounter.unplug({ vmiUID: request.vmiUID, volume: request.volume });
    plugMs += unplugged - plugged;
    unplugMs += performance.now() - unplugged;
  }
  const used = process.cpuUsage(cpu);
  return {
    plugMs: plugMs / cycles,
    unplugMs: unplugMs / cycles,
    cpuMs: (used.user + used.system) / 1000 / cycles,
  };
}

const fixed = (n: number): string => n.toFixed(3);

async function main(): Promise<void> {
  await assertPrivateMountNamespace();
  const fx = await HostFixture.create();
  try {
    const launcherUID = randomUUID();
    const attachPodUID = randomUUID();
    await fx.launcherPod(launcherUID);
    const cgroup = await fx.devicesCgroup();
    await fx.filesystemPvc(attachPodUID, 'pv-fs-1');
    await fx.blockPvc(attachPodUID, 'pv-blk-1');
    const mounter = new NodeMounter({
      kubeletRoot: fx.root,
      stateDir: fx.stateDir,
      cgroupDirFor: () => cgroup,
    });
    const base = { vmiUID: randomUUID(), launcherUID, attachPodUID };
    const requests: PlugRequest[] = [
      { ...base, volume: 'data-fs', pvName: 'pv-fs-1', mode: VolumeMode.Filesystem },
      { ...base, volume: 'data-blk', pvName: 'pv-blk-1', mode: VolumeMode.Block },
    ];
    for (const request of requests) {
      for (let round = 1; round <= rounds; round++) {
        const r = await measure(mounter, request);
        console.log(
          `${request.mode} round ${round}/${rounds}: plug ${fixed(r.plugMs)} ms, unplug ` +
            `${fixed(r.unplugMs)} ms, CPU ${fixed(r.cpuMs)} ms per plug + unplug (${cycles} cycles)`,
        );
      }
    }
    const left = await mountsUnder(fx.base);
    if (left.length > 0) throw new Error(`mounts left after the unplugs: ${left.join(', ')}`);
  } finally {
    const attached = await fx.dispose();
    if (attached.length > 0) console.error(`loop devices still attached: ${attached.join(', ')}`);
  }
}

await main();
