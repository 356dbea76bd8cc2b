// What a sleeping process costs on this machine (issue 13, items 3 and 4): a lone packet and
// a first packet each cross several processes that were asleep (the switches, the VMs), and
// the key exchange's first steps run right after a wake-up. Two figures, each after the
// process slept `gap` ms:
//   1. the round trip of a UDP datagram to a process that echoes it (another process on
//      127.0.0.1, so both ends sleep between datagrams);
//   2. an Ed25519 signature (node:crypto, as the key exchange signs), the first one after
//      the sleep and the next one right after it.
//
//   npx tsc -p . && node dist/bench/wake.js [--count 200] [--gaps 0,1,10,30,70]
//
// Gap 0 is the back-to-back baseline. No root, no namespaces: the echo process is this
// script run with --echo PORT, stopped by its PID at the end.

import { fork } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { benchOptions, integer } from './options.js';

const o = benchOptions({ count: { type: 'string' }, gaps: { type: 'string' }, echo: { type: 'string' } });
const COUNT = integer('count', o.count ?? '200');
const GAPS = (o.gaps ?? '0,1,10,30,70').split(',').map((g) => integer('gaps', g, 0));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const elapsedUs = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1000;

function quantiles(us: number[]): string {
  const s = [...us].sort((a, b) => a - b);
  const at = (q: number): string => s[Math.min(s.length - 1, Math.floor(q * s.length))].toFixed(0);
  return `p50 ${at(0.5)} µs, p90 ${at(0.9)} µs`;
}

function bind(port: number): Promise<Socket> {
  const s = createSocket('udp4');
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, '127.0.0.1', () => resolve(s));
  });
}

if (o.echo !== undefined) {
  // The echo end: every datagram goes back where it came from.
  const s = await bind(integer('echo', o.echo));
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  process.send?.('ready');
} else {
  const port = 47_000 + (process.pid % 1000);
  const child = fork(process.argv[1], ['--echo', String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`the echo process exited (${code})`)));
    });
    const s = await bind(0);
    let answered: (() => void) | null = null;
    s.on('message', () => answered?.());
    const roundTrip = async (): Promise<number> => {
      const t0 = process.hrtime.bigint();
      const back = new Promise<void>((r) => (answered = r));
      s.send(Buffer.alloc(64), port, '127.0.0.1');
      let timer: NodeJS.Timeout | undefined;
      const lost = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no echo within 1 s')), 1000)));
      try {
        await Promise.race([back, lost]);
      } finally {
        clearTimeout(timer);
      }
      return elapsedUs(t0);
    };
    for (let k = 0; k < 50; k++) await roundTrip(); // warm up both ends
    const { privateKey } = generateKeyPairSync('ed25519');
    const msg = Buffer.alloc(150, 7);
    for (let k = 0; k < 500; k++) sign(null, msg, privateKey);
    process.stdout.write(`wake-up costs, ${COUNT} samples per gap (the process sleeps \`gap\` ms before each):\n`);
    process.stdout.write('| gap | UDP round trip to a process that slept too | first Ed25519 sign after the sleep | the next sign |\n|---:|:---|:---|:---|\n');
    for (const gap of GAPS) {
      const rtt: number[] = [];
      for (let k = 0; k < COUNT; k++) {
        if (gap > 0) await sleep(gap);
        rtt.push(await roundTrip());
      }
      const first: number[] = [];
      const next: number[] = [];
      for (let k = 0; k < COUNT; k++) {
        await (gap > 0 ? sleep(gap) : Promise.resolve());
        let t0 = process.hrtime.bigint();
        sign(null, msg, privateKey);
        first.push(elapsedUs(t0));
        t0 = process.hrtime.bigint();
        sign(null, msg, privateKey);
        next.push(elapsedUs(t0));
      }
      process.stdout.write(`| ${gap} ms | ${quantiles(rtt)} | ${quantiles(first)} | ${quantiles(next)} |\n`);
    }
    s.close();
  } finally {
    child.kill();
  }
}
