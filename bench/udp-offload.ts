// Small UDP datagrams into a guest with and without UDP super-frames on its TAP
// (`switch.offloadUdp`), side by side in one run.
//
//   npx tsc -p . && node dist/bench/udp-offload.js [--runs 3] [--seconds 5] [--sizes 64,512]   (root)
//
// Each run, for offloadUdp off and on in turn: the lab up, then web1 -> web2 (cross host,
// ESP) with iperf3 -u -b 0 -l SIZE for each size (bench/lab/measure.ts, 1 s of warm-up not
// counted): datagrams sent and received a second, the switches' CPU, and the receive-buffer
// overflows of web2's socket; then TCP (iperf3, one stream), which must not change. Figures:
// medians over the runs, and the ratio on / off.

import { readState } from '../src/lab/lab.js';
import { BenchLab, PREFIX } from './lab/bench-lab.js';
import { reachable, tcpTest, udpTest, type Path, type Timing } from './lab/measure.js';
import { median } from './lab/report.js';
import { benchOptions, integer } from './options.js';

const v = benchOptions({ runs: { type: 'string' }, seconds: { type: 'string' }, sizes: { type: 'string' } });
const RUNS = integer('runs', v.runs ?? '3');
const TIMING: Timing = { seconds: integer('seconds', v.seconds ?? '5'), omit: 1 };
const SIZES = (v.sizes ?? '64,512').split(',').map((x) => integer('sizes', x));

interface Figures { rx: number; tx: number; cpu: number; rcvbuf: number }
const udp = new Map<string, Figures[]>();
const tcp = new Map<string, number[]>();
const key = (on: boolean, size: number): string => `${on ? 'on' : 'off'} ${size}`;

const lab = new BenchLab('udp-offload');
try {
  for (let run = 1; run <= RUNS; run++) {
    for (const on of [false, true]) {
      const cfg = lab.config((doc) => doc.setIn(['switch', 'offloadUdp'], on));
      await lab.up();
      const pids = readState(cfg)?.switches ?? [];
      const path: Path = {
        key: 'nvi', scope: 'cross', label: `offloadUdp ${on ? 'on' : 'off'}`, src: `${PREFIX}web1`, dst: `${PREFIX}web2`,
        dstAddr: cfg.vms.get('web2')!.identityText, datapath: pids.map((s) => ({ label: s.host, pid: s.pid })),
        ifaces: [], udpSockets: [{ ns: `${PREFIX}web2`, label: 'web2', family: 6 }], rawSockets: [],
      };
      await reachable(path, 10_000);
      for (const size of SIZES) {
        const r = await udpTest(path, TIMING, size);
        const cpu = pids.reduce((s, p) => s + (r.cpu.procs[p.host]?.pct ?? 0), 0);
        const f = { rx: r.rxPps, tx: r.txPps, cpu, rcvbuf: r.drops['web2 UDP6 RcvbufErrors'] ?? 0 };
        udp.set(key(on, size), [...(udp.get(key(on, size)) ?? []), f]);
        process.stdout.write(`run ${run} offloadUdp ${on ? 'on ' : 'off'} ${size} B: received ${(f.rx / 1000).toFixed(1)}k/s, ` +
          `sent ${(f.tx / 1000).toFixed(1)}k/s, switches ${f.cpu.toFixed(0)}% of a core, web2 socket overflows ${(f.rcvbuf / 1000).toFixed(1)}k/s\n`);
      }
      const t = await tcpTest(path, TIMING);
      tcp.set(on ? 'on' : 'off', [...(tcp.get(on ? 'on' : 'off') ?? []), t.mbps]);
      process.stdout.write(`run ${run} offloadUdp ${on ? 'on ' : 'off'} TCP ${t.mbps.toFixed(0)} Mbit/s\n`);
      await lab.down();
    }
  }
  process.stdout.write(`\nweb1 -> web2 (cross host, ESP), iperf3 ${TIMING.seconds} s, medians of ${RUNS} runs\n`);
  process.stdout.write('datagram   offloadUdp   received/s   sent/s   switches\' CPU   web2 overflows/s\n');
  for (const size of SIZES) {
    for (const on of [false, true]) {
      const fs = udp.get(key(on, size))!;
      process.stdout.write(`${String(size).padStart(5)} B   ${on ? 'on ' : 'off'}          ${(median(fs.map((f) => f.rx)) / 1000).toFixed(1).padStart(7)}k ` +
        `${(median(fs.map((f) => f.tx)) / 1000).toFixed(1).padStart(7)}k   ${median(fs.map((f) => f.cpu)).toFixed(0).padStart(5)}%         ` +
        `${(median(fs.map((f) => f.rcvbuf)) / 1000).toFixed(1)}k\n`);
    }
    const ratio = median(udp.get(key(true, size))!.map((f) => f.rx)) / median(udp.get(key(false, size))!.map((f) => f.rx));
    process.stdout.write(`${String(size).padStart(5)} B   received on / off: ${ratio.toFixed(2)}x\n`);
  }
  process.stdout.write(`TCP: off ${median(tcp.get('off')!).toFixed(0)} Mbit/s, on ${median(tcp.get('on')!).toFixed(0)} Mbit/s\n`);
} finally {
  await lab.cleanup();
}
