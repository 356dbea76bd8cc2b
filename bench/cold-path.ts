// What a packet that comes alone pays inside the switch, and what keeps it from paying it
// (issue 13, item 3). On this machine a data path that sat idle for some milliseconds runs
// its next packet several times slower than one that ran a moment ago: its caches went cold.
//
//   npx tsc -p . && node dist/bench/cold-path.js [--rounds 3]   (root)
//
// The lab (pinned: h1's switch and OpenVPN's h1 side on CPU 0, h2's on CPU 1), OpenVPN and the
// kernel's VXLAN between the same hosts (bench/lab/baselines.ts). Each round, for each mode:
// web1 -> web2 (nvi-switch), ovc1 -> ovc2 (OpenVPN) and krc1 -> krc2 (the kernel alone) pinged
// in turn; for nvi-switch, both switches' wake times over the same pings (src/switch/wake-times.ts:
// from a port waking the thread to its read, the entry; from that read to the first packet sent,
// the pipeline). Modes: ping -i 0.002, 0.01 and 0.2 (each packet alone); and -i 0.01 with
// another pair pinged every millisecond through the same path meanwhile (warm: for nvi-switch
// web3 -> db1, on the same hosts and switches; for OpenVPN its own pair again), which keeps
// the path's code and data in the caches without keeping any CPU busy.
// Figures: per mode, the median over the rounds of each path's average round trip, and of
// each switch's median entry and pipeline (µs, estimated from the histograms' buckets).

import { readState } from '../src/lab/lab.js';
import { baselineNamespaces, buildBaselines, ovpnDevice } from './lab/baselines.js';
import { BenchLab, PREFIX } from './lab/bench-lab.js';
import { pingTest, type Path } from './lab/measure.js';
import { BenchError, delay, sh, start, stopChildren, trySh, type Running } from './lab/proc.js';
import { median } from './lab/report.js';
import { medianUs, switchWake } from './lab/wake.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({ rounds: { type: 'string' } });
const ROUNDS = integer('rounds', v.rounds ?? '3');
if (process.getuid?.() !== 0) refuse('bench/cold-path needs root');

interface Mode { readonly label: string; readonly interval: number; readonly count: number; readonly warm: boolean }
const MODES: readonly Mode[] = [
  { label: '-i 0.002', interval: 0.002, count: 500, warm: false },
  { label: '-i 0.01', interval: 0.01, count: 300, warm: false },
  { label: '-i 0.2 (alone)', interval: 0.2, count: 25, warm: false },
  { label: '-i 0.01, warm', interval: 0.01, count: 300, warm: true },
];
const HOSTS = ['h1', 'h2'] as const;
type Key = 'nvi' | 'ovpn' | 'kernel';
/** Per mode: each round's average round trip per path, and per switch its medians (µs). */
type Row = { rtt: Record<Key, number[]>; entry: Record<string, number[]>; pipeline: Record<string, number[]> };

/** A path for pingTest: only the namespaces and the address matter here. */
function path(key: Key, src: string, dstAddr: string): Path {
  return { key, scope: 'cross', label: src, src, dst: src, dstAddr, datapath: [], ifaces: [], udpSockets: [], rawSockets: [] };
}

const lab = new BenchLab('cold-path');
const cleanup = async (): Promise<void> => {
  await stopChildren();
  await lab.cleanup();
  for (const ns of baselineNamespaces(PREFIX)) trySh('ip', ['netns', 'delete', ns]);
};
try {
  const cfg = lab.config((doc) => {
    doc.setIn(['hosts', 'h1', 'cpus'], doc.createNode([0]));
    doc.setIn(['hosts', 'h2', 'cpus'], doc.createNode([1]));
  });
  await lab.up();
  const address = (h: string): string => cfg.hosts.get(h)!.addressText;
  const base = await buildBaselines(PREFIX, { ns: `${PREFIX}h1`, address: address('h1') }, { ns: `${PREFIX}h2`, address: address('h2') }, lab.dir);
  for (const [i, cpu] of [[0, 0], [1, 1]] as const) sh('taskset', ['-apc', String(cpu), String(base.ovpn.pids[i]!.pid)]);
  if (!base.kernel) throw new BenchError(`the kernel's VXLAN path could not be built: ${base.kernelError}`);
  const id = (vm: string): string => cfg.vms.get(vm)!.identityText;
  const paths: Record<Key, Path> = {
    nvi: path('nvi', `${PREFIX}web1`, id('web2')),
    ovpn: path('ovpn', `${PREFIX}ovc1`, 'fd00:79:2::2'),
    kernel: path('kernel', `${PREFIX}krc1`, 'fd00:78:2::2'),
  };
  const warmers: Partial<Record<Key, Path>> = { nvi: path('nvi', `${PREFIX}web3`, id('db1')), ovpn: paths.ovpn };
  for (const p of [...Object.values(paths), warmers.nvi!]) await pingTest(p, 5, 0.2); // plugged, keyed, handshaken
  const state = readState(cfg)!;
  const pid = (h: string): number => state.switches.find((s) => s.host === h)!.pid;
  process.stdout.write(`switches h1 ${pid('h1')}, h2 ${pid('h2')}; openvpn ${base.ovpn.pids.map((p) => p.pid).join(', ')} (${ovpnDevice(PREFIX, 1)}, ${ovpnDevice(PREFIX, 2)}); ${ROUNDS} rounds\n`);

  const rows = new Map<Mode, Row>(MODES.map((m) => [m, { rtt: { nvi: [], ovpn: [], kernel: [] }, entry: {}, pipeline: {} }]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of MODES) {
      const row = rows.get(mode)!;
      for (const key of ['nvi', 'ovpn', 'kernel'] as const) {
        const warmer = mode.warm ? warmers[key] : undefined;
        let bg: Running | undefined;
        if (warmer) {
          bg = start('ip', ['netns', 'exec', warmer.src, 'ping', '-6', '-q', '-i', '0.001', warmer.dstAddr]);
          await delay(300);
        }
        const before = key === 'nvi' ? await Promise.all(HOSTS.map((h) => switchWake(cfg, h))) : [];
        const r = await pingTest(paths[key], mode.count, mode.interval);
        const after = key === 'nvi' ? await Promise.all(HOSTS.map((h) => switchWake(cfg, h))) : [];
        bg?.kill('SIGINT');
        row.rtt[key].push(r.meanMs);
        if (key === 'nvi') {
          HOSTS.forEach((h, k) => {
            (row.entry[h] ??= []).push(medianUs(after[k]!, before[k]!, 'entry'));
            (row.pipeline[h] ??= []).push(medianUs(after[k]!, before[k]!, 'pipeline'));
          });
        }
      }
      process.stdout.write(`round ${round} ${mode.label}: nvi ${row.rtt.nvi.at(-1)!.toFixed(3)} ms, OpenVPN ${row.rtt.ovpn.at(-1)!.toFixed(3)}, kernel ${row.rtt.kernel.at(-1)!.toFixed(3)}\n`);
    }
  }

  const f = (x: number, d = 3): string => (Number.isNaN(x) ? 'n/a' : x.toFixed(d));
  process.stdout.write(`\nweb1 -> web2 (nvi-switch, ESP), ovc1 -> ovc2 (OpenVPN), krc1 -> krc2 (kernel VXLAN); medians over ${ROUNDS} rounds\n`);
  process.stdout.write('| ping | nvi-switch ms | OpenVPN ms | kernel ms | nvi / OpenVPN | h1 entry µs | h1 pipeline µs | h2 entry µs | h2 pipeline µs |\n');
  process.stdout.write('| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n');
  for (const mode of MODES) {
    const r = rows.get(mode)!;
    const m = (k: Key): number => median(r.rtt[k]);
    const us = (part: 'entry' | 'pipeline', h: string): string => f(median(r[part][h] ?? []), 1);
    process.stdout.write(`| ${mode.label} | ${f(m('nvi'))} | ${f(m('ovpn'))} | ${f(m('kernel'))} | ${f(m('nvi') / m('ovpn'), 2)}x | ${us('entry', 'h1')} | ${us('pipeline', 'h1')} | ${us('entry', 'h2')} | ${us('pipeline', 'h2')} |\n`);
  }
  process.stdout.write('entry: a port\'s readiness callback to its read; pipeline: that read to the first packet sent (median of the wakes, from the buckets)\n');
} finally {
  await cleanup();
}
