/**
 * The Markdown of sections 6 (memory while tracking many volumes), 7 (a real guest), 8 (plugctl
 * as a process) and 9 (four hops alone).
 */
import { CLI_COMMANDS, type CliFigures } from './cli.js';
import type { GuestFigures } from './guest.js';
import { HopVariant } from './hop-names.js';
import type { HopsFigures } from './hops.js';
import type { MemoryFigures } from './memory.js';
import { round, type Percentiles } from './stats.js';

const pct = (p: Percentiles): string => `${p.p50} / ${p.p90} / ${p.p99} (max ${p.max}, n=${p.n})`;
const ok = (cond: boolean): string => (cond ? 'met' : '**not met**');

export function memoryLines(m: MemoryFigures): string[] {
  const t = m.tracked;
  const ids = Object.keys(m.rssMiB.idle);
  const cell = (v: number | undefined): string => (v === undefined ? '' : String(v));
  return [
    `### Tracking ${t.volumes} volumes (${t.vmis} VMIs × ${t.volumesPerVmi}, all Ready at once; pod start ${t.podStartLatencyMs} ms, ${t.hypervisor} hypervisor)`,
    '',
    `Plugged in ${m.durationS.plug} s (${m.plugOpsPerSecond} volumes/s, ${t.concurrency} VMIs at a time), unplugged in ${m.durationS.unplug} s; correctness ${JSON.stringify(m.correctness)}.`,
    `${t.note}.`,
    '',
    `| process | idle | ${m.checkpoints.map((c) => `${c.volumesReady} Ready`).join(' | ')} | tracking ${t.volumes}, settled | peak (VmHWM) | after unplug (settled) | MiB per 1,000 volumes | at 10,000 (extrapolated) |`,
    `|---|---:|${m.checkpoints.map(() => '---:').join('|')}|---:|---:|---:|---:|---:|`,
    ...ids.map(
      (id) =>
        `| ${id} | ${cell(m.rssMiB.idle[id])} | ${m.checkpoints.map((c) => cell(c.rssMiB[id])).join(' | ')} | ${cell(m.rssMiB.trackingSettled[id])} | ${cell(m.peakRssMiB.end[id])} | ${cell(m.rssMiB.afterUnplugSettled[id])} | ${cell(m.extrapolated[id]?.mibPer1000Volumes)} | ${cell(m.extrapolated[id]?.at10000Volumes)} |`,
    ),
    '',
    "V8 heap in use (MiB, from each service's `/metrics`), and the RSS at 10,000 volumes it implies (idle RSS + the heap's growth):",
    '',
    `| service | idle | ${m.checkpoints.map((c) => `${c.volumesReady} Ready`).join(' | ')} | tracking ${t.volumes}, settled | after unplug (settled) | heap MiB per 1,000 volumes | RSS at 10,000 (extrapolated) |`,
    `|---|---:|${m.checkpoints.map(() => '---:').join('|')}|---:|---:|---:|---:|`,
    ...Object.keys(m.heapUsedMiB.idle).map(
      (id) =>
        `| ${id} | ${cell(m.heapUsedMiB.idle[id])} | ${m.checkpoints.map((c) => cell(c.heapUsedMiB[id])).join(' | ')} | ${cell(m.heapUsedMiB.trackingSettled[id])} | ${cell(m.heapUsedMiB.afterUnplugSettled[id])} | ${cell(m.extrapolated[id]?.heapMiBPer1000Volumes ?? undefined)} | ${cell(m.extrapolated[id]?.at10000VolumesByHeap ?? undefined)} |`,
    ),
    '',
    m.target.how === 'measured'
      ? `Worst service tracking ${t.volumes} volumes (measured, settled RSS): **${m.target.worstServiceAt10000} MiB** (target ≤ ${m.target.maxMiBPerService}: ${ok(m.target.met)}). The extrapolated columns only show the slope; RSS includes garbage not yet collected, so it is noisy.`
      : `Worst service at 10,000 volumes (extrapolated, the larger of the two lines): **${m.target.worstServiceAt10000} MiB** (target ≤ ${m.target.maxMiBPerService}: ${ok(m.target.met)}). ` +
        'Each line is a least-squares fit through idle and the checkpoints (where the RSS line falls, the largest RSS seen while tracking stands in); RSS includes garbage not yet collected, so it is noisy.',
    '',
  ];
}

export function guestLines(g: GuestFigures): string[] {
  if (!g.run) return [g.reason, ''];
  const facts = Object.entries(g.factsFromCall).map(
    ([f, p]) => `| ${f} published | ${p.p50} | ${p.p90} | ${p.p99} | ${p.max} |`,
  );
  return [
    `A real QEMU guest (TCG, kernel ${g.kernel}, booted in ${g.bootMs} ms) under a private libvirtd; the whole chain as processes; one Filesystem PVC on the ${g.bus} bus, plugged and unplugged ${g.runs} times (after ${g.warmup} warm-up run(s)), pod start ${g.podStartLatencyMs} ms. ` +
      "`plugctl` runs in-process (no process start-up). The guest reports a disk when its kernel announces it (a uevent), so the report adds only the reading of the disk's serial.",
    '',
    `- \`addvolume\` → the guest reports the disk: **p50 ${g.addvolumeToGuest.p50} ms, p99 ${g.addvolumeToGuest.p99} ms** (target p50 ≤ ${g.target.p50Ms}: ${ok(g.target.met)}); p50/p90/p99 ${pct(g.addvolumeToGuest)}`,
    `- \`addvolume\` → status \`Ready\`: ${pct(g.addvolumeToStatusReady)}; the call itself: ${pct(g.addvolumeCall)}`,
    `- \`removevolume\` → the guest no longer reports it: ${pct(g.removevolumeToGuest)}; → status entry gone: ${pct(g.removevolumeToStatusGone)}`,
    '',
    '| from the addvolume call to | p50 | p90 | p99 | max |',
    '|---|---:|---:|---:|---:|',
    ...facts,
    `| status Ready (watch) | ${g.addvolumeToStatusReady.p50} | ${g.addvolumeToStatusReady.p90} | ${g.addvolumeToStatusReady.p99} | ${g.addvolumeToStatusReady.max} |`,
    `| the guest kernel announces the disk (uevent) | ${g.addvolumeToGuestKernel.p50} | ${g.addvolumeToGuestKernel.p90} | ${g.addvolumeToGuestKernel.p99} | ${g.addvolumeToGuestKernel.max} |`,
    `| the guest reports the disk | ${g.addvolumeToGuest.p50} | ${g.addvolumeToGuest.p90} | ${g.addvolumeToGuest.p99} | ${g.addvolumeToGuest.max} |`,
    '',
  ];
}

export function cliLines(c: CliFigures): string[] {
  const row = (command: (typeof CLI_COMMANDS)[number]): string => {
    const b = c.wallMs.bundle[command];
    const s = c.wallMs.source[command];
    return `| \`plugctl ${command}\` | ${b.p50} (${b.min}–${b.max}) | ${s.p50} (${s.min}–${s.max}) |`;
  };
  return [
    `Each command a process (\`packages/cli/bin/plugctl.mjs\`), timed from its spawn to its exit, ${c.runs} runs each way, alternating: from the bundle in \`dist/plugctl\` (what the launcher runs while it is current) and from the sources through tsx (\`PLUGLINE_CLI_FROM_SOURCE=1\`). One Filesystem PVC on an idle stack, pod start 0 ms.` +
      (c.bundleStale === undefined
        ? ''
        : ` **The bundle was not current (${c.bundleStale}): both ways ran from the sources.**`),
    '',
    '| ms, p50 (min–max) | from the bundle | from the sources |',
    '|---|---:|---:|',
    ...CLI_COMMANDS.map(row),
    '',
    `What \`--wait\` printed as the operation's own time (request to \`Ready\`, or to the entry's removal), p50/p90/p99: addvolume ${pct(c.printedMs['addvolume --wait'])}; removevolume ${pct(c.printedMs['removevolume --wait'])}.`,
    '',
  ];
}

const HOP_WAYS: Record<HopVariant, string> = {
  [HopVariant.Core]: 'core NATS (subscribe, publish on; nothing kept)',
  [HopVariant.JetStream]: 'bare JetStream (consume, publish on and wait for the PubAck, ack)',
  [HopVariant.Exchanges]:
    "bare JetStream with the stage runtime's other trips to NATS (lease beside the snapshot's read, snapshot write, a fact, release), no machine",
  [HopVariant.Runtime]:
    'the stage runtime (lease kept between handlings, snapshot, a fact and the next work item, ack, release)',
};

export function hopsLines(
  h: HopsFigures,
  chain: { chainPlugP50: number | undefined; floorPlugP50: number | undefined },
): string[] {
  const rep = (r: { median: number; min: number; max: number }): string =>
    `${r.median} (${r.min}–${r.max})`;
  const row = (variant: HopVariant): string[] => {
    const v = h.variants[variant];
    if (v === undefined) return [];
    const c = v.medianRound.cpuMs;
    return [
      `| ${HOP_WAYS[variant]} | ${rep(v.p50)} | ${rep(v.p99)} | ${c.perHop} | ${c.natsServer} |`,
    ];
  };
  const { chainPlugP50: chainP50, floorPlugP50: floorP50 } = chain;
  const runtime = h.variants[HopVariant.Runtime]?.p50.median;
  const bare = h.variants[HopVariant.JetStream]?.p50.median;
  const split =
    chainP50 === undefined || floorP50 === undefined || runtime === undefined || bare === undefined
      ? []
      : [
          `The chain's plug p50 (${chainP50} ms, sections 1–2) is its floor's (${floorP50}) plus ${round(chainP50 - floorP50)} ms. Four hand-overs through the stage runtime take ${runtime} ms, four bare JetStream hops ${bare}: were the chain's four stages handed over as bare hops, and nothing else changed, it would be at about ${round((chainP50 - runtime + bare) / floorP50)}× its floor.`,
          '',
        ];
  return [
    `## 9. Four hops alone (${h.ops} items one at a time, ${h.rounds.length} rounds)`,
    '',
    `Four processes in a row hand an item on, with no Kubernetes and no effect; timed from this process's send to the last hand-over reaching it. A fresh nats-server per way and round; the hop processes run from the sources through tsx (the services of sections 1–8 run from their bundles). CPU from /proc, per item sent (a hop process's is the mean of the four).`,
    '',
    '| way | p50 ms | p99 ms | CPU ms per item, a hop | nats-server CPU ms per item |',
    '|---|---:|---:|---:|---:|',
    ...Object.values(HopVariant).flatMap(row),
    '',
    ...split,
  ];
}
