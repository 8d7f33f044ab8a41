/** The Markdown summary of a results document, with the targets of issue 10 beside the figures. */
import type { SpeedProbe } from './speed.js';
import type { BurstFigures, Results } from './report-types.js';
import type { Percentiles, Repeated } from './stats.js';
import { cliLines, hopsLines, guestLines, memoryLines } from './markdown-sections.js';

const rep = (r: Repeated): string => `${r.median} (${r.min}–${r.max})`;
const pct = (p: Percentiles): string => `${p.p50} / ${p.p90} / ${p.p99} (max ${p.max}, n=${p.n})`;
const ok = (cond: boolean): string => (cond ? 'met' : '**not met**');

function stageTable(stages: Record<string, Percentiles>): string[] {
  return [
    '| stage | p50 | p90 | p99 | max |',
    '|---|---:|---:|---:|---:|',
    ...Object.entries(stages).map(
      ([s, p]) => `| ${s} | ${p.p50} | ${p.p90} | ${p.p99} | ${p.max} |`,
    ),
  ];
}

function mapTable(title: string, rows: Record<string, Record<string, number> | number>): string[] {
  const first = Object.values(rows)[0];
  if (typeof first === 'object') {
    const cols = Object.keys(first);
    return [
      `| ${title} | ${cols.join(' | ')} |`,
      `|---|${cols.map(() => '---:').join('|')}|`,
      ...Object.entries(rows).map(
        ([k, v]) => `| ${k} | ${cols.map((c) => (v as Record<string, number>)[c]).join(' | ')} |`,
      ),
    ];
  }
  return [
    `| ${title} | value |`,
    '|---|---:|',
    ...Object.entries(rows).map(
      ([k, v]) => `| ${k} | ${typeof v === 'number' ? v : JSON.stringify(v)} |`,
    ),
  ];
}

/** When each attachment pod of a burst appeared and ran (ms after the first request). */
function podTimes(f: BurstFigures): string {
  const pods = [...(f.attachmentPods ?? [])].sort((a, b) => (a.seenMs ?? 0) - (b.seenMs ?? 0));
  if (pods.length === 0) return '';
  return `, seen / Running at ${pods.map((p) => `${p.seenMs ?? '?'} / ${p.runningMs ?? '?'}`).join(', ')} ms`;
}

/** How often each service handled a work item of the burst, per volume. */
function burstHandlingsTable(f: BurstFigures, i: number): string[] {
  if (f.handlingsPerVolume === undefined) return [];
  return [
    `Work items per volume, burst ${i + 1} (${f.issue ?? 'burst'}):`,
    '',
    ...mapTable('service', f.handlingsPerVolume),
    '',
  ];
}

/** Each way of issuing the burst: its Kubernetes API traffic until all Ready / all removed. */
function burstApiTable(bursts: readonly BurstFigures[]): string[] {
  const withApi = bursts.filter((f) => f.api !== undefined);
  if (withApi.length === 0) return [];
  const keys = [...new Set(withApi.flatMap((f) => Object.keys(f.api!)))].sort();
  const rows = Object.fromEntries(
    keys.map((k) => [
      k,
      Object.fromEntries(
        withApi.flatMap((f, i) => [
          [`plug ${i + 1}`, f.api![k]?.plug ?? 0],
          [`unplug ${i + 1}`, f.api![k]?.unplug ?? 0],
        ]),
      ),
    ]),
  );
  return [
    `Kubernetes API traffic of each burst (${withApi.map((f, i) => `${i + 1}: ${f.issue ?? 'burst'}`).join('; ')}), plug until all Ready, unplug until all removed:`,
    '',
    ...mapTable('requests / watch events', rows),
    '',
  ];
}

function runtimeWords(runtime: string | undefined): string {
  if (runtime === 'bundled') return 'bundled, as `plugctl up` runs them';
  if (runtime === 'source') return 'from source through tsx';
  return 'runtime not recorded';
}

/**
 * The machine's speed at the start and end of the run (test/bench/speed.ts): runs whose probes
 * differ ran on a faster or slower machine, whatever the code.
 */
function speedProbeLine(probe: Results['machine']['speedProbe']): string[] {
  if (probe === undefined) return [];
  const words = (p: SpeedProbe): string =>
    `${p.computeMs} ms compute at ${p.cpuShare} of a core, ${p.pipeRoundTripUs} µs pipe round trip`;
  return [
    `Speed probe (test/bench/speed.ts: a fixed JSON and hashing workload in the bench's process, the share of a core it got, and a one-byte round trip to a child process; medians): **${words(probe.start)}** at the start, **${words(probe.end)}** at the end. Lower times and a share nearer 1 are a faster machine. The cores are shared with jobs no counter here shows: a probe that differs explains a difference between runs, one that reads the same does not prove the machine was as fast (see speed.ts).`,
  ];
}

type StepsAlone = NonNullable<Results['floor']>['stepsAlone'];

/** The floor's steps alone, in the one-volume table (results from before 2026-12-06 have none). */
function stepsAloneRows(steps: StepsAlone): string[] {
  if (steps === undefined) return [];
  const a = steps.acrossRounds;
  return [
    `| floor plug, its steps alone | ${rep(a.plug.p50)} | ${rep(a.plug.p90)} | ${rep(a.plug.p99)} | |`,
    `| floor unplug, its steps alone | ${rep(a.unplug.p50)} | ${rep(a.unplug.p90)} | ${rep(a.unplug.p99)} | |`,
  ];
}

function stepsAloneRatio(steps: StepsAlone): string[] {
  if (steps === undefined) return [];
  return [
    '',
    "The floor is timed between the chain's end points: from its request (one VMI patch, seen through the floor script's own watch, as the spec-watcher sees the spec patch) to the status entry as the bench's watch sees it. " +
      `Against the floor's steps alone (pod, mount, attach, status patch: the floor of results before 2026-12-06), the ratio is ${rep(steps.overheadRatio)} for plug and ${rep(steps.unplugOverheadRatio)} for unplug.`,
  ];
}

export function renderMarkdown(r: Results, chartFile: string): string {
  const lines: string[] = [
    `# Plugline benchmark, ${r.date}`,
    '',
    `Machine: ${JSON.stringify(r.machine)}. Run took ${r.durationS} s.`,
    ...speedProbeLine(r.machine.speedProbe),
    `All services ran as separate processes (the embedded stack, ${runtimeWords(r.config?.runtime)}), NATS and kube-sim on loopback.`,
    'Latencies in ms, from the spec patch to the status entry (`Ready`, or removed) as a watch sees it.',
    'Figures "x (a–b)" are the median over rounds, with min–max.',
    '',
    `![latency per stage](${chartFile})`,
    '',
  ];
  const one = r.oneVolume;
  const floor = r.floor;
  if (one !== undefined && floor !== undefined) {
    const a = one.acrossRounds;
    lines.push(
      `## 1–2. One volume (${one.rounds} rounds × ${one.opsPerRound} sequential plug + unplug, pod start 0 ms)`,
      '',
      '| | p50 | p90 | p99 | target |',
      '|---|---:|---:|---:|---|',
      `| chain plug | ${rep(a.plug.p50)} | ${rep(a.plug.p90)} | ${rep(a.plug.p99)} | p50 ≤ 50, p99 ≤ 150: ${ok(a.plug.p50.median <= 50 && a.plug.p99.median <= 150)} |`,
      `| chain unplug | ${rep(a.unplug.p50)} | ${rep(a.unplug.p90)} | ${rep(a.unplug.p99)} | |`,
      `| floor plug | ${rep(floor.acrossRounds.plug.p50)} | ${rep(floor.acrossRounds.plug.p90)} | ${rep(floor.acrossRounds.plug.p99)} | |`,
      `| floor unplug | ${rep(floor.acrossRounds.unplug.p50)} | ${rep(floor.acrossRounds.unplug.p90)} | ${rep(floor.acrossRounds.unplug.p99)} | |`,
      ...stepsAloneRows(floor.stepsAlone),
      '',
      `Overhead ratio (chain p50 / floor p50), plug: **${rep(floor.overheadRatio)}** (target ≤ 1.5: ${ok(floor.overheadRatio.median <= 1.5)}); unplug: ${rep(floor.unplugOverheadRatio)}.`,
      ...stepsAloneRatio(floor.stepsAlone),
      '',
      '### Chain plug, per stage (each from the previous fact)',
      '',
      ...stageTable(one.plugStages),
      '',
      '### Chain unplug, per stage',
      '',
      ...stageTable(one.unplugStages),
      '',
      ...(one.stepsPerOperation === undefined
        ? []
        : [
            '### Where the stage runtimes spent each plug + unplug (ms, summed over work items)',
            '',
            "queued: waiting for a slot or behind the unit's running item; lease: with the snapshot and truth read beside it; read: what is left of those reads once the lease is held (all of them after a contested lease); run: the machine and its effects; persist: snapshot write and outbox publish; release: the lease, after the ack.",
            '',
            ...mapTable('service', one.stepsPerOperation),
            '',
          ]),
      ...(one.apiPerPair === undefined
        ? []
        : [...mapTable('Kubernetes API per plug + unplug', one.apiPerPair), '']),
      ...(one.cpuPerPair === undefined
        ? []
        : [
            '### CPU per plug + unplug, one at a time (ms, by process)',
            '',
            "Over the chain's pairs and over the floor's, each process's CPU (`/proc`) divided by the pairs; `bench` is this process, which runs the floor's script and the watches. Every process also wakes for the other side's changes (a watch sees the floor's pods), which counts where it happens.",
            '',
            ...mapTable('process', one.cpuPerPair),
            '',
          ]),
      '### Floor plug / unplug, per step',
      '',
      ...stageTable({ ...floor.plugStages, ...prefixed('unplug: ', floor.unplugStages) }),
      '',
    );
  }
  const tp = r.throughput;
  if (tp !== undefined) {
    lines.push(
      `## 3. Throughput (${tp.vmis} VMIs × ${tp.volumesPerVmi} volumes, concurrency ${tp.concurrency})`,
      '',
      `- plug: **${tp.plug.opsPerSecond} ops/s** over ${tp.plug.wallS} s, latency p50/p90/p99 ${pct(tp.plug.latency)} (target ≥ 100 ops/s with p99 ≤ 1000: ${ok(tp.plug.opsPerSecond >= 100 && tp.plug.latency.p99 <= 1000)})`,
      `- unplug: **${tp.unplug.opsPerSecond} ops/s** over ${tp.unplug.wallS} s, latency ${pct(tp.unplug.latency)}`,
      ...throughputRoundLines(tp),
      ...warmupLines(tp),
      `- correctness: ${JSON.stringify(tp.correctness)}`,
      ...sweepLines(tp),
      ...slowestLines('plug', tp.plug.slowest),
      ...slowestLines('unplug', tp.unplug.slowest),
      '',
      ...mapTable('CPU ms per operation', tp.cpuMsPerOperation),
      '',
      ...(tp.handlingsPerOperation === undefined
        ? []
        : [...mapTable('work items per operation', tp.handlingsPerOperation), '']),
      ...(tp.apiPerOperation === undefined
        ? []
        : [...mapTable('Kubernetes API per operation', tp.apiPerOperation), '']),
      ...(tp.natsPerOperation === undefined
        ? []
        : [...mapTable('NATS server per operation', tp.natsPerOperation), '']),
    );
  }
  const b = r.burst;
  if (b !== undefined) {
    const issued = (f: BurstFigures): string =>
      f.issue === undefined
        ? ''
        : `; issued as ${f.issue}${f.issuedMs === undefined ? '' : ` (all sent in ${f.issuedMs} ms)`}`;
    lines.push(
      `## 4. ${b.volumes} volumes at once on one VMI (pod start ${b.podStartLatencyMs} ms)`,
      '',
      `- all Ready after **${b.allReadyMs} ms** from the first request (target ≤ 3000: ${ok(b.allReadyMs <= 3000)}); per volume, request → Ready: ${pct(b.perVolume)}${issued(b)}`,
      `- attachment pods: ${b.attachmentPodsCreated} created (${b.attachmentPodsInEvents} named in attached-to-node facts)${podTimes(b)}; ${b.patchConflicts} conflicting client patches retried`,
      `- all removed again after ${b.allRemovedMs} ms; failed events: ${b.failedEvents}`,
      ...burstRoundLines(b),
      ...burstStepLines(b),
      ...(b.others ?? []).flatMap((o) => [
        `- the same burst${issued(o)}: all Ready after **${o.allReadyMs} ms**, per volume ${pct(o.perVolume)}, ${o.attachmentPodsCreated} attachment pods${podTimes(o)}, ${o.patchConflicts} conflicts, all removed after ${o.allRemovedMs} ms, failed events ${o.failedEvents}`,
        ...burstRoundLines(o),
      ]),
      ...(b.others ?? []).flatMap(burstStepLines),
      '',
      ...burstApiTable([b, ...(b.others ?? [])]),
      ...[b, ...(b.others ?? [])].flatMap(burstHandlingsTable),
    );
  }
  const s = r.scaleOut;
  if (s !== undefined) {
    lines.push(
      `## 5. Scale-out (${s.replicas} replicas of spec-watcher and attachment-orchestrator)`,
      '',
      `- plug ${s.throughput.plug.opsPerSecond} ops/s (p99 ${s.throughput.plug.latency.p99} ms), unplug ${s.throughput.unplug.opsPerSecond} ops/s (p99 ${s.throughput.unplug.latency.p99} ms)`,
      ...throughputRoundLines(s.throughput),
      `- throughput ratio (2 replicas / 1): **${s.throughputRatio}**`,
      `- correctness: ${JSON.stringify(s.throughput.correctness)}`,
      '',
    );
  }
  lines.push('## 6. Memory (RSS, MiB)', '');
  if (Object.keys(r.rssIdleMiB).length > 0) lines.push(...mapTable('idle', r.rssIdleMiB), '');
  else lines.push('Not measured (sections 1–3 and 6 not selected).', '');
  if (tp !== undefined) {
    lines.push(...mapTable('while tracking', tp.rssWhileTrackingMiB), '');
  }
  if (r.memory !== undefined) lines.push(...memoryLines(r.memory));
  lines.push('Targets: ≤ 100 MiB per service idle, ≤ 300 MiB with 10,000 volumes.', '');
  if (r.profile !== undefined) {
    lines.push(
      `## CPU profile of ${r.profile.service} (--cpu-prof, ${r.profile.wallS} s of its life, ${r.profile.busyMs} ms busy, ${r.profile.idleMs} ms idle; percentages of busy time)`,
      '',
      ...mapTable(
        'area (self time)',
        Object.fromEntries(
          r.profile.topAreas.map((a) => [a.name, { ms: a.selfMs, percent: a.percent }]),
        ),
      ),
      '',
      ...mapTable(
        'function (self time)',
        Object.fromEntries(
          r.profile.topFunctions.map((a) => [
            `\`${a.name}\``,
            { ms: a.selfMs, percent: a.percent },
          ]),
        ),
      ),
      '',
      ...mapTable(
        'own function (total time, with what it calls)',
        Object.fromEntries(
          (r.profile.topOwnTotals ?? []).map((a) => [
            `\`${a.name}\``,
            { ms: a.selfMs, percent: a.percent },
          ]),
        ),
      ),
      '',
    );
  }
  lines.push('## 7. Real guest', '', ...guestLines(r.guest));
  if (r.cli !== undefined) lines.push('## 8. plugctl as a process', '', ...cliLines(r.cli));
  if (r.hops !== undefined)
    lines.push(
      ...hopsLines(r.hops, {
        chainPlugP50: r.oneVolume?.acrossRounds.plug.p50.median,
        floorPlugP50: r.floor?.acrossRounds.plug.p50.median,
      }),
    );
  return `${lines.join('\n')}\n`;
}

/** Each round's headline figures, when the throughput run had more than one. */
function throughputRoundLines(tp: NonNullable<Results['throughput']>): string[] {
  const r = tp.rounds;
  if (r === undefined || r.count < 2) return [];
  return [
    `- over ${r.count} rounds, ${r.perVmiSet === undefined ? 'on the same VMIs' : `each set of VMIs serving ${r.perVmiSet}`}, median (min–max): plug ${rep(r.plugOpsPerSecond)} ops/s, p99 ${rep(r.plugP99Ms)} ms; unplug ${rep(r.unplugOpsPerSecond)} ops/s, p99 ${rep(r.unplugP99Ms)} ms; CPU per plug over the stack's processes ${rep(r.stackCpuMsPerPlug)} ms. The figures and tables here are round ${r.medianRound}'s, the median by plug ops/s; each round: ${r.plugOpsPerSecond.runs.join(', ')} plug ops/s`,
    ...(r.eventWritesPerPlug === undefined
      ? []
      : [
          `  - Event writes per plug, each round: ${r.eventWritesPerPlug.runs.join(', ')}. The spec-watcher's recorder gives each VMI a burst of 25 Events, then one per 5 minutes, as client-go's does for KubeVirt's components; rounds on the same VMIs spend it, and a round that writes fewer Events costs less CPU per plug`,
        ]),
  ];
}

/** The warm-up round, left out of the figures (absent in older results). */
function warmupLines(tp: NonNullable<Results['throughput']>): string[] {
  const w = tp.warmup;
  if (w === undefined) return [];
  return [
    `- warm-up round first, on VMIs of its own and left out of the figures (a fresh stack's code runs cold): plug ${w.plugOpsPerSecond} ops/s at concurrency ${w.concurrency}, p99 ${w.plugP99Ms} ms, CPU per plug over the stack's processes ${w.stackCpuMsPerPlug} ms${w.correct ? '' : ', **not correct**'}`,
  ];
}

const roundsEach = (n: number): string => `${n} round${n === 1 ? '' : 's'} each`;

/** Throughput against client concurrency, and the most within the p99 bound. */
function sweepLines(tp: NonNullable<Results['throughput']>): string[] {
  const sw = tp.sweep;
  if (sw === undefined || sw.points.length < 2) return [];
  const best = sw.points.find((p) => p.concurrency === sw.bestWithinBound);
  const headline =
    best === undefined
      ? `no concurrency kept plug p99 within ${sw.p99BoundMs} ms (target ≥ 100 ops/s with p99 ≤ ${sw.p99BoundMs}: **not met**)`
      : `**${best.plugOpsPerSecond.median} plug ops/s** at concurrency ${best.concurrency}, p99 ${best.plugP99Ms.median} ms (target ≥ 100 ops/s with p99 ≤ ${sw.p99BoundMs}: ${ok(best.plugOpsPerSecond.median >= 100)})`;
  return [
    `- throughput against the client's concurrency (${roundsEach(tp.rounds?.count ?? 1)}, medians with min–max); the most within p99 ≤ ${sw.p99BoundMs} ms: ${headline}`,
    '',
    '| concurrency | plug ops/s | plug p99 ms | unplug ops/s | unplug p99 ms | CPU ms per plug | Event writes per plug | correct |',
    '|---:|---:|---:|---:|---:|---:|---:|---|',
    ...sw.points.map(
      (p) =>
        `| ${p.concurrency} | ${rep(p.plugOpsPerSecond)} | ${rep(p.plugP99Ms)} | ${rep(p.unplugOpsPerSecond)} | ${rep(p.unplugP99Ms)} | ${rep(p.stackCpuMsPerPlug)} | ${p.eventWritesPerPlug === undefined ? '—' : rep(p.eventWritesPerPlug)} | ${p.correct ? 'yes' : '**no**'} |`,
    ),
    '',
  ];
}

/** A burst's rounds, when it had more than one. */
function burstRoundLines(b: BurstFigures): string[] {
  const r = b.rounds;
  if (r === undefined) return [];
  return [
    `  - over ${r.count} rounds, each on a fresh VMI, median (min–max): all Ready ${rep(r.allReadyMs)} ms (each: ${r.allReadyMs.runs.join(', ')}), attachment pods ${rep(r.attachmentPodsCreated)}, all removed ${rep(r.allRemovedMs)} ms, failed events ${r.failedEvents}; the figures above are round ${r.medianRound}'s, the median`,
  ];
}

function slowestLines(
  direction: string,
  ops: { key: string; latencyMs: number; stages: Record<string, number> }[] | undefined,
): string[] {
  if (ops === undefined || ops.length === 0) return [];
  return [
    `- slowest ${direction}s (ms, and each stage's share):`,
    ...ops.map(
      (o) =>
        `  - ${o.key}: ${o.latencyMs} — ${Object.entries(o.stages)
          .map(([stage, ms]) => `${stage} ${ms}`)
          .join(', ')}`,
    ),
  ];
}

function prefixed<T>(prefix: string, rec: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(rec).map(([k, v]) => [`${prefix}${k}`, v]));
}

/** When the burst's volumes reached each step: first / median / last volume, ms from the first request. */
function burstStepLines(b: BurstFigures): string[] {
  const steps = Object.entries(b.steps ?? {});
  if (steps.length === 0) return [];
  const parts = steps.map(([step, t]) => `${step} ${t.first} / ${t.p50} / ${t.last}`);
  const cpu = Object.entries(b.cpuMs ?? {}).map(([id, ms]) => `${id} ${ms}`);
  return [
    `  - steps (first / median / last volume, ms): ${parts.join('; ')}`,
    ...(cpu.length === 0 ? [] : [`  - CPU ms until all Ready: ${cpu.join(', ')}`]),
  ];
}
