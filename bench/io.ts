// TAP read throughput: batch reads driven by uv_poll (TapPort) against the thread-pool
// baseline (fs.createReadStream on a blocking TAP fd, one read per frame through libuv's pool).
//
//   node dist/bench/io.js [--runs 3] [--seconds 2]          (root: makes a namespace)
//
// In a namespace nvi-tn-io-<pid>, a bridge joins two TAPs: the reader's (nvi-tb0) and the
// blaster's (nvi-tb1). A child process writes batches of 256 frames into nvi-tb1 as fast as
// it can (TapPort's native batch write); the bridge floods them to nvi-tb0, where this process
// reads them. Frames the reader does not take in time are dropped by the TAP's queue and
// show in its tx_dropped counter. When the reader drops nothing, the blaster is the limit:
// "frames per CPU-s" (frames read per second of the reader's CPU, all threads) is then the
// fairer comparison.

import { execFileSync, spawn } from 'node:child_process';
import { closeSync, createReadStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BATCH_MAX, Batch, FRAME_OFFSET } from '../src/dataplane/batch.js';
import { TAP_BLOCKING, loadNative, netnsPath } from '../src/native/addon.js';
import { TapPort } from '../src/io/tap.js';
import { benchOptions, integer, refuse } from './options.js';

const NS = `nvi-tn-io-${process.pid}`;
const RX = 'nvi-tb0';
const TX = 'nvi-tb1';
const SIZES = [64, 1400];

// --blast --size N --seconds S: the blaster child's mode, as withBlaster() spawns it.
const opt = benchOptions({
  runs: { type: 'string', default: '3' }, seconds: { type: 'string', default: '2' }, blast: { type: 'boolean' }, size: { type: 'string' },
});

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** An Ethernet frame of `size` bytes: IPv6/UDP to a MAC the bridge never learns, so it floods it to nvi-tb0. */
function frame(size: number): Buffer {
  const f = Buffer.alloc(size);
  Buffer.from('02000000bbbb02000000aaaa86dd', 'hex').copy(f, 0);
  f[14] = 0x60;
  f.writeUInt16BE(size - 54, 18);
  f[20] = 17; // UDP
  f[21] = 64;
  return f;
}

// ---- The blaster (child process, --blast): fd 3 is nvi-tb1; write for `seconds`, print frames/s. ----
function blast(size: number, seconds: number): void {
  const native = loadNative();
  const b = new Batch();
  const f = frame(size);
  for (let i = 0; i < BATCH_MAX; i++) b.push(f, FRAME_OFFSET, 0, 0);
  const idx = Int32Array.from({ length: BATCH_MAX }, (_, i) => i);
  const status = new Int32Array(3);
  let sent = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) sent += native.tapWrite(3, b.data, b.start, b.len, idx, BATCH_MAX, 0, status);
  console.log(JSON.stringify({ sent, perSecond: (sent * 1000) / (performance.now() - t0) }));
}

// ---- The reader (this process). ----
interface Run {
  read: number;
  /** Reader CPU, 1 = one core busy. */
  cpu: number;
  offered: number;
  dropped: number;
}

function txDropped(): number {
  const info = JSON.parse(ip('-n', NS, '-s', '-j', 'link', 'show', RX)) as { stats64: { tx: { dropped: number } } }[];
  return info[0].stats64.tx.dropped;
}

/** Set up the bridge and the blaster TAP, run the blaster, and resolve with its report. */
async function withBlaster(size: number, seconds: number, onStart: () => void): Promise<{ perSecond: number }> {
  ip('-n', NS, 'link', 'set', RX, 'master', 'br0', 'txqueuelen', '10000', 'up');
  const tx = TapPort.open(TX, { netns: NS });
  ip('-n', NS, 'link', 'set', TX, 'master', 'br0', 'up');
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [self, '--blast', '--size', String(size), '--seconds', String(seconds)],
    { stdio: ['ignore', 'pipe', 'inherit', tx.fd] });
  onStart();
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  await new Promise((r) => child.on('exit', r));
  tx.close();
  return JSON.parse(out) as { perSecond: number };
}

/** Counts frames in [first frame, last frame] to get a rate that excludes start-up and drain. */
class Meter {
  frames = 0;
  first = 0;
  last = 0;
  private cpu0: NodeJS.CpuUsage | null = null;
  /** CPU time of this process (all threads) per wall-clock time since the first frame. */
  cpuShare(): number {
    if (this.cpu0 === null) return 0;
    const c = process.cpuUsage(this.cpu0);
    return (c.user + c.system) / 1000 / (performance.now() - this.first);
  }
  add(n: number): void {
    const t = performance.now();
    if (this.frames === 0) {
      this.first = t;
      this.cpu0 = process.cpuUsage();
    }
    this.frames += n;
    this.last = t;
  }
  perSecond(): number {
    return this.last > this.first ? (this.frames * 1000) / (this.last - this.first) : 0;
  }
}

async function runNative(size: number, seconds: number): Promise<Run> {
  const tap = TapPort.open(RX, { netns: NS });
  const b = new Batch();
  const m = new Meter();
  tap.onReadable(() => {
    b.reset();
    m.add(tap.read(b, 0, 0));
  });
  const blaster = await withBlaster(size, seconds, () => {});
  const cpu = m.cpuShare();
  await new Promise((r) => setTimeout(r, 100)); // drain what is queued
  const dropped = txDropped();
  tap.close();
  return { read: m.perSecond(), cpu, offered: blaster.perSecond, dropped };
}

async function runStream(size: number, seconds: number): Promise<Run> {
  const { fd } = loadNative().tapOpen(RX, 0, TAP_BLOCKING, netnsPath(NS), null);
  const m = new Meter();
  const stream = createReadStream('', { fd, highWaterMark: 2048, autoClose: false });
  stream.on('data', () => m.add(1));
  stream.on('error', () => {}); // the device is deleted below to unblock the pool thread
  const blaster = await withBlaster(size, seconds, () => {});
  const cpu = m.cpuShare();
  await new Promise((r) => setTimeout(r, 100));
  const dropped = txDropped();
  stream.pause();
  ip('-n', NS, 'link', 'del', RX); // wakes the blocked read(); then the fd can go
  await new Promise((r) => setTimeout(r, 50));
  closeSync(fd);
  return { read: m.perSecond(), cpu, offered: blaster.perSecond, dropped };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

async function main(runs: number, seconds: number): Promise<void> {
  const cleanup = () => {
    try {
      ip('netns', 'del', NS);
    } catch {
      // gone
    }
  };
  process.on('exit', cleanup);
  cleanup();
  ip('netns', 'add', NS);
  ip('-n', NS, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', NS, 'link', 'set', 'br0', 'up');
  const rows = [['frame', 'reader', 'read frames/s', 'offered frames/s', 'dropped at TAP', 'reader CPU',
    'frames per CPU-s', 'vs stream', 'vs stream per CPU']];
  for (const size of SIZES) {
    const results: Record<string, Run> = {};
    for (const [name, fn] of [['fs.createReadStream', runStream], ['TapPort (uv_poll)', runNative]] as const) {
      const rs: Run[] = [];
      for (let r = 0; r < runs; r++) rs.push(await fn(size, seconds));
      results[name] = { read: median(rs.map((x) => x.read)), cpu: median(rs.map((x) => x.cpu)), offered: median(rs.map((x) => x.offered)),
        dropped: median(rs.map((x) => x.dropped)) };
    }
    const base = results['fs.createReadStream'];
    for (const [name, r] of Object.entries(results)) {
      rows.push([`${size} B`, name, `${(r.read / 1000).toFixed(0)}k`, `${(r.offered / 1000).toFixed(0)}k`,
        String(r.dropped), `${(r.cpu * 100).toFixed(0)}%`, `${(r.read / r.cpu / 1000).toFixed(0)}k`,
        `${(r.read / base.read).toFixed(1)}x`, `${(r.read / r.cpu / (base.read / base.cpu)).toFixed(1)}x`]);
    }
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(`TAP read, ${seconds} s per run, median of ${runs} runs; blaster: batched TAP writes through a bridge`);
  for (const [i, r] of rows.entries()) {
    console.log(r.map((x, c) => (c < 2 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join('  '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

if (opt.blast) blast(integer('size', opt.size ?? refuse('--blast needs --size')), integer('seconds', opt.seconds));
else await main(integer('runs', opt.runs), integer('seconds', opt.seconds));
