// Churn soak (issue 9): VMs attached, detached and migrated every few seconds, rekeys forced
// low, traffic between all pairs, for --minutes (default 30); then the switches' memory and
// state are compared with what they were before the churn.
//
//   npx tsc -p . && node dist/bench/churn.js [--minutes 30] [--every 3] [--heap-dir DIR]  (root)
//
// --heap-dir: the switches write a V8 heap snapshot into DIR before the churn and after it
// (compare them with dist/bench/heap-compare.js).
// The lab (prefix nvi-b-, embedded store, a copy of the pki), with switch.esp.rekey.packets
// 5000 and rekey.seconds 20. Traffic, the whole time: web1, web2 and web3 ping each other and
// db1 every 50 ms, sensor1 sends vault1 a datagram every 50 ms. Every --every seconds one
// action, in turn: web2 migrates to the other host; web3 is detached and attached again; db1
// migrates; web1 migrates. Every 30 s the switches' RSS is sampled.
// Before the churn (after 20 s of traffic) and after it (the VMs back where they started, the
// grace times run out, traffic alone) the gauges a leak would grow are watched for 40 s each:
// cables, inbound SAs, pairs with a current SA, keys in the cipher: pairs must be the same;
// cables (unplugged ones come and go with the traffic they refuse), SAs and keys (which rekeys
// make come and go) no higher than before.
// Reported: RSS and V8 heap in use at start and end and their slopes (least squares, MB per
// hour, over the whole run and its second half), the gauges before
// and after, actions done and failed, whether both switch processes lived throughout, and the
// warnings and errors in their logs by event.

import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { labAttach, labDetach, labMigrate, readState } from '../src/lab/lab.js';
import type { CableInfo } from '../src/switch/cable-info.js';
import { controlRequest } from '../src/switch/control.js';
import { controlPath } from '../src/switch/paths.js';
import { BenchLab, PREFIX, REPO } from './lab/bench-lab.js';
import { benchOptions, integer, refuse } from './options.js';

const NET_PY = join(REPO, 'test', 'e2e', 'net.py');
const v = benchOptions({ minutes: { type: 'string' }, every: { type: 'string' }, 'heap-dir': { type: 'string' } });
const HEAP_DIR = v['heap-dir'];
const MINUTES = integer('minutes', v.minutes ?? '30');
const EVERY = integer('every', v.every ?? '3');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Rekeys every 20 s, SAs kept 30 s after one: a window of 40 s sees every phase. */
const WINDOW_MS = 40_000;
/** After the churn: the moved-away cables' grace (esp.grace, 30 s) and the unplugged cables' TTL (10 s) run out. */
const SETTLE_MS = 45_000;

const lab = new BenchLab('churn');

function background(vm: string, cmd: string, args: string[]): void {
  const c = spawn('ip', ['netns', 'exec', `${PREFIX}${vm}`, cmd, ...args], { stdio: 'ignore' });
  lab.children.push(c);
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** What a leak would grow: cables, inbound SAs (current and in grace), pairs with a current SA, cipher keys. */
const GAUGES = ['cables', 'sas', 'pairs', 'keys'] as const;
type Range = Record<(typeof GAUGES)[number], [number, number]>;
async function gauges(c: CloudConfig, host: string): Promise<Record<(typeof GAUGES)[number], number>> {
  const s = (await controlRequest(controlPath(c, host), { cmd: 'stats' })) as { cables: { egress: number; ingress: number; inboundSas: number; inboundPairs: number; cipherKeys: number } };
  return { cables: s.cables.egress + s.cables.ingress, sas: s.cables.inboundSas, pairs: s.cables.inboundPairs, keys: s.cables.cipherKeys };
}

/** The gauges' min and max over `ms`, sampled every 2 s: rekeys make SAs and keys come and go. */
async function window(c: CloudConfig, host: string, ms: number): Promise<Range> {
  const r = Object.fromEntries(GAUGES.map((g) => [g, [Infinity, -Infinity]])) as Range;
  for (const end = Date.now() + ms; Date.now() < end; await sleep(2000)) {
    const now = await gauges(c, host);
    for (const g of GAUGES) r[g] = [Math.min(r[g][0], now[g]), Math.max(r[g][1], now[g])];
  }
  return r;
}
/** Rekeys come in other phases after the churn, so the lows of SAs and keys may differ; their highs may not grow. */
/** Unplugged cables (a negative cache, 10 s) come and go with the traffic they refuse, so cables may not grow either. */
function leakFree(before: Range, after: Range): boolean {
  const same = before.pairs[0] === after.pairs[0] && before.pairs[1] === after.pairs[1];
  return same && after.cables[1] <= before.cables[1] && after.sas[1] <= before.sas[1] && after.keys[1] <= before.keys[1];
}

/** The switch's V8 heap in use (stats.memory), MB. */
async function heapMb(c: CloudConfig, host: string): Promise<number> {
  const s = (await controlRequest(controlPath(c, host), { cmd: 'stats' })) as { memory: { heapUsed: number } };
  return s.memory.heapUsed / 2 ** 20;
}

/** A host's cables as `direction src -> dst peer state rule`, sorted. */
async function cableLines(c: CloudConfig, host: string): Promise<string[]> {
  const list = (await controlRequest(controlPath(c, host), { cmd: 'cables' })) as CableInfo[];
  return list.map((x) => `${x.direction} ${x.srcVm ?? x.src} -> ${x.dstVm ?? x.dst} at ${x.peer} ${x.state} ${x.rule}`).sort();
}
const show = (r: Range): string => GAUGES.map((g) => `${g} ${r[g][0] === r[g][1] ? r[g][0] : `${r[g][0]}..${r[g][1]}`}`).join(', ');

/** Ask each switch for a heap snapshot (SIGUSR2, --heapsnapshot-signal) and wait until it is written. */
async function heapSnapshots(pids: readonly { pid: number }[]): Promise<void> {
  if (!HEAP_DIR) return;
  const count = (): number => readdirSync(HEAP_DIR).filter((f) => f.endsWith('.heapsnapshot')).length;
  const before = count();
  for (const p of pids) process.kill(p.pid, 'SIGUSR2');
  for (let t = 0; t < 120 && count() < before + pids.length; t++) await sleep(1000);
  await sleep(5000); // the last one finishes writing
}

function slope(points: [number, number][]): number {
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const num = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  const den = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return den === 0 ? 0 : num / den;
}


try {
  if (process.getuid?.() !== 0) refuse('bench/churn needs root');
  if (HEAP_DIR) {
    mkdirSync(HEAP_DIR, { recursive: true });
    process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${HEAP_DIR}`.trim(); // the switches inherit it
  }
  lab.config((doc) => {
    doc.setIn(['switch', 'esp', 'rekey', 'packets'], 5000);
    doc.setIn(['switch', 'esp', 'rekey', 'seconds'], 20);
  });
  const cfg = await lab.up();
  const pids = readState(cfg)!.switches.map((s) => ({ host: s.host, pid: s.pid, log: s.log }));
  const id = (vm: string): string => loadConfig(cfg.file).vms.get(vm)!.identityText;
  const webs = ['web1', 'web2', 'web3'];
  for (const a of webs) for (const b of [...webs, 'db1']) if (a !== b) background(a, 'ping', ['-6', '-q', '-i', '0.05', id(b)]);
  background('sensor1', 'python3', [NET_PY, 'probe', id('vault1'), '514', '50', String(MINUTES * 60 + 600)]);
  await sleep(20_000);
  const start: Record<string, Range> = {};
  const startCables: Record<string, string[]> = {};
  for (const { host } of pids) {
    start[host] = await window(cfg, host, WINDOW_MS);
    startCables[host] = await cableLines(cfg, host);
  }
  await heapSnapshots(pids);
  const samples: Record<string, [number, number][]> = Object.fromEntries(pids.map((p) => [p.host, [[0, rssMb(p.pid)]]]));
  const heap: Record<string, [number, number][]> = {};
  for (const p of pids) heap[p.host] = [[0, await heapMb(cfg, p.host)]];
  const t0 = Date.now();
  const done: Record<string, number> = {};
  const failed: Record<string, number> = {};
  let lastSample = t0;
  for (let k = 0; Date.now() - t0 < MINUTES * 60_000; k++) {
    const now = loadConfig(cfg.file);
    const other = (vm: string): string => (now.vms.get(vm)!.host === 'h1' ? 'h2' : 'h1');
    const actions: [string, () => Promise<unknown>][] = [
      ['migrate web2', () => labMigrate(now, 'web2', other('web2'))],
      ['detach+attach web3', async () => {
        await labDetach(now, 'web3', () => {});
        await labAttach(loadConfig(cfg.file), 'web3', () => {});
        for (const b of [...webs, 'db1']) if (b !== 'web3') background('web3', 'ping', ['-6', '-q', '-i', '0.05', id(b)]);
      }],
      ['migrate db1', () => labMigrate(now, 'db1', other('db1'))],
      ['migrate web1', () => labMigrate(now, 'web1', other('web1'))],
    ];
    const [name, act] = actions[k % actions.length];
    try {
      await act();
      done[name] = (done[name] ?? 0) + 1;
    } catch (e) {
      failed[name] = (failed[name] ?? 0) + 1;
      process.stderr.write(`churn: ${name}: ${(e as Error).message}\n`);
    }
    if (Date.now() - lastSample >= 30_000) {
      lastSample = Date.now();
      for (const p of pids) {
        samples[p.host].push([(Date.now() - t0) / 3_600_000, rssMb(p.pid)]);
        heap[p.host].push([(Date.now() - t0) / 3_600_000, await heapMb(cfg, p.host)]);
      }
    }
    await sleep(EVERY * 1000);
  }
  // Back where they started, then traffic alone.
  for (const vm of ['web1', 'web2', 'db1']) {
    const where = loadConfig(cfg.file).vms.get(vm)!.host;
    const home = vm === 'web1' ? 'h1' : 'h2';
    if (where !== home) await labMigrate(loadConfig(cfg.file), vm, home);
  }
  await sleep(SETTLE_MS);
  const end: Record<string, Range> = {};
  const endCables: Record<string, string[]> = {};
  for (const { host } of pids) {
    end[host] = await window(cfg, host, WINDOW_MS);
    endCables[host] = await cableLines(cfg, host);
  }
  await heapSnapshots(pids);
  const lines: string[] = [`churn soak: ${MINUTES} min, one action every ${EVERY} s; done ${JSON.stringify(done)}, failed ${JSON.stringify(failed)}`];
  for (const p of pids) {
    const alive = (() => {
      try {
        process.kill(p.pid, 0);
        return true;
      } catch {
        return false;
      }
    })();
    const s = samples[p.host];
    const h = heap[p.host];
    const late = (xs: [number, number][]): string => slope(xs.slice(Math.floor(xs.length / 2))).toFixed(2);
    lines.push(`  ${p.host}: switch ${alive ? 'alive throughout (same pid)' : 'GONE'}; RSS ${s[0][1].toFixed(1)} MB at start, ${rssMb(p.pid).toFixed(1)} MB at the end, ` +
      `slope ${slope(s).toFixed(2)} MB/h (second half ${late(s)}) over ${s.length} samples; V8 heap used ${h[0][1].toFixed(1)} -> ${(await heapMb(cfg, p.host)).toFixed(1)} MB, ` +
      `slope ${slope(h).toFixed(2)} MB/h (second half ${late(h)}); ` +
      `${leakFree(start[p.host], end[p.host]) ? 'no leak' : 'A LEAK'} (pairs the same, cables, SAs and keys no higher than before):\n` +
      `    before: ${show(start[p.host])}\n    after:  ${show(end[p.host])}`);
    const gone = startCables[p.host].filter((l) => !endCables[p.host].includes(l));
    const added = endCables[p.host].filter((l) => !startCables[p.host].includes(l));
    if (gone.length + added.length > 0) lines.push(`    cables only before: ${gone.join('; ') || '-'}\n    cables only after: ${added.join('; ') || '-'}`);
    const log = readFileSync(p.log, 'utf8').split('\n').filter((l) => l.includes('"level":"warn"') || l.includes('"level":"error"'));
    const byEvent: Record<string, number> = {};
    for (const l of log) {
      const m = /"event":"([^"]+)"/.exec(l);
      byEvent[m?.[1] ?? 'other'] = (byEvent[m?.[1] ?? 'other'] ?? 0) + 1;
    }
    lines.push(`    warnings and errors by event: ${JSON.stringify(byEvent)}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await lab.cleanup();
}
