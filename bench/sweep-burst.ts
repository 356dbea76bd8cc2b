// The sweep of one cable cache when a burst of cables ends together: --cables cables made at
// once, all but one in 1000 ending at the same time, then removeExpired called as Host.sweep
// calls it (SWEEP_SLOTS slots a call) until only the survivors are left, with the removal
// budget (SWEEP_REMOVALS a call) and without it. Reports the calls, their median and slowest
// times (the pause one sweep adds to the event loop), the slots before and after, and the
// table rebuilds on the way (the cache shrinks after a peak).
//
//   node dist/bench/sweep-burst.js [--cables 1000000] [--runs 3]

import { performance } from 'node:perf_hooks';
import { Cable, CableDirection } from '../src/dataplane/cable.js';
import { CableCache } from '../src/dataplane/cable-cache.js';
import { Drop } from '../src/base/drops.js';
import { SWEEP_REMOVALS, SWEEP_SLOTS } from '../src/switch/host.js';
import { benchOptions, integer } from './options.js';

const o = benchOptions({ cables: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '3' } });
const CABLES = integer('cables', o.cables);
const RUNS = integer('runs', o.runs);

function identity(n: number): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0xfd;
  b.writeUInt32BE(n, 12);
  return b;
}

/** One run: the burst, then sweeps until the survivors are left. */
function run(maxRemovals: number): { calls: number; median: number; slowest: number; slotsBefore: number; slotsAfter: number; rebuilds: string[] } {
  const cache = new CableCache(CABLES);
  for (let k = 0; k < CABLES; k++) {
    const s = identity(k);
    const d = identity(k + 1);
    // Ten local VMs to many peers: the identity index as a host has it.
    const c = new Cable(CableDirection.Egress, s, d, Drop.None, 'bench', null, 0);
    c.lasts(0, Infinity, k % 1000 === 0 ? Infinity : 1000); // swept at 5000
    cache.insert(c);
  }
  const slotsBefore = cache.slotCount;
  const survivors = Math.ceil(CABLES / 1000);
  const times: number[] = [];
  const rebuilds: string[] = [];
  while (cache.size > survivors) {
    const slots = cache.slotCount;
    const t = performance.now();
    cache.removeExpired(5000, () => {}, SWEEP_SLOTS, maxRemovals);
    const ms = performance.now() - t;
    times.push(ms);
    if (cache.slotCount !== slots) rebuilds.push(`${slots} -> ${cache.slotCount} slots in a call of ${ms.toFixed(1)} ms`);
  }
  times.sort((a, b) => a - b);
  return { calls: times.length, median: times[times.length >> 1], slowest: times[times.length - 1], slotsBefore, slotsAfter: cache.slotCount, rebuilds };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
console.log(`a cable cache of ${CABLES} cables, all but 1 in 1000 ending together; sweeps of ${SWEEP_SLOTS} slots; medians of ${RUNS} runs, alternating`);
const results = new Map<string, ReturnType<typeof run>[]>([['no removal budget', []], [`at most ${SWEEP_REMOVALS} a call`, []]]);
for (let r = 0; r < RUNS; r++) {
  results.get('no removal budget')!.push(run(Infinity));
  results.get(`at most ${SWEEP_REMOVALS} a call`)!.push(run(SWEEP_REMOVALS));
}
for (const [name, rs] of results) {
  console.log(`${name}: ${median(rs.map((x) => x.calls))} calls, median ${median(rs.map((x) => x.median)).toFixed(1)} ms, ` +
    `slowest ${median(rs.map((x) => x.slowest)).toFixed(1)} ms; slots ${rs[0].slotsBefore} -> ${rs[0].slotsAfter}`);
  for (const [k, x] of rs.entries()) console.log(`  run ${k + 1}: ${x.rebuilds.join('; ') || 'no rebuild'}`);
}
