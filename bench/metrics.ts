// Metrics benchmark (issue 11): the Prometheus endpoint's scrape time, and the data path's TCP
// throughput with metrics off and on (scraped every --every ms), interleaved in one run.
//
//   npx tsc -p . && node dist/bench/metrics.js [--runs 6] [--seconds 5] [--every 1000]    (root)
//
// The lab (prefix nvi-b-, embedded store). Each run, in alternating order: both switches
// restarted with switch.metrics removed from the config, iperf3 web1 -> web2 (TCP, -t S after
// 1 s); and restarted with it, the same iperf3 while h1's and h2's endpoints are scraped every
// --every ms (curl from each host's namespace; its time_total is the scrape time).
// Reported: TCP median [min-max] off and on, their ratio, the switches' CPU, scrape time
// p50/p99 and the exposition's size.

import { spawnSync } from 'node:child_process';
import type { CloudConfig } from '../src/config/config.js';
import { labRestartSwitch, readState } from '../src/lab/lab.js';
import { BenchLab, BINARY, PREFIX } from './lab/bench-lab.js';
import { quantile, reachable, tcpTest, type Path, type Timing } from './lab/measure.js';
import { benchOptions, integer, refuse } from './options.js';

const LISTEN = '127.0.0.1:9477';

const v = benchOptions({ runs: { type: 'string' }, seconds: { type: 'string' }, every: { type: 'string' } });
const RUNS = integer('runs', v.runs ?? '6');
const TIMING: Timing = { seconds: integer('seconds', v.seconds ?? '5'), omit: 1 };
const EVERY = integer('every', v.every ?? '1000', 10);
const lab = new BenchLab('metrics');

/** The lab's config with switch.metrics on or off. */
function writeConfig(metrics: boolean): CloudConfig {
  return lab.config((doc) => {
    if (metrics) doc.setIn(['switch', 'metrics'], doc.createNode({ listen: LISTEN }));
    else doc.deleteIn(['switch', 'metrics']);
  });
}

async function restartBoth(c: CloudConfig): Promise<void> {
  for (const h of ['h1', 'h2']) await labRestartSwitch(c, h, BINARY, () => {});
}

function path(c: CloudConfig): Path {
  const sw = readState(c)!.switches;
  return {
    key: 'nvi', scope: 'cross', label: 'web1 -> web2', src: `${PREFIX}web1`, dst: `${PREFIX}web2`, dstAddr: c.vms.get('web2')!.identityText,
    datapath: sw.map((s) => ({ label: `${s.host} switch`, pid: s.pid })), ifaces: [], udpSockets: [], rawSockets: [],
  };
}

/** One scrape from host `h`'s namespace: seconds and bytes. */
function scrape(h: string): { seconds: number; bytes: number } {
  const r = spawnSync('ip', ['netns', 'exec', `${PREFIX}${h}`, 'curl', '-sf', '-o', '/dev/null', '-w', '%{time_total} %{size_download}', `http://${LISTEN}/metrics`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`scrape of ${h}: curl exit ${r.status} ${r.stderr}`);
  const [t, n] = r.stdout.trim().split(' ');
  return { seconds: Number(t), bytes: Number(n) };
}

const figure = (xs: number[], d = 0): string => {
  const s = [...xs].sort((a, b) => a - b);
  return `${quantile(s, 0.5).toFixed(d)} [${s[0].toFixed(d)}-${s[s.length - 1].toFixed(d)}]`;
};

try {
  if (process.getuid?.() !== 0) refuse('bench/metrics needs root');
  writeConfig(true);
  await lab.up();
  const off: number[] = [];
  const on: number[] = [];
  const cpuOff: number[] = [];
  const cpuOn: number[] = [];
  const scrapes: number[] = [];
  let size = 0;
  const cpuOf = (r: Awaited<ReturnType<typeof tcpTest>>): number => Object.entries(r.cpu.procs).filter(([l]) => l.endsWith('switch')).reduce((a, [, p]) => a + p.pct, 0);
  /** One TCP test with metrics off, or on and scraped every EVERY ms. */
  const measure = async (metrics: boolean): Promise<number> => {
    const c = writeConfig(metrics);
    await restartBoth(c);
    await reachable(path(c), 10_000);
    const timer = metrics
      ? setInterval(() => {
        for (const h of ['h1', 'h2']) {
          const got = scrape(h);
          scrapes.push(got.seconds * 1000);
          size = got.bytes;
        }
      }, EVERY)
      : undefined;
    const r = await tcpTest(path(c), TIMING);
    clearInterval(timer);
    (metrics ? on : off).push(r.mbps);
    (metrics ? cpuOn : cpuOff).push(cpuOf(r));
    return r.mbps;
  };
  for (let run = 1; run <= RUNS; run++) {
    // Alternate which goes first, so that a drift in the machine falls on both alike.
    const order = run % 2 === 1 ? [false, true] : [true, false];
    const got: Record<string, number> = {};
    for (const m of order) got[m ? 'on' : 'off'] = await measure(m);
    process.stdout.write(`  run ${run}: metrics off ${got.off.toFixed(0)} Mbit/s, on (scraped every ${EVERY} ms) ${got.on.toFixed(0)} Mbit/s\n`);
  }
  const med = (xs: number[]): number => quantile([...xs].sort((x, y) => x - y), 0.5);
  const s = [...scrapes].sort((x, y) => x - y);
  process.stdout.write(`TCP web1 -> web2, ${RUNS} runs of ${TIMING.seconds} s, median [min-max]:\n` +
    `  metrics off              ${figure(off)} Mbit/s, switches ${figure(cpuOff)} % CPU\n` +
    `  metrics on, scraped      ${figure(on)} Mbit/s, switches ${figure(cpuOn)} % CPU   (on/off ${(med(on) / med(off)).toFixed(3)})\n` +
    `scrape (curl time_total, ${s.length} scrapes during traffic): p50 ${quantile(s, 0.5).toFixed(2)} ms, p99 ${quantile(s, 0.99).toFixed(2)} ms; exposition ${size} bytes\n`);
} finally {
  await lab.cleanup();
}
