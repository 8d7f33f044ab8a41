/**
 * Work items nats-server 2.9 keeps after their consumer is done with them, under
 * deploy/nats/plugline.conf on a real nats-server. A by-sequence get or delete cannot be scoped
 * to a stage's subjects, so a service's user may not remove them: its reaper is refused once,
 * says so in one log line and stops asking. The cleanup identity `plugline-janitor` removes them, and may do nothing
 * else. And the `plugctl` user reads the event stream without reaching the projector's consumer.
 */
import { AckPolicy } from '@nats-io/jetstream';
import {
  durableName,
  ensureConsumer,
  ensureStreams,
  ReapRefusedError,
  SequenceGap,
  startWorkJanitor,
  StreamName,
  WorkLeftovers,
  type Bus,
} from '@plugline/bus';
import {
  eventFilter,
  EVENTS_PLACEHOLDER_SUBJECT,
  eventSubject,
  EventType,
  Stage,
  workSubject,
} from '@plugline/contracts';
import { serviceMain, ServiceName } from '@plugline/cli';
import { startKubeSim, type KubeSim } from '@plugline/kube-sim';
import {
  rollBackStreamAround,
  spawnService,
  startNats,
  tempDir,
  type NatsServer,
  type ServiceProcess,
  type TempDir,
} from '@plugline/testkit';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { connectAs, renderNatsConf, REPO_ROOT, TSX_LOADER, type NatsUser } from './nats-conf.js';
import { leaveSpecWatcherLeftover } from './work-leftover.js';

const SPEC_WATCHER = durableName(Stage.SpecWatcher);
const PROJECTOR = 'spec-watcher-projector';
const NOTHING_REAPED = { requeued: [], removed: 0 };

let dir: TempDir;
let nats: NatsServer;
let passwords: ReadonlyMap<NatsUser, string>;
let sim: KubeSim;
const buses: Bus[] = [];
const processes: ServiceProcess[] = [];

async function as(user: NatsUser): Promise<Bus> {
  const bus = await connectAs(nats.url, user, passwords.get(user)!);
  buses.push(bus);
  return bus;
}

/** The server's permission violations for `user`. */
function violations(user: NatsUser): string[] {
  return nats
    .output()
    .split('\n')
    .filter((l) => /violation/i.test(l) && l.includes(`"${user}"`));
}

/** Resolves once the server has refused `user` a publish to a subject containing `fragment`. */
async function refused(user: NatsUser, fragment: string): Promise<void> {
  await vi.waitFor(() => expect(violations(user).some((l) => l.includes(fragment))).toBe(true), {
    timeout: 5000,
    interval: 20,
  });
}

/** A spec-watcher process as its own user, with a 1 s ack wait (its reaper checks that often). */
async function startSpecWatcher(): Promise<ServiceProcess> {
  const proc = await spawnService(process.execPath, {
    args: ['--import', TSX_LOADER, serviceMain(ServiceName.SpecWatcher)],
    cwd: REPO_ROOT,
    env: {
      NATS_URL: nats.url,
      NATS_USER: 'spec-watcher',
      NATS_PASSWORD: passwords.get('spec-watcher')!,
      KUBECONFIG: sim.kubeconfigPath,
      LOG_LEVEL: 'info',
      HEALTH_PORT: '0',
      PLUGLINE_ACK_WAIT_MS: '1000',
    },
    stopSignal: 'SIGTERM',
    stopTimeout: 10_000,
  });
  processes.push(proc);
  return proc;
}

/** How many items the work stream holds on `subject`. */
async function held(bus: Bus, subject: string): Promise<number> {
  const info = await bus.jsm.streams.info(StreamName.Work, { subjects_filter: subject });
  return info.state.subjects?.[subject] ?? 0;
}

beforeAll(async () => {
  dir = await tempDir('plugline-nats-cleanup-');
  const conf = await renderNatsConf(dir.path);
  passwords = conf.passwords;
  nats = await startNats({ args: ['-c', conf.path] });
  sim = await startKubeSim({ nodes: ['node-1'] });
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(processes.map((p) => p.stop()));
  await Promise.allSettled(buses.map((b) => b.close()));
  await sim?.stop();
  await nats?.stop();
  await dir?.remove();
});

describe('finished work items the server kept (deploy/nats/plugline.conf)', () => {
  let subject: string;

  it("a service's reaper is refused once, then stops asking", async () => {
    subject = await leaveSpecWatcherLeftover(nats, passwords.get('spec-watcher')!);
    const specWatcher = await as('spec-watcher');
    const reaper = new WorkLeftovers(specWatcher);

    // The first check only notes the leftover (a second one must confirm it).
    await expect(reaper.reap(SPEC_WATCHER)).resolves.toEqual(NOTHING_REAPED);
    await expect(reaper.reap(SPEC_WATCHER)).rejects.toBeInstanceOf(ReapRefusedError);
    await refused('spec-watcher', `STREAM.MSG.GET.${StreamName.Work}`);
    expect(reaper.refused).toBe(true);

    // From now on it sends nothing: no refusal per check.
    const sent = specWatcher.nc.stats().outMsgs;
    await expect(reaper.reap(SPEC_WATCHER)).resolves.toEqual(NOTHING_REAPED);
    await expect(reaper.reap(SPEC_WATCHER)).resolves.toEqual(NOTHING_REAPED);
    expect(specWatcher.nc.stats().outMsgs).toBe(sent);
    expect(violations('spec-watcher')).toHaveLength(1);
    expect(await held(specWatcher, subject)).toBe(1);
  }, 30_000);

  it('a service process says so in one log line and carries on; the cleanup identity removes the item', async () => {
    const before = violations('spec-watcher').length;
    const specWatcher = await startSpecWatcher();
    await specWatcher.waitForOutput(/"msg":"ready"/, 90_000);
    // Its reaper checks at start and every ack wait (1 s here): the second check is refused.
    await specWatcher.waitForOutput(/not allowed to repair work items/, 30_000);

    const janitorBus = await as('plugline-janitor');
    const janitor = startWorkJanitor(janitorBus, { intervalMs: 1000 });
    try {
      await vi.waitFor(async () => expect(await held(janitorBus, subject)).toBe(0), {
        timeout: 20_000,
        interval: 50,
      });
    } finally {
      await janitor.stop();
    }
    // Two janitor checks later (more than one ack wait), still the one refusal and one line.
    expect(violations('plugline-janitor')).toEqual([]);
    expect(violations('spec-watcher')).toHaveLength(before + 1);
    expect(specWatcher.output().match(/not allowed to repair work items/g)).toHaveLength(1);
    expect(specWatcher.output()).not.toMatch(/"level":(50|60)/); // no error, no fatal
    const { code } = await specWatcher.stop().then(() => specWatcher.exited);
    expect(code).toBe(0);
  }, 150_000);

  it('the cleanup identity requeues an item a consumer holds and the server does not deliver, with no violation', async () => {
    // The orchestrator's consumer with a long ack wait holds an item, unacknowledged, while a
    // pull of it waits: from outside, what the server's failure after a crash looks like.
    const orchestrator = await as('attachment-orchestrator');
    await ensureStreams(orchestrator);
    const consumerName = await ensureConsumer(orchestrator, {
      stage: Stage.AttachmentOrchestrator,
      ackWaitMs: 600_000,
    });
    const subject = workSubject({
      stage: Stage.AttachmentOrchestrator,
      namespace: 'cleanup',
      vmi: 'vm',
      volume: 'held',
    });
    const specWatcher = await as('spec-watcher');
    await specWatcher.js.publish(subject, '{"held":true}');
    const consumer = await orchestrator.js.consumers.get(StreamName.Work, consumerName);
    const original = await consumer.next({ expires: 5000 });
    expect(original?.subject).toBe(subject);
    const next = consumer.next({ expires: 15_000 });

    const janitorBus = await as('plugline-janitor');
    const janitor = startWorkJanitor(janitorBus, { intervalMs: 200, stuckAfterMs: 0 });
    try {
      const copy = await next;
      expect(copy?.subject).toBe(subject);
      expect(copy?.seq).toBeGreaterThan(original!.seq);
      expect(copy?.json()).toEqual({ held: true });
      await copy!.ackAck();
    } finally {
      await janitor.stop();
    }
    expect(await held(janitorBus, subject)).toBe(0);
    expect(violations('plugline-janitor')).toEqual([]);
  }, 30_000);

  it("a crash left the event stream behind the projector's consumer: a service is refused before it stores a placeholder; the cleanup identity moves the stream past it", async () => {
    const specWatcher = await as('spec-watcher');
    await specWatcher.jsm.consumers.add(StreamName.Events, {
      durable_name: PROJECTOR,
      ack_policy: AckPolicy.Explicit,
    });
    const fact = (volume: string): string =>
      eventSubject({ namespace: 'gap', vmi: 'vm', volume }, EventType.Requested);
    await specWatcher.js.publish(fact('kept'), '{}');
    await rollBackStreamAround(nats, StreamName.Events, async () => {
      const reader = await connectAs(nats.url, 'spec-watcher', passwords.get('spec-watcher')!);
      try {
        await reader.js.publish(fact('lost-a'), '{}');
        await reader.js.publish(fact('lost-b'), '{}');
        const projector = await reader.js.consumers.get(StreamName.Events, PROJECTOR);
        for (let m = await projector.next({ expires: 1000 }); m !== null;) {
          await m.ackAck();
          m = await projector.next({ expires: 1000 });
        }
      } finally {
        await reader.close();
      }
    });
    const janitorBus = await as('plugline-janitor');
    const stream = async (): Promise<{ last: number; placeholders: number }> => {
      const { state } = await janitorBus.jsm.streams.info(StreamName.Events, {
        subjects_filter: EVENTS_PLACEHOLDER_SUBJECT,
      });
      return {
        last: state.last_seq,
        placeholders: state.subjects?.[EVENTS_PLACEHOLDER_SUBJECT] ?? 0,
      };
    };
    const { delivered } = await (
      await as('spec-watcher')
    ).jsm.consumers.info(StreamName.Events, PROJECTOR);
    const before = await stream();
    expect(before.last).toBeLessThan(delivered.stream_seq);

    // spec-watcher's own check (the projector's) may publish events, but not read by sequence.
    const refusedGap = new SequenceGap(await as('spec-watcher'), StreamName.Events);
    await expect(refusedGap.close(PROJECTOR)).rejects.toBeInstanceOf(ReapRefusedError);
    expect(await stream()).toEqual(before);

    const janitor = startWorkJanitor(janitorBus, { intervalMs: 200 });
    try {
      await vi.waitFor(
        async () => expect((await stream()).last).toBeGreaterThanOrEqual(delivered.stream_seq),
        { timeout: 10_000, interval: 50 },
      );
    } finally {
      await janitor.stop();
    }
    expect((await stream()).placeholders).toBe(0);
    expect(violations('plugline-janitor')).toEqual([]);
  }, 60_000);

  it('the cleanup identity may do nothing else: no facts, no pulls, no acks, no deleting', async () => {
    const janitorBus = await as('plugline-janitor');
    const attempts = [
      eventSubject({ namespace: 'cleanup', vmi: 'vm', volume: 'intruder' }, EventType.Ready),
      `$JS.API.CONSUMER.MSG.NEXT.${StreamName.Work}.${SPEC_WATCHER}`,
      `$JS.ACK.${StreamName.Work}.${SPEC_WATCHER}.1.1.1.1.0`,
      `$JS.API.CONSUMER.DELETE.${StreamName.Work}.${SPEC_WATCHER}`,
      `$JS.API.STREAM.PURGE.${StreamName.Work}`,
      `$JS.API.STREAM.DELETE.${StreamName.Work}`,
      `$JS.API.STREAM.PURGE.${StreamName.Events}`,
      `$KV.plugline-${Stage.SpecWatcher}.probe`,
    ];
    for (const attempt of attempts) {
      janitorBus.nc.publish(attempt, '{}');
      await refused('plugline-janitor', attempt);
    }
    expect(violations('plugline-janitor')).toHaveLength(attempts.length);
  }, 30_000);
});

describe('the plugctl user (deploy/nats/plugline.conf)', () => {
  it("reads the event stream, and cannot reach the status projector's consumer", async () => {
    const specWatcher = await as('spec-watcher');
    const fact = 'plugline.v1.events.cleanup.vm.data.requested';
    await specWatcher.js.publish(fact, '{}');
    await specWatcher.jsm.consumers.add(StreamName.Events, {
      durable_name: PROJECTOR,
      ack_policy: AckPolicy.Explicit,
    });

    const plugctl = await as('plugctl');
    const consumer = await plugctl.js.consumers.get(StreamName.Events, {
      filter_subjects: eventFilter({ namespace: 'cleanup' }),
    });
    const msg = await consumer.next({ expires: 5000 });
    expect(msg?.subject).toBe(fact);

    for (const attempt of [
      `$JS.API.CONSUMER.MSG.NEXT.${StreamName.Events}.${PROJECTOR}`,
      `$JS.API.CONSUMER.DELETE.${StreamName.Events}.${PROJECTOR}`,
      `$JS.API.CONSUMER.CREATE.${StreamName.Events}.${PROJECTOR}`,
      `$JS.API.CONSUMER.MSG.NEXT.${StreamName.Work}.${SPEC_WATCHER}`,
      `$JS.API.STREAM.MSG.GET.${StreamName.Events}`,
      'plugline.v1.events.cleanup.vm.data.ready',
    ]) {
      plugctl.nc.publish(attempt, '{}');
      await refused('plugctl', attempt);
    }
  }, 30_000);
});
