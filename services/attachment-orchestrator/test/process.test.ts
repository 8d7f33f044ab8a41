// The service as a process (main.ts): ready line, /readyz, SIGTERM; killed with SIGKILL mid-way
// and started again, it converges to the same end state.
import { join } from 'node:path';
import { EventType, eventTypeOf } from '@plugline/contracts';
import { spawnService, type ServiceProcess } from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  addVolume,
  attachmentPods,
  createdPodNames,
  createPvc,
  createRunningVmi,
  eventsOf,
  rand,
  removeVolume,
  reportUnmounted,
  requestPlug,
  startHarness,
  statusOf,
  type Harness,
} from './harness.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const WAIT = { timeout: 20_000, interval: 25 };
let h: Harness;
const running: ServiceProcess[] = [];

function start(): Promise<ServiceProcess> {
  return spawnService(join(ROOT, 'node_modules', '.bin', 'tsx'), {
    args: ['services/attachment-orchestrator/src/main.ts'],
    cwd: ROOT,
    env: {
      NATS_URL: h.nats.url,
      KUBECONFIG: h.sim.kubeconfigPath,
      PLUGLINE_ACK_WAIT_MS: '2000',
      PLUGLINE_LEASE_TTL_MS: '1000',
      LOG_LEVEL: 'info',
    },
    readyPattern: /"msg":"ready"/,
    readyTimeout: 20_000,
  }).then((p) => {
    running.push(p);
    return p;
  });
}

beforeAll(async () => {
  h = await startHarness();
}, 30_000);

afterAll(async () => {
  for (const p of running) await p.stop();
  await h?.stop();
}, 30_000);

describe('attachment-orchestrator process', () => {
  it('serves /readyz, survives SIGKILL mid-way (plug and unplug) and stops on SIGTERM', async () => {
    const first = await start();
    const healthUrl = /"healthUrl":"([^"]+)"/.exec(first.output())?.[1];
    expect(healthUrl).toBeDefined();
    await vi.waitFor(
      async () => expect((await fetch(`${healthUrl}/readyz`)).status).toBe(200),
      WAIT,
    );

    const ns = 'default';
    const name = rand('vm');
    const { vmi } = await createRunningVmi(h, ns, name);
    // alpha first: its pod exists before beta is added, so beta needs a pod for both, which
    // replaces alpha's (alpha's status must then name the new pod).
    for (const v of ['alpha', 'beta']) {
      createPvc(h, ns, `${name}-${v}`, 'Filesystem');
      addVolume(h, ns, name, v, { claim: `${name}-${v}` });
      await requestPlug(h, vmi, v, `op-${v}`);
      await vi.waitFor(() => expect(createdPodNames(h, name).length).toBeGreaterThan(0), WAIT);
    }
    // Kill it mid-way through the plug.
    first.kill('SIGKILL');
    await first.exited;

    const second = await start();
    await vi.waitFor(() => {
      expect(statusOf(h, ns, name, 'alpha')?.phase).toBe('Ready');
      expect(statusOf(h, ns, name, 'beta')?.phase).toBe('Ready');
      expect(attachmentPods(h, ns, name)).toHaveLength(1);
    }, WAIT);
    const [pod] = attachmentPods(h, ns, name);
    for (const v of ['alpha', 'beta']) {
      expect(statusOf(h, ns, name, v)?.hotplugVolume?.attachPodUID).toBe(pod!.metadata.uid);
      expect(h.nodeWork.some((w) => w.vmi === name && w.volume === v)).toBe(true);
    }

    // Unplug beta.
    const before = createdPodNames(h, name).length;
    removeVolume(h, ns, name, 'beta');
    await reportUnmounted(h, vmi, 'beta', 'op-unplug-beta');
    // Kill the service again once it acted on the unplug: a pod for alpha alone created, or (when
    // the pod that alpha alone had is still there) beta released already.
    await vi.waitFor(
      () =>
        expect(
          createdPodNames(h, name).length > before || statusOf(h, ns, name, 'beta') === undefined,
        ).toBe(true),
      WAIT,
    );
    second.kill('SIGKILL');
    await second.exited;

    const third = await start();
    await vi.waitFor(() => {
      expect(statusOf(h, ns, name, 'beta')).toBeUndefined();
      const pods = attachmentPods(h, ns, name);
      expect(pods).toHaveLength(1);
      expect(pods[0]!.spec?.volumes?.map((v) => v.name)).toEqual(['hotplug-disks', 'alpha']);
    }, WAIT);
    expect(statusOf(h, ns, name, 'alpha')?.phase).toBe('Ready');
    expect(eventsOf(h, ns, name, 'beta').some((e) => eventTypeOf(e) === EventType.Released)).toBe(
      true,
    );

    third.kill('SIGTERM');
    expect(await third.exited).toEqual({ code: 0, signal: null });
  }, 90_000);
});
