// The pages a lone packet touches in each switch (issue 13, item 3: what a lone packet pays
// for). On this machine a CPU that idles comes back with cold caches and TLB, and a lone
// packet's time grows with the pages it touches; a page count is the same on a quiet and on
// a noisy hour, where the time is not.
//
//   npx tsc -p . && node dist/bench/footprint.js [--count 30] [--gap 100] [--node-args=ARGS] [--wait S] [--esp-udp PORT] [--workers N]   (root)
//
// --esp-udp PORT: the switches carry ESP in UDP to PORT (underlay.espUdpPort), as the lab bench's runs do.
// --workers N: the switches with N data-path threads (switch.workers).
// --node-args=ARGS: more options for the switches' node, space-separated (the = is needed);
// --wait S: seconds to let the lab idle after the warm-up, before the samples (V8's idle GCs).
// 1. The floor: bench/lab/wake-floor.ts, a Node process that wakes on a FIFO through the
//    switch's own watcher (poll.c) and reads with the switch's native batch read: the event
//    loop's part and the entry into JS, which every traversal of a switch pays too.
// 2. The lab: web1 -> web2 warmed by 2,000 pings, then COUNT lone pings GAP ms apart.
// Each sample clears the processes' accessed bits (bench/lab/page-refs.ts), sends one byte
// (the floor) or one ping (the lab), waits 20 ms and counts the pages touched per region. The
// same without the byte or the ping (idle) shows what timers touch meanwhile. Figures: median
// pages over the samples. A ping crosses each switch twice (h1: the request out, the reply
// in; h2: the request in, the reply out): a traversal is half of (ping - idle).
// 3. What a page costs here: a chain of 1,000 dependent reads, one cache line each, on 1,000
//    pages of a 64 MB buffer and within 2 MB, timed 2 ms and 50 ms after the walk before it
//    (this process asleep in between): median of 40 walks each.

import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readState } from '../src/lab/lab.js';
import { BenchLab, PREFIX } from './lab/bench-lab.js';
import { clearReferenced, ownTotal, referencedPages, REGIONS, type Region } from './lab/page-refs.js';
import { pingTest, type Path } from './lab/measure.js';
import { delay } from './lab/proc.js';
import { median } from './lab/report.js';
import { benchOptions, integer, refuse } from './options.js';

const v = benchOptions({ count: { type: 'string' }, gap: { type: 'string' }, 'node-args': { type: 'string' }, wait: { type: 'string' }, 'esp-udp': { type: 'string' }, workers: { type: 'string' } });
const COUNT = integer('count', v.count ?? '30');
const GAP_MS = integer('gap', v.gap ?? '100');
const NODE_ARGS = (v['node-args'] ?? '').split(' ').filter((a) => a !== '');
const WAIT_S = integer('wait', v.wait ?? '0', 0);
const ESP_UDP = v['esp-udp'] === undefined ? 0 : integer('esp-udp', v['esp-udp']);
const WORKERS = v.workers === undefined ? undefined : integer('workers', v.workers);
const SETTLE_MS = 20;
const FLOOR_SCRIPT = fileURLToPath(new URL('./lab/wake-floor.js', import.meta.url));

type Pages = Map<Region, number>;

/** Clear the pids' accessed bits, act, settle, count: one Pages per pid. */
async function sample(pids: readonly number[], act: () => void | Promise<void>): Promise<Pages[]> {
  for (const pid of pids) clearReferenced(pid);
  await act();
  await delay(SETTLE_MS);
  return pids.map((pid) => referencedPages(pid));
}

/** Per region (and the own total), the median over the samples. */
function medians(samples: readonly Pages[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of REGIONS) out.set(r, median(samples.map((s) => s.get(r)!)));
  out.set('own total', median(samples.map(ownTotal)));
  return out;
}

async function floorSamples(lab: BenchLab): Promise<{ wake: Pages[]; idle: Pages[] }> {
  const fifo = join(lab.dir, 'wake.fifo');
  execFileSync('mkfifo', [fifo]);
  const child = spawn(process.execPath, [FLOOR_SCRIPT, fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
  lab.children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`wake-floor exited (${code}) before it was ready`)));
    child.stdout!.once('data', () => resolve());
  });
  const fd = openSync(fifo, constants.O_RDWR);
  const byte = Buffer.from('x');
  try {
    for (let i = 0; i < 300; i++) {
      writeSync(fd, byte);
      await delay(2);
    }
    const wake: Pages[] = [];
    const idle: Pages[] = [];
    for (let i = 0; i < COUNT; i++) {
      await delay(GAP_MS);
      wake.push(...(await sample([child.pid!], () => void writeSync(fd, byte))));
      await delay(GAP_MS);
      idle.push(...(await sample([child.pid!], () => {})));
    }
    return { wake, idle };
  } finally {
    closeSync(fd);
    child.kill('SIGTERM');
  }
}

/** ns per read of a 1,000-read chain spread over `spanMb`, `gapMs` after the last walk (median of 40). */
async function walk(spanMb: number, gapMs: number): Promise<number> {
  const words = new Int32Array((spanMb << 20) / 4);
  const LINES = 1000;
  // read k on page (k * 7919) mod pages (distinct pages while they last), on a line of it no other read has
  const pages = words.length / 1024;
  const at = Array.from({ length: LINES }, (_, k) => ((k * 7919) % pages) * 1024 + ((k + 5 * Math.floor(k / pages)) % 64) * 16);
  if (new Set(at).size !== LINES) throw new Error('walk: two reads on one line');
  for (let k = 0; k < LINES; k++) words[at[k]!] = at[(k + 1) % LINES]!;
  const run = (): number => {
    let i = at[0]!;
    for (let k = 0; k < LINES; k++) i = words[i]!;
    return i;
  };
  for (let n = 0; n < 200; n++) run();
  const t: number[] = [];
  for (let n = 0; n < 40; n++) {
    await delay(gapMs);
    const a = process.hrtime.bigint();
    if (run() !== at[0]) throw new Error('walk: the chain is broken');
    t.push(Number(process.hrtime.bigint() - a) / LINES);
  }
  return median(t);
}

if (process.getuid?.() !== 0) refuse('bench/footprint needs root');
const lab = new BenchLab('footprint');
try {
  const floor = await floorSamples(lab);

  const cfg = lab.config((doc) => {
    if (ESP_UDP !== 0) doc.setIn(['underlay', 'espUdpPort'], ESP_UDP);
    if (WORKERS !== undefined) doc.setIn(['switch', 'workers'], WORKERS);
  });
  await lab.up(NODE_ARGS);
  const pids = ['h1', 'h2'].map((h) => readState(cfg)?.switches.find((s) => s.host === h)?.pid);
  if (pids.some((p) => p === undefined)) throw new Error('the lab state names no switch for h1 or h2');
  const [h1, h2] = pids as number[];
  const path: Path = {
    key: 'nvi', scope: 'cross', label: 'web1 -> web2', src: `${PREFIX}web1`, dst: `${PREFIX}web2`, dstAddr: cfg.vms.get('web2')!.identityText,
    datapath: [], ifaces: [], udpSockets: [], rawSockets: [],
  };
  await pingTest(path, 2000, 0.002);
  await delay(WAIT_S * 1000);
  const pinged: Pages[][] = [];
  const idle: Pages[][] = [];
  const rtts: number[] = [];
  for (let i = 0; i < COUNT; i++) {
    await delay(GAP_MS);
    pinged.push(await sample([h1!, h2!], async () => {
      rtts.push((await pingTest(path, 1)).meanMs);
    }));
    await delay(GAP_MS);
    idle.push(await sample([h1!, h2!], () => {}));
  }

  const cols: [string, Map<string, number>][] = [
    ['floor wake', medians(floor.wake)], ['floor idle', medians(floor.idle)],
    ['h1 ping', medians(pinged.map((s) => s[0]!))], ['h1 idle', medians(idle.map((s) => s[0]!))],
    ['h2 ping', medians(pinged.map((s) => s[1]!))], ['h2 idle', medians(idle.map((s) => s[1]!))],
  ];
  const out = process.stdout;
  out.write(`\npages (4 KB) touched in ${SETTLE_MS} ms, median of ${COUNT} samples ${GAP_MS} ms apart; ` +
    `lone ping web1 -> web2 (cross host, ESP): median ${median(rtts).toFixed(3)} ms\n`);
  out.write(`${'region'.padEnd(18)}${cols.map(([name]) => name.padStart(12)).join('')}\n`);
  for (const r of [...REGIONS.filter((x) => x !== 'shared libraries'), 'own total', 'shared libraries']) {
    out.write(`${r.padEnd(18)}${cols.map(([, m]) => String(m.get(r)).padStart(12)).join('')}\n`);
  }
  out.write('(shared libraries: a page any process touched counts; left out of the own total)\n\n');
  const at = (name: string): number => cols.find(([n]) => n === name)![1].get('own total')!;
  const floorWake = at('floor wake') - at('floor idle');
  out.write(`one wake of a bare Node process (floor wake - idle): ${floorWake} pages\n`);
  for (const h of ['h1', 'h2']) {
    const traversal = (at(`${h} ping`) - at(`${h} idle`)) / 2;
    out.write(`one traversal of ${h} ((ping - idle) / 2): ${traversal} pages, ${(traversal / floorWake).toFixed(2)}x the floor\n`);
  }
  out.write('\nthis machine: ns per read of a chain of 1,000 reads (one cache line each), some time after the walk before it\n');
  for (const [label, span] of [['on 1,000 pages (64 MB)', 64], ['within 2 MB (512 pages)', 2]] as const) {
    out.write(`  ${label.padEnd(26)} 2 ms after: ${(await walk(span, 2)).toFixed(0).padStart(4)}   50 ms after: ${(await walk(span, 50)).toFixed(0).padStart(4)}\n`);
  }
} finally {
  await lab.cleanup();
}
