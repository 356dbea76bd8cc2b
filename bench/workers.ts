// Data-path threads per host (issue 13, item 1): TCP through the lab with switch.workers 1 and
// 2, interleaved in one run.
//
//   npx tsc -p . && node dist/bench/workers.js [--runs 4] [--seconds 5] [--workers 2]    (root)
//
// The lab (prefix nvi-b-, embedded store). Each run, in alternating order, for each worker
// count: both switches restarted with it, then iperf3 (TCP, -t S after 1 s of warm-up) over
//   - one pair across hosts, web1 -> web2;
//   - two pairs across hosts at once, web1 -> web2 and web3 -> db1, which 2 workers put on
//     different threads at both ends (web1 and db1 on worker 1, web3 and web2 on worker 0);
//   - one pair on one host, web1 -> web3, which 2 workers put on different threads: their
//     packets then go through the host's own underlay address (ESP over loopback).
// Reported: Mbit/s median [min-max] per count, the ratio to 1 worker, and the switches' CPU
// during the two pairs. Every process here shares one 2-core machine: both hosts' switches,
// the VMs' iperf3 and the kernel's forwarding.

import type { CloudConfig } from '../src/config/config.js';
import { labRestartSwitch, readState } from '../src/lab/lab.js';
import { BenchLab, BINARY, PREFIX } from './lab/bench-lab.js';
import { quantile, reachable, tcpTest, type Path, type TcpResult, type Timing } from './lab/measure.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({ runs: { type: 'string' }, seconds: { type: 'string' }, workers: { type: 'string' } });
const RUNS = integer('runs', v.runs ?? '4');
const TIMING: Timing = { seconds: integer('seconds', v.seconds ?? '5'), omit: 1 };
const COUNTS = [1, integer('workers', v.workers ?? '2', 2)];
const lab = new BenchLab('workers');

function writeConfig(workers: number): CloudConfig {
  return lab.config((doc) => {
    doc.setIn(['switch', 'workers'], workers);
    doc.deleteIn(['switch', 'metrics']);
  });
}

function path(c: CloudConfig, src: string, dst: string): Path {
  const sw = readState(c)!.switches;
  return {
    key: 'nvi', scope: c.vms.get(src)!.host === c.vms.get(dst)!.host ? 'same' : 'cross', label: `${src} -> ${dst}`,
    src: `${PREFIX}${src}`, dst: `${PREFIX}${dst}`, dstAddr: c.vms.get(dst)!.identityText,
    datapath: sw.map((s) => ({ label: `${s.host} switch`, pid: s.pid })), ifaces: [], udpSockets: [], rawSockets: [],
  };
}

const switchCpu = (r: TcpResult): number => Object.entries(r.cpu.procs).filter(([l]) => l.endsWith('switch')).reduce((a, [, p]) => a + p.pct, 0);
const figure = (xs: number[], d = 0): string => {
  const s = [...xs].sort((a, b) => a - b);
  return `${quantile(s, 0.5).toFixed(d)} [${s[0].toFixed(d)}-${s[s.length - 1].toFixed(d)}]`;
};
const median = (xs: number[]): number => quantile([...xs].sort((a, b) => a - b), 0.5);

interface Figures {
  one: number[];
  two: number[];
  cpu: number[];
  local: number[];
}

try {
  if (process.getuid?.() !== 0) refuse('bench/workers needs root');
  writeConfig(1);
  await lab.up();
  const got = new Map<number, Figures>(COUNTS.map((n) => [n, { one: [], two: [], cpu: [], local: [] }]));
  for (let run = 1; run <= RUNS; run++) {
    const order = run % 2 === 1 ? COUNTS : [...COUNTS].reverse();
    for (const n of order) {
      const c = writeConfig(n);
      for (const h of ['h1', 'h2']) await labRestartSwitch(c, h, BINARY, () => {});
      const a = path(c, 'web1', 'web2');
      const b = path(c, 'web3', 'db1');
      const local = path(c, 'web1', 'web3');
      for (const p of [a, b, local]) await reachable(p, 10_000);
      const f = got.get(n)!;
      f.one.push((await tcpTest(a, TIMING)).mbps);
      const [ra, rb] = await Promise.all([tcpTest(a, TIMING), tcpTest(b, TIMING)]);
      f.two.push(ra.mbps + rb.mbps);
      f.cpu.push(switchCpu(ra));
      f.local.push((await tcpTest(local, TIMING)).mbps);
      process.stdout.write(`  run ${run}, ${n} worker(s): one pair ${f.one.at(-1)!.toFixed(0)}, two pairs ${ra.mbps.toFixed(0)} + ${rb.mbps.toFixed(0)}, ` +
        `one host ${f.local.at(-1)!.toFixed(0)} Mbit/s; switches ${f.cpu.at(-1)!.toFixed(0)} % CPU\n`);
    }
  }
  const base = got.get(1)!;
  process.stdout.write(`TCP, ${RUNS} runs of ${TIMING.seconds} s, Mbit/s median [min-max] (ratio of medians to 1 worker):\n`);
  for (const [n, f] of got) {
    const r = (xs: number[], b: number[]): string => (n === 1 ? '' : ` (${(median(xs) / median(b)).toFixed(2)}x)`);
    process.stdout.write(`  ${n} worker(s): one pair ${figure(f.one)}${r(f.one, base.one)}, two pairs ${figure(f.two)}${r(f.two, base.two)}, ` +
      `one host ${figure(f.local)}${r(f.local, base.local)}; switches during two pairs ${figure(f.cpu)} % CPU\n`);
  }
} finally {
  await lab.cleanup();
}
