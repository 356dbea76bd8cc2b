// Two variants of the switch side by side, in one sitting: on this machine the same lab's
// ping differs 2-3x between minutes, more than most changes do. Two labs run at once (A: the
// shipped config; B: the same with the options below) and the pings alternate between them
// round by round, so that each round's noise falls on both.
//
//   npx tsc -p . && node dist/bench/ping-ab.js [--rounds 20] [--count 100] [--intervals 0.01,0.05]
//       [--node-args=ARGS] [--busy-poll-us N]   (root)
//
// --node-args=ARGS: more options for B's switches' node, space-separated (the = is needed);
// --busy-poll-us N: B's switch.busyPollUs. Each round: for each interval, web1 -> web2
// (cross host, ESP) `ping -c COUNT -i INTERVAL` in A and in B (which goes first alternates),
// with the CPU both switches of that lab used meanwhile (% of one core). Figures per interval:
// the median over the rounds of each round's average, median and p99; the median of B's
// average over A's in the same round, and in how many rounds B's average was the lower; and
// the switches' own time per traversal over the same pings (their wake times: a port's wake
// to its read, the entry, and that read to the first packet sent, the pipeline; median µs,
// h1 and h2 together), which leaves out the kernel's part and the CPUs' wake-ups.

import { readState } from '../src/lab/lab.js';
import type { WakeTimes } from '../src/switch/wake-times.js';
import { mergeStats } from '../src/switch/workers/merge-stats.js';
import { BenchLab } from './lab/bench-lab.js';
import { pingTest, type Path, type PingResult } from './lab/measure.js';
import { CpuWatch } from './lab/proc.js';
import { median } from './lab/report.js';
import { medianUs, switchWake } from './lab/wake.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({
  rounds: { type: 'string' }, count: { type: 'string' }, intervals: { type: 'string' },
  'node-args': { type: 'string' }, 'busy-poll-us': { type: 'string' },
});
const ROUNDS = integer('rounds', v.rounds ?? '20');
const COUNT = integer('count', v.count ?? '100');
const INTERVALS = (v.intervals ?? '0.01,0.05').split(',');
for (const i of INTERVALS) if (!/^\d+(\.\d+)?$/.test(i) || Number(i) < 0.002) refuse(`--intervals: seconds of at least 0.002, got ${JSON.stringify(i)}`);
const NODE_ARGS = (v['node-args'] ?? '').split(' ').filter((a) => a !== '');
const BUSY_POLL = v['busy-poll-us'] === undefined ? undefined : integer('busy-poll-us', v['busy-poll-us'], 0);
if (NODE_ARGS.length === 0 && BUSY_POLL === undefined) refuse('B is the same as A: give --node-args=ARGS or --busy-poll-us N');

type Pings = PingResult & { readonly cpu: number; readonly entryUs: number; readonly pipelineUs: number };
interface Variant { label: string; lab: BenchLab; prefix: string; pids: Map<string, number>; path?: Path; rows: Map<string, Pings[]>; wake?: () => Promise<WakeTimes> }

async function pings(v: Variant, interval: string): Promise<Pings> {
  const before = await v.wake!();
  const watch = new CpuWatch(v.pids);
  watch.begin();
  const r = await pingTest(v.path!, COUNT, Number(interval));
  const use = watch.end();
  const after = await v.wake!();
  // CpuWatch leaves out windows of 0.1 s or less: no figure then
  return { ...r, cpu: Object.keys(use.procs).length === 0 ? NaN : Object.values(use.procs).reduce((s, p) => s + p.pct, 0), entryUs: medianUs(after, before, 'entry'), pipelineUs: medianUs(after, before, 'pipeline') };
}

if (process.getuid?.() !== 0) refuse('bench/ping-ab needs root');
const variants: Variant[] = [
  { label: 'A (shipped)', lab: new BenchLab('ab-a'), prefix: 'nvi-a-', pids: new Map(), rows: new Map() },
  { label: `B (${[...NODE_ARGS, ...(BUSY_POLL === undefined ? [] : [`busyPollUs ${BUSY_POLL}`])].join(' ')})`, lab: new BenchLab('ab-b'), prefix: 'nvi-c-', pids: new Map(), rows: new Map() },
];
try {
  for (const [k, v] of variants.entries()) {
    const cfg = v.lab.config((doc) => {
      doc.setIn(['lab', 'prefix'], v.prefix);
      if (k === 1 && BUSY_POLL !== undefined) doc.setIn(['switch', 'busyPollUs'], BUSY_POLL);
    });
    await v.lab.up(k === 1 ? NODE_ARGS : []);
    for (const s of readState(cfg)?.switches ?? []) v.pids.set(s.host, s.pid);
    if (v.pids.size !== 2) throw new Error(`${v.label}: the lab state names ${v.pids.size} switches, not 2`);
    v.path = {
      key: 'nvi', scope: 'cross', label: `${v.label} web1 -> web2`, src: `${v.prefix}web1`, dst: `${v.prefix}web2`, dstAddr: cfg.vms.get('web2')!.identityText,
      datapath: [], ifaces: [], udpSockets: [], rawSockets: [],
    };
    for (const i of INTERVALS) v.rows.set(i, []);
    // Both switches' wake times added up (as `stats` adds up a host's workers).
    v.wake = async () => mergeStats(await Promise.all(['h1', 'h2'].map((h) => switchWake(cfg, h)))) as WakeTimes;
  }
  for (const v of variants) await pingTest(v.path!, 1000, 0.002);
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? variants : [...variants].reverse();
    for (const i of INTERVALS) for (const v of order) v.rows.get(i)!.push(await pings(v, i));
    process.stdout.write(`round ${r + 1}/${ROUNDS}: ${INTERVALS.map((i) => `-i ${i} ${variants.map((v) => v.rows.get(i)![r]!.meanMs.toFixed(3)).join(' / ')} ms`).join(', ')}\n`);
  }
  const f3 = (x: number): string => x.toFixed(3);
  const cpuText = (pct: number): string => (Number.isNaN(pct) ? 'n/a (pings under 0.1 s)' : `${pct.toFixed(0)}% of a core`);
  process.stdout.write(`\nweb1 -> web2 (cross host, ESP), ${ROUNDS} rounds of ping -c ${COUNT}; medians over the rounds\n`);
  for (const i of INTERVALS) {
    process.stdout.write(`ping -i ${i}\n`);
    for (const v of variants) {
      const rows = v.rows.get(i)!;
      const m = (f: (p: Pings) => number): number => median(rows.map(f));
      process.stdout.write(`  ${v.label.padEnd(30)} avg ${f3(m((p) => p.meanMs))}  median ${f3(m((p) => p.medianMs))}  p99 ${f3(m((p) => p.p99Ms))} ms  switches ${cpuText(m((p) => p.cpu))}; entry ${m((p) => p.entryUs).toFixed(1)} µs, pipeline ${m((p) => p.pipelineUs).toFixed(1)} µs\n`);
    }
    const [a, b] = variants.map((v) => v.rows.get(i)!);
    const wins = b!.filter((p, k) => p.meanMs < a![k]!.meanMs).length;
    process.stdout.write(`  B / A (avg, same round): median ${median(b!.map((p, k) => p.meanMs / a![k]!.meanMs)).toFixed(3)}; B lower in ${wins} of ${ROUNDS} rounds\n`);
    const pipes = b!.filter((p, k) => p.pipelineUs < a![k]!.pipelineUs).length;
    process.stdout.write(`  B / A (pipeline, same round): median ${median(b!.map((p, k) => p.pipelineUs / a![k]!.pipelineUs)).toFixed(3)}; B lower in ${pipes} of ${ROUNDS} rounds\n`);
  }
} finally {
  for (const v of variants) await v.lab.cleanup();
}
