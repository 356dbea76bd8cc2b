// Replay-window memory after a peak: --windows windows made and used, all but --keep of
// them released at random (a flush, a peer gone with its SAs), then ReplayWindow.compact
// called as the sweep calls it (a chunk a call, every 250 ms in the switch) until nothing
// more goes back. Reports the chunks before and after, the calls it took, the time of the
// longest call (the pause one sweep adds) and the process's RSS after a full GC, before and
// after (the chunks' memory is unmapped as V8 frees their backing stores, in the background).
//
//   node --expose-gc dist/bench/window-compact.js [--windows 1000000] [--keep 1000] [--runs 3]

import { performance } from 'node:perf_hooks';
import { ReplayWindow } from '../src/esp/replay-window.js';
import { benchOptions, integer, refuse } from './options.js';

const o = benchOptions({ windows: { type: 'string', default: '1000000' }, keep: { type: 'string', default: '1000' }, runs: { type: 'string', default: '3' } });
const WINDOWS = integer('windows', o.windows);
const KEEP = integer('keep', o.keep, 0);
const RUNS = integer('runs', o.runs);
if (KEEP > WINDOWS) refuse(`--keep ${KEEP} is more than --windows ${WINDOWS}`);
const gc = (globalThis as { gc?: () => void }).gc ?? refuse('run with node --expose-gc');
/** As many chunks as Host.sweep gives back a call (COMPACT_CHUNKS in src/switch/sa-table.ts). */
const PER_CALL = 1;

/** RSS once the GC has freed what it can, and the backing stores it let go of are unmapped. */
async function rssMb(): Promise<number> {
  for (let k = 0; k < 3; k++) {
    gc();
    await new Promise((r) => setTimeout(r, 300));
  }
  return process.memoryUsage().rss / 2 ** 20;
}

let seed = 7;
const rand = (n: number): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed % n;
};

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const rows: { chunksPeak: number; chunksAfter: number; calls: number; longestMs: number; totalMs: number; rssPeak: number; rssAfter: number }[] = [];
for (let run = 0; run < RUNS; run++) {
  let windows = Array.from({ length: WINDOWS }, (_, i) => {
    const w = new ReplayWindow();
    w.accept(0, 32 + (i % 3000)); // a jump over 31 numbers or more, all holes: the window takes its blocks
    return w;
  });
  const chunksPeak = ReplayWindow.stored.chunks;
  const rssPeak = await rssMb();
  for (let i = windows.length - 1; i > 0; i--) {
    const j = rand(i + 1);
    [windows[i], windows[j]] = [windows[j], windows[i]];
  }
  for (const w of windows.slice(KEEP)) w.release();
  windows = windows.slice(0, KEEP);
  let calls = 0;
  let longest = 0;
  const t0 = performance.now();
  for (;;) {
    const t = performance.now();
    const dropped = ReplayWindow.compact(PER_CALL);
    longest = Math.max(longest, performance.now() - t);
    if (dropped === 0) break;
    calls++;
  }
  const totalMs = performance.now() - t0;
  rows.push({ chunksPeak, chunksAfter: ReplayWindow.stored.chunks, calls, longestMs: longest, totalMs, rssPeak, rssAfter: await rssMb() });
  for (const w of windows) w.release();
  ReplayWindow.compact(Infinity);
}
const m = (k: keyof (typeof rows)[number]): number => median(rows.map((r) => r[k]));
console.log(`replay windows: ${WINDOWS} made, ${KEEP} kept, compacted ${PER_CALL} chunks a call; medians of ${RUNS} runs`);
console.log(`chunks (1 MB)     ${m('chunksPeak')} -> ${m('chunksAfter')}`);
console.log(`calls             ${m('calls')} (one a sweep: ${((m('calls') * 250) / 1000).toFixed(0)} s at 250 ms)`);
console.log(`longest call      ${m('longestMs').toFixed(2)} ms; all calls ${m('totalMs').toFixed(0)} ms`);
console.log(`RSS after full GC ${m('rssPeak').toFixed(0)} MB -> ${m('rssAfter').toFixed(0)} MB (each run: ${rows.map((r) => `${r.rssPeak.toFixed(0)} -> ${r.rssAfter.toFixed(0)}`).join(', ')})`);
