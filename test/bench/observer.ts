/**
 * What the benchmark sees of the chain, timestamped on its own clock: every event published on
 * the event subjects (a core NATS subscription, so no consumer sits in between) and every change
 * of the VMIs' `status.volumeStatus` and of pods (Kubernetes watches).
 */
import { performance } from 'node:perf_hooks';
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  decodeEvent,
  type VirtualMachineInstance,
  type VolumeEvent,
  type VolumeStatus,
} from '@plugline/contracts';

export interface EventMark {
  /** `requested`, `ready`, ... */
  type: string;
  t: number;
  event: VolumeEvent;
}

export interface VolumeView {
  present: boolean;
  phase: string | undefined;
  /** When this view was observed. */
  t: number;
}

export interface PodView {
  phase: string | undefined;
  present: boolean;
  t: number;
}

interface Waiter<V> {
  key: string;
  test: (view: V | undefined) => boolean;
  resolve: (t: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const EVENT_PREFIX = 'io.plugline.volume.';

/** Waiters on keyed views, each resolved with the time its view first satisfies its test. */
export class WaitSet<V> {
  private readonly waiters = new Set<Waiter<V>>();
  constructor(private readonly current: (key: string) => V | undefined) {}

  until(key: string, test: (view: V | undefined) => boolean, timeoutMs: number): Promise<number> {
    const now = this.current(key);
    if (test(now)) return Promise.resolve(performance.now());
    return new Promise((resolve, reject) => {
      const waiter: Waiter<V> = {
        key,
        test,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(new Error(`timed out after ${timeoutMs} ms waiting on ${key}`));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  changed(key: string, view: V | undefined, t: number): void {
    for (const w of this.waiters) {
      if (w.key !== key || !w.test(view)) continue;
      clearTimeout(w.timer);
      this.waiters.delete(w);
      w.resolve(t);
    }
  }

  cancelAll(): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new Error('observer stopped'));
    }
    this.waiters.clear();
  }
}

/**
 * A Kubernetes watch started again 100 ms after the server ends it, as an informer's is, until
 * `stopped()`; `started` gets each connection's controller (to abort it on stop).
 */
export async function restartingWatch(
  kc: KubeConfig,
  path: string,
  onEvent: (type: string, obj: unknown) => void,
  control: { stopped: () => boolean; started: (ac: AbortController) => void },
): Promise<void> {
  const start = async (): Promise<void> => {
    if (control.stopped()) return;
    const ac = await new Watch(kc).watch(path, {}, onEvent, () => {
      if (!control.stopped()) setTimeout(() => void start().catch(() => undefined), 100);
    });
    control.started(ac);
  };
  await start();
}

export class Observer {
  /** `ns/vmi/volume` → events in arrival order. */
  readonly events = new Map<string, EventMark[]>();
  private readonly volumes = new Map<string, VolumeView>();
  private readonly volumeKeysOfVmi = new Map<string, Set<string>>();
  private readonly pods = new Map<string, PodView>();
  /** `ns/name` → when the pod was first seen, and first seen Running. */
  private readonly podTimes = new Map<string, { seen: number; running?: number }>();
  private readonly volumeWaits = new WaitSet<VolumeView>((k) => this.volumes.get(k));
  private readonly podWaits = new WaitSet<PodView>((k) => this.pods.get(k));
  private readonly aborts: AbortController[] = [];
  private stopped = false;
  private nc: NatsConnection | undefined;

  private constructor(
    private readonly kc: KubeConfig,
    private readonly namespaces: readonly string[],
  ) {}

  static async start(kc: KubeConfig, natsUrl: string, namespaces: readonly string[]) {
    const o = new Observer(kc, namespaces);
    o.nc = await connect({ servers: natsUrl, name: 'plugline-bench' });
    o.nc.subscribe('plugline.v1.events.>', {
      callback: (_err, msg) => {
        const t = performance.now();
        const decoded = decodeEvent(msg.data);
        if (!decoded.ok) return;
        const e = decoded.value;
        const list = o.events.get(e.subject) ?? [];
        list.push({ type: e.type.slice(EVENT_PREFIX.length), t, event: e });
        o.events.set(e.subject, list);
      },
    });
    await o.nc.flush();
    for (const ns of namespaces) {
      await o.watch(`/apis/kubevirt.io/v1/namespaces/${ns}/virtualmachineinstances`, (type, obj) =>
        o.onVmi(type, obj as VirtualMachineInstance),
      );
      await o.watch(`/api/v1/namespaces/${ns}/pods`, (type, obj) =>
        o.onPod(
          type,
          obj as { metadata?: { namespace?: string; name?: string }; status?: { phase?: string } },
        ),
      );
    }
    return o;
  }

  private async watch(path: string, onEvent: (type: string, obj: unknown) => void): Promise<void> {
    await restartingWatch(this.kc, path, onEvent, {
      stopped: () => this.stopped,
      started: (ac) => this.aborts.push(ac),
    });
  }

  private onVmi(type: string, vmi: VirtualMachineInstance): void {
    const t = performance.now();
    const prefix = `${vmi.metadata.namespace ?? ''}/${vmi.metadata.name ?? ''}`;
    const statuses: VolumeStatus[] = type === 'DELETED' ? [] : (vmi.status?.volumeStatus ?? []);
    const known = this.volumeKeysOfVmi.get(prefix) ?? new Set<string>();
    const seen = new Set<string>();
    for (const s of statuses) {
      const key = `${prefix}/${s.name}`;
      seen.add(key);
      known.add(key);
      const prev = this.volumes.get(key);
      if (prev?.present === true && prev.phase === s.phase) continue;
      const view = { present: true, phase: s.phase, t };
      this.volumes.set(key, view);
      this.volumeWaits.changed(key, view, t);
    }
    for (const key of known) {
      if (seen.has(key)) continue;
      const prev = this.volumes.get(key);
      if (prev?.present === false) continue;
      const view = { present: false, phase: undefined, t };
      this.volumes.set(key, view);
      this.volumeWaits.changed(key, view, t);
    }
    this.volumeKeysOfVmi.set(prefix, known);
  }

  private onPod(
    type: string,
    pod: { metadata?: { namespace?: string; name?: string }; status?: { phase?: string } },
  ): void {
    const t = performance.now();
    const key = `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
    const view: PodView = { present: type !== 'DELETED', phase: pod.status?.phase, t };
    this.pods.set(key, view);
    const times = this.podTimes.get(key) ?? { seen: t };
    if (view.phase === 'Running') times.running ??= t;
    this.podTimes.set(key, times);
    this.podWaits.changed(key, view, t);
  }

  /** Resolves with the observation time once the volume's status entry satisfies `test`. */
  untilVolume(key: string, test: (v: VolumeView | undefined) => boolean, timeoutMs: number) {
    return this.volumeWaits.until(key, test, timeoutMs);
  }

  /**
   * As {@link untilVolume}, but an entry that satisfies `test` already resolves with the time it
   * was observed, not now: for a caller that learns of the change another way first (the floor's
   * status patch, whose watch event can arrive before the response).
   */
  volumeObservedAt(key: string, test: (v: VolumeView | undefined) => boolean, timeoutMs: number) {
    const view = this.volumes.get(key);
    if (view !== undefined && test(view)) return Promise.resolve(view.t);
    return this.volumeWaits.until(key, test, timeoutMs);
  }

  untilPod(key: string, test: (v: PodView | undefined) => boolean, timeoutMs: number) {
    return this.podWaits.until(key, test, timeoutMs);
  }

  /** Pods ever seen in `namespace` whose name starts with `prefix`. */
  podNames(namespace: string, prefix: string): string[] {
    return [...this.pods.keys()]
      .filter((k) => k.startsWith(`${namespace}/${prefix}`))
      .map((k) => k.slice(namespace.length + 1));
  }

  /** When the pod `namespace/name` was first seen, and first seen Running. */
  podTimesOf(namespace: string, name: string): { seen: number; running?: number } | undefined {
    return this.podTimes.get(`${namespace}/${name}`);
  }

  /** The first event of each type for `key` at or after `since`. */
  firstEvents(key: string, since: number): Map<string, EventMark> {
    const out = new Map<string, EventMark>();
    for (const m of this.events.get(key) ?? []) {
      if (m.t >= since && !out.has(m.type)) out.set(m.type, m);
    }
    return out;
  }

  /** Every event (all keys) of one type after `since`. */
  eventsOfType(type: string, since = 0): EventMark[] {
    return [...this.events.values()].flat().filter((m) => m.type === type && m.t >= since);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const ac of this.aborts) ac.abort();
    this.volumeWaits.cancelAll();
    this.podWaits.cancelAll();
    await this.nc?.close();
  }
}
