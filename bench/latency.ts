// Latency through nvi-switch in the lab, with busy polling off and on, and what this machine
// adds when a packet comes alone.
//
//   npx tsc -p . && node dist/bench/latency.js [--runs 3] [--count 500] [--lone 40] [--window 5000]   (root)
//
// Each run, for busy polling off and on (`switch.busyPollUs` 0 and --window): the lab up, then
// web1 -> web2 (cross host, ESP) warmed by 3 pings, `ping -i 0.002 -c COUNT` (back to back)
// and `ping -i 0.2 -c LONE` (each packet alone); the two switches' CPU during each (their
// share of a core, from /proc). Beside them in the same run: the same two pings between the
// hosts' underlay addresses (h1 -> h2 on the fabric: the kernel alone), and the machine
// itself: a walk over 2,000 objects in this process, timed 2 ms and 50 ms after the walk
// before it, the thread sleeping or spinning in between (how cold the caches go).
// Figures: median over the runs of each run's average and p99 (ms).

import { execFileSync } from 'node:child_process';
import { formatIpv4 } from '../src/base/address.js';
import { readState } from '../src/lab/lab.js';
import { BenchLab, PREFIX } from './lab/bench-lab.js';
import { median } from './lab/report.js';
import { CpuWatch } from './lab/proc.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({ runs: { type: 'string' }, count: { type: 'string' }, lone: { type: 'string' }, window: { type: 'string' } });
const RUNS = integer('runs', v.runs ?? '3');
const COUNT = integer('count', v.count ?? '500');
const LONE = integer('lone', v.lone ?? '40');
const WINDOW = integer('window', v.window ?? '5000');
if (WINDOW > 10_000_000) refuse(`--window: at most 10000000 µs, got ${WINDOW}`);

interface Pings { avg: number; p99: number; lost: number }
type Row = { back: Pings; lone: Pings; cpuBack: number; cpuLone: number };

function ping(ns: string, to: string, interval: string, count: number, v6: boolean): Pings {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'ping', v6 ? '-6' : '-4', '-n', '-c', String(count), '-i', interval, '-W', '1', to],
    { encoding: 'utf8', timeout: count * 1000 + 10_000 });
  const rtts = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  if (rtts.length === 0) throw new Error(`ping ${ns} -> ${to}: no reply`);
  const avg = rtts.reduce((s, x) => s + x, 0) / rtts.length;
  return { avg, p99: rtts[Math.min(rtts.length, Math.ceil(0.99 * rtts.length)) - 1]!, lost: count - rtts.length };
}

/** ping, with the share of a core the `pids` used meanwhile (summed). */
function watched(pids: ReadonlyMap<string, number>, f: () => Pings): [Pings, number] {
  const w = new CpuWatch(pids);
  w.begin();
  const p = f();
  const use = w.end();
  return [p, Object.values(use.procs).reduce((s, x) => s + x.pct, 0)];
}

/** The machine: the same walk over 2,000 of 200,000 objects, `gapMs` after the last one. */
async function coldWalk(gapMs: number, spin: boolean): Promise<number> {
  const objs = Array.from({ length: 200_000 }, (_, i) => ({ a: i, b: [i, i + 1], c: `x${i}` }));
  const idx = Array.from({ length: 2000 }, (_, i) => (i * 7919) % objs.length);
  const walk = (): number => {
    let s = 0;
    for (const k of idx) s += objs[k]!.a + objs[k]!.b[1]! + objs[k]!.c.length;
    return s;
  };
  for (let i = 0; i < 20_000; i++) walk();
  const t: number[] = [];
  for (let n = 0; n < 40; n++) {
    if (spin) for (const until = performance.now() + gapMs; performance.now() < until; );
    else await new Promise((r) => setTimeout(r, gapMs));
    const a = performance.now();
    walk();
    t.push((performance.now() - a) * 1000);
  }
  return median(t);
}

const f3 = (x: number): string => x.toFixed(3);
const lab = new BenchLab('latency');
const rows = new Map<string, Row[]>([['nvi-switch, busy poll off', []], [`nvi-switch, busy poll ${WINDOW} µs`, []], ['underlay (kernel)', []]]);
const walks = new Map<string, number[]>([['sleep 2 ms', []], ['sleep 50 ms', []], ['spin 2 ms', []], ['spin 50 ms', []]]);

try {
  if (process.getuid?.() !== 0) refuse('bench/latency needs root');
  for (let run = 1; run <= RUNS; run++) {
    for (const [label, window] of [['nvi-switch, busy poll off', 0], [`nvi-switch, busy poll ${WINDOW} µs`, WINDOW]] as const) {
      const cfg = lab.config((doc) => doc.setIn(['switch', 'busyPollUs'], window));
      await lab.up();
      const pids = new Map((readState(cfg)?.switches ?? []).map((s) => [s.host, s.pid]));
      const web2 = cfg.vms.get('web2')!.identityText;
      ping(`${PREFIX}web1`, web2, '0.2', 3, true); // the cables plugged
      const [back, cpuBack] = watched(pids, () => ping(`${PREFIX}web1`, web2, '0.002', COUNT, true));
      const [lone, cpuLone] = watched(pids, () => ping(`${PREFIX}web1`, web2, '0.2', LONE, true));
      rows.get(label)!.push({ back, lone, cpuBack, cpuLone });
      process.stdout.write(`run ${run} ${label}: back to back avg ${f3(back.avg)} p99 ${f3(back.p99)} ms (switches ${cpuBack.toFixed(0)}% of a core), ` +
        `lone avg ${f3(lone.avg)} p99 ${f3(lone.p99)} ms (${cpuLone.toFixed(0)}%)\n`);
      if (label.includes('off')) {
        const h2 = formatIpv4(cfg.hosts.get('h2')!.address);
        const back4 = ping(`${PREFIX}h1`, h2, '0.002', COUNT, false);
        const lone4 = ping(`${PREFIX}h1`, h2, '0.2', LONE, false);
        rows.get('underlay (kernel)')!.push({ back: back4, lone: lone4, cpuBack: NaN, cpuLone: NaN });
      }
      await lab.down();
    }
    for (const [label, gap, spin] of [['sleep 2 ms', 2, false], ['sleep 50 ms', 50, false], ['spin 2 ms', 2, true], ['spin 50 ms', 50, true]] as const) {
      walks.get(label)!.push(await coldWalk(gap, spin));
    }
  }
  process.stdout.write(`\nweb1 -> web2 (cross host, ESP), ${RUNS} runs, medians of each run's figure; ping -i 0.002 -c ${COUNT} and -i 0.2 -c ${LONE}\n`);
  process.stdout.write('path                                   back-to-back avg / p99 ms   lone avg / p99 ms   switches\' CPU (back / lone)\n');
  for (const [label, rs] of rows) {
    const m = (f: (r: Row) => number): number => median(rs.map(f));
    const cpu = label.startsWith('nvi') ? `${m((r) => r.cpuBack).toFixed(0)}% / ${m((r) => r.cpuLone).toFixed(0)}% of a core` : '';
    process.stdout.write(`${label.padEnd(38)} ${f3(m((r) => r.back.avg))} / ${f3(m((r) => r.back.p99))}               ` +
      `${f3(m((r) => r.lone.avg))} / ${f3(m((r) => r.lone.p99))}       ${cpu}\n`);
  }
  process.stdout.write('\nthis machine: a walk over 2,000 objects (µs, median of 40 per run, median over runs), some time after the walk before it\n');
  for (const [label, xs] of walks) process.stdout.write(`  ${label.padEnd(12)} ${median(xs).toFixed(1)}\n`);
} finally {
  await lab.cleanup();
}
