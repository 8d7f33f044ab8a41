/**
 * The chain on two nodes: each node runs its own node-mounter and domain-updater, which watch
 * only their node's VMIs (by `kubevirt.io/nodeName`) and consume only their node's work items.
 */
import { join } from 'node:path';
import { createPvc, ensureNamespace } from '@plugline/cli';
import { readSimulatedDomains } from '@plugline/hypervisor';
import { describe, expect, it } from 'vitest';
import { hotplugDir, isRoot, mountsUnder, plugctlIn, useChain, volumeStatus } from './helpers.js';

const NODES = ['node-1', 'node-2'] as const;
const f = useChain({ nodes: NODES });

/** The domains, by name, that the simulated hypervisor of `node` holds, with their disks' sources. */
function domainsOn(node: string): Record<string, (string | undefined)[]> {
  const domains = readSimulatedDomains(join(f.stack.dir, 'state', `hypervisor-${node}`));
  return Object.fromEntries(
    [...domains].map(([name, d]) => [name, d.disks.map((disk) => disk.disk.sourcePath)]),
  );
}

async function plugctl(...args: string[]): Promise<void> {
  const r = await plugctlIn(f.stack, ...args, '--wait', '--timeout=90s');
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
}

describe.skipIf(!isRoot)('the chain on two nodes', () => {
  it("plugs a volume into a VMI on each node through that node's services, and unplugs both", async () => {
    const ns = 'chain-two-nodes';
    await ensureNamespace(f.stack.kc, ns);
    const vmis = await Promise.all(
      NODES.map(async (node) => {
        const name = `vm-on-${node}`;
        const volume = `data-${node}`;
        const { launcher } = await f.stack.createVmi({ namespace: ns, name, node });
        await createPvc(f.stack.kc, { namespace: ns, name: volume, mode: 'Filesystem' });
        const img = join(hotplugDir(f.stack, launcher.metadata!.uid!), `${volume}.img`);
        return { node, name, volume, img };
      }),
    );
    await Promise.all(
      vmis.map((v) => plugctl('addvolume', v.name, '-n', ns, `--volume-name=${v.volume}`)),
    );
    for (const v of vmis) {
      expect(await volumeStatus(f.client, ns, v.name, v.volume)).toMatchObject({
        phase: 'Ready',
        target: 'sda',
      });
      expect(mountsUnder(f.stack.dir)).toContain(v.img);
      // Each node's hypervisor holds its own VMI's disk and nothing of the other node's.
      expect(domainsOn(v.node)).toEqual({ [`${ns}_${v.name}`]: [v.img] });
    }

    await Promise.all(
      vmis.map((v) => plugctl('removevolume', v.name, '-n', ns, `--volume-name=${v.volume}`)),
    );
    for (const v of vmis) {
      expect(await volumeStatus(f.client, ns, v.name, v.volume)).toBeUndefined();
      expect(mountsUnder(f.stack.dir)).not.toContain(v.img);
      expect(domainsOn(v.node)).toEqual({ [`${ns}_${v.name}`]: [] });
    }
  }, 180_000);
});
