/**
 * The README's walk-through against the embedded default (demo namespace seeded): plugctl as a
 * real process — its output and exit codes — and kubectl showing the status as KubeVirt would.
 */
import { execFileSync } from 'node:child_process';
import { createPvc, DEMO } from '@plugline/cli';
import type { VirtualMachineInstance } from '@plugline/contracts';
import { describe, expect, it } from 'vitest';
import { isRoot, loopDevicesUnder, plugctlProcess, useChain } from './helpers.js';

const f = useChain({ demo: true });

function kubectlVmi(): VirtualMachineInstance {
  const text = execFileSync(
    'kubectl',
    ['--kubeconfig', f.stack.kubeconfigPath, 'get', 'vmi', DEMO.vmi, '-o', 'json'],
    {
      encoding: 'utf8',
    },
  );
  return JSON.parse(text) as VirtualMachineInstance;
}

describe.skipIf(!isRoot)('plugctl against the embedded default (a real process)', () => {
  it('addvolume --wait shows each phase with its time, ends Ready (exit 0), and kubectl shows the status', async () => {
    const r = await plugctlProcess(
      f.stack,
      'addvolume',
      DEMO.vmi,
      `--volume-name=${DEMO.filesystemPvc}`,
      '--wait',
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split('\n');
    expect(lines[0]).toBe(
      `Successfully submitted add volume request to VM ${DEMO.vmi} for volume ${DEMO.filesystemPvc}`,
    );
    const steps = lines
      .slice(1, -1)
      .map((l) => /^ {2}(\S+)\s+\+(\d+(?:\.\d+)?m?s)\s+\(/.exec(l)?.[1]);
    expect(steps).toEqual(['requested', 'bound', 'attached-to-node', 'mounted-to-pod', 'ready']);
    expect(lines.find((l) => l.includes('attached-to-node'))).toMatch(
      /pod hp-volume-\S+, on node-1/,
    );
    expect(lines.at(-1)).toMatch(
      new RegExp(`^Volume ${DEMO.filesystemPvc} is Ready as sda after \\d`),
    );

    const entry = kubectlVmi().status?.volumeStatus?.find((s) => s.name === DEMO.filesystemPvc);
    expect(entry).toMatchObject({
      phase: 'Ready',
      reason: 'VolumeReady',
      target: 'sda',
      message: `Successfully attach hotplugged volume ${DEMO.filesystemPvc} to VM`,
      persistentVolumeClaimInfo: { claimName: DEMO.filesystemPvc, volumeMode: 'Filesystem' },
    });
    expect(entry?.hotplugVolume?.attachPodName).toMatch(/^hp-volume-/);

    const status = await plugctlProcess(f.stack, 'status', DEMO.vmi);
    expect(status.code).toBe(0);
    expect(status.out).toMatch(
      new RegExp(
        `^${DEMO.filesystemPvc}\\s+Ready\\s+sda\\s+node-1\\s+hp-volume-\\S+\\s+\\d+[smh]$`,
        'm',
      ),
    );
    const yaml = await plugctlProcess(f.stack, 'status', DEMO.vmi, '-o', 'yaml');
    expect(yaml.out).toMatch(/phase: Ready/);

    const events = await plugctlProcess(f.stack, 'events', DEMO.vmi, '-o', 'json');
    expect(events.code).toBe(0);
    const types = events.out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { type: string }).type);
    expect(types).toEqual(
      expect.arrayContaining(['io.plugline.volume.requested', 'io.plugline.volume.ready']),
    );
  }, 120_000);

  it('removevolume --wait ends when the volume is gone (exit 0), and kubectl no longer lists it', async () => {
    const r = await plugctlProcess(
      f.stack,
      'removevolume',
      DEMO.vmi,
      `--volume-name=${DEMO.filesystemPvc}`,
      '--wait',
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ {2}unplug-requested /m);
    expect(r.out).toMatch(/^ {2}removed /m);
    expect(r.out.trimEnd().split('\n').at(-1)).toMatch(
      new RegExp(`^Volume ${DEMO.filesystemPvc} was removed after \\d`),
    );
    expect(kubectlVmi().status?.volumeStatus?.map((s) => s.name)).not.toContain(DEMO.filesystemPvc);
    expect(kubectlVmi().spec.volumes?.map((v) => v.name)).not.toContain(DEMO.filesystemPvc);
  }, 120_000);

  it('--timeout ends a wait that cannot finish with exit code 3 and the last stage reached', async () => {
    await createPvc(f.stack.kc, {
      namespace: DEMO.namespace,
      name: 'never-bound',
      mode: 'Filesystem',
      annotations: { 'sim.plugline.io/never-bind': 'true' },
    });
    const r = await plugctlProcess(
      f.stack,
      'addvolume',
      DEMO.vmi,
      '--volume-name=never-bound',
      '--wait',
      '--timeout=4s',
    );
    expect(r.code).toBe(3);
    expect(r.out).toMatch(/^ {2}requested /m);
    expect(r.err).toMatch(
      /^timed out after 4\.00s waiting for volume never-bound \(last: (requested|pending)\)\n$/,
    );
  }, 120_000);

  it('plugs the block PVC and the importing DataVolume, and leaves them plugged for the stop to clean up', async () => {
    const block = await plugctlProcess(
      f.stack,
      'addvolume',
      DEMO.vmi,
      `--volume-name=${DEMO.blockPvc}`,
      '--bus=virtio',
      '--wait',
    );
    expect(block.code).toBe(0);
    expect(block.out).toMatch(new RegExp(`^Volume ${DEMO.blockPvc} is Ready as vdb after`, 'm'));
    const dv = await plugctlProcess(
      f.stack,
      'addvolume',
      DEMO.vmi,
      `--volume-name=${DEMO.dataVolume}`,
      '--wait',
    );
    expect(dv.code).toBe(0);
    expect(dv.out).toMatch(new RegExp(`^Volume ${DEMO.dataVolume} is Ready as sd[a-z] after`, 'm'));
    // useChain's afterAll: stopping the stack with these plugged leaves no loop device behind
    expect(loopDevicesUnder(f.stack.dir).length).toBeGreaterThan(0);
  }, 120_000);

  it('a KubeVirt rejection exits 1 with its message', async () => {
    const r = await plugctlProcess(
      f.stack,
      'removevolume',
      DEMO.vmi,
      '--volume-name=rootdisk',
      '--wait',
    );
    expect(r).toEqual({
      code: 1,
      out: '',
      err: 'error removing volume, Unable to remove volume [rootdisk] because it is not hotpluggable\n',
    });
  }, 60_000);
});
