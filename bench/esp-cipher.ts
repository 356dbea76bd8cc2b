// ESP AES-GCM throughput: the native cipher (one C call per batch, key schedule kept)
// against node:crypto (a cipher object per packet), for batches of 256 packets.
//
//   node dist/bench/esp-cipher.js [--runs 5] [--ms 300]
//
// Each run seals then opens the same batch over and over for --ms milliseconds; the table
// shows the median of the runs in packets per second and the native/node ratio.

import { BATCH_MAX } from '../src/dataplane/batch.js';
import { EspJobs, NodeEspCipher, type EspAlgorithm, type EspCipher } from '../src/esp/esp-cipher.js';
import { ESP_HLEN, ESP_ICV_LEN } from '../src/wire/esp.js';
import { NativeEspCipher } from '../src/esp/native-esp-cipher.js';
import { benchOptions, integer } from './options.js';

const SIZES = [64, 512, 1400];
const ALG: EspAlgorithm = 'aes-128-gcm';

const opt = benchOptions({ runs: { type: 'string', default: '5' }, ms: { type: 'string', default: '300' } });
const RUNS = integer('runs', opt.runs);
const MS = integer('ms', opt.ms);

interface Result {
  seal: number;
  open: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** One run: packets per second for seal and for open of `size`-byte payloads. */
function run(cipher: EspCipher, size: number): Result {
  const slot = ESP_HLEN + size + ESP_ICV_LEN;
  const buf = Buffer.alloc(BATCH_MAX * slot);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 131) & 0xff;
  const key = cipher.addKey(ALG, Buffer.alloc(16, 0x42), Buffer.from([1, 2, 3, 4]));
  const jobs = new EspJobs(BATCH_MAX);
  for (let j = 0; j < BATCH_MAX; j++) jobs.add(key, j * slot, size, 0, j);
  let sealNs = 0n;
  let openNs = 0n;
  let batches = 0;
  const end = process.hrtime.bigint() + BigInt(MS) * 1_000_000n;
  while (process.hrtime.bigint() < end) {
    const t0 = process.hrtime.bigint();
    cipher.seal(buf, jobs);
    const t1 = process.hrtime.bigint();
    cipher.open(buf, jobs);
    const t2 = process.hrtime.bigint();
    sealNs += t1 - t0;
    openNs += t2 - t1;
    batches++;
  }
  for (let j = 0; j < BATCH_MAX; j++) if (jobs.ok[j] !== 1) throw new Error(`${cipher.name}: job ${j} did not verify`);
  cipher.removeKey(key);
  const packets = batches * BATCH_MAX;
  return { seal: (packets * 1e9) / Number(sealNs), open: (packets * 1e9) / Number(openNs) };
}

function measure(make: () => EspCipher, size: number): Result {
  run(make(), size); // warm-up
  const rs: Result[] = [];
  for (let r = 0; r < RUNS; r++) rs.push(run(make(), size));
  return { seal: median(rs.map((r) => r.seal)), open: median(rs.map((r) => r.open)) };
}

const kpps = (x: number): string => `${(x / 1000).toFixed(0)}k`;
const gbps = (pps: number, size: number): string => ((pps * size * 8) / 1e9).toFixed(2);

const rows: string[][] = [[
  'payload', 'node seal/s', 'native seal/s', 'ratio', 'node open/s', 'native open/s', 'ratio', 'native seal Gbit/s',
]];
for (const size of SIZES) {
  const node = measure(() => new NodeEspCipher(), size);
  const native = measure(() => new NativeEspCipher(), size);
  rows.push([
    `${size} B`, kpps(node.seal), kpps(native.seal), `${(native.seal / node.seal).toFixed(1)}x`,
    kpps(node.open), kpps(native.open), `${(native.open / node.open).toFixed(1)}x`, gbps(native.seal, size),
  ]);
}

const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
console.log(`ESP ${ALG}, batches of ${BATCH_MAX}, median of ${RUNS} runs of ${MS} ms (packets per second)`);
for (const [i, r] of rows.entries()) {
  console.log(r.map((x, c) => (c === 0 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join('  '));
  if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
}
