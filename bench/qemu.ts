// QEMU benchmark (issue 10): guest-to-guest TCP and UDP-64 across the two hosts for each port
// kind a hypervisor uses, next to the namespace lab's own cross-host path, in one run.
//
//   npx tsc -p . && node dist/bench/qemu.js [--runs 3] [--seconds 5]        (root)
//
// 1. The lab (prefix nvi-b-) with four more VMs of tenant blue's web group: qt1 (h1) and qt2
//    (h2) on TAPs QEMU opens (kind qemu-tap), qs1 (h1) and qs2 (h2) on stream sockets.
// 2. Four guests of scripts/guest-image.sh booted with the arguments `vm qemu-args` prints
//    (KVM where it boots here, TCG otherwise); each configures itself by DHCPv6 and RA.
// 3. N runs; each run visits every path in turn (noise falls on all alike):
//      lab       web1 -> web2, namespaces on switch-owned TAPs (iperf3 on the host)
//      qemu-tap  qt1 -> qt2, iperf3 inside the guests
//      stream    qs1 -> qs2, iperf3 inside the guests
//    TCP: iperf3 -t S after -O 1 s; UDP: -u -l 64 -b 0, packets/s at the receiver. CPU of the
//    two switches (and of the guests' QEMU processes) in the measured window.
// 4. The report: median [min-max] per path and the ratio to the lab's path. The lab, the
//    guests and the temp dir are removed at the end, also on failure or SIGINT.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import type { CloudConfig } from '../src/config/config.js';
import { readState } from '../src/lab/lab.js';
import { accelerator, guestImage, QemuGuest } from '../src/lab/qemu-guest.js';
import { controlRequest } from '../src/switch/control.js';
import { controlPath } from '../src/switch/paths.js';
import { qemuPort } from '../src/switch/qemu-args.js';
import { BenchLab, BINARY, PREFIX, REPO } from './lab/bench-lab.js';
import { quantile, reachable, tcpTest, udpTest, type Path, type Timing } from './lab/measure.js';
import { CpuWatch, delay, sh, type CpuUse } from './lab/proc.js';
import { benchOptions, integer, refuse } from './options.js';

const UDP_LEN = 64;
const GUESTS = [
  ['qt1', 'h1', 'qemu-tap'], ['qt2', 'h2', 'qemu-tap'], ['qs1', 'h1', 'stream'], ['qs2', 'h2', 'stream'],
] as const;

const v = benchOptions({ runs: { type: 'string' }, seconds: { type: 'string' } });
const RUNS = integer('runs', v.runs ?? '3');
const TIMING: Timing = { seconds: integer('seconds', v.seconds ?? '5'), omit: 1 };

const lab = new BenchLab('qemu');
const guests = new Map<string, QemuGuest>();
lab.atEnd(async () => {
  for (const g of guests.values()) await g.stop();
});

/** The lab's config with the four guests' VMs made by `vm create`, in tenant blue's web group. */
function labConfig(): CloudConfig {
  lab.config();
  for (const [vm, host, kind] of GUESTS) sh(process.execPath, [BINARY, 'vm', 'create', vm, '--tenant', 'blue', '--host', host, '--port', kind, '-c', lab.file]);
  return lab.config((doc) => {
    const created = parseDocument(readFileSync(lab.file, 'utf8'));
    doc.setIn(['tenants'], created.get('tenants'));
    const web = doc.getIn(['tenants', 'blue', 'groups', 'web']) as { add(v: unknown): void };
    for (const [vm] of GUESTS) web.add(vm);
  });
}

interface Figures {
  tcpMbps: number[];
  udpKpps: number[];
  /** What the sender sent, kpps (the rest was lost on the way). */
  udpSentKpps: number[];
  /** Both switches together, % of one core, in the TCP window. */
  switchCpu: number[];
  /** The two QEMU processes together, % of one core, in the TCP window (guests only). */
  qemuCpu: number[];
  /** Where UDP datagrams were lost in the last run: counter -> increase. */
  udpLoss: Record<string, number>;
}

interface HostStats {
  egress: { drops: Record<string, number> };
  ingress: { drops: Record<string, number> };
  ports: { vm?: string; name: string; txRefused: number; txBusy: number }[];
  underlay?: { rxErrors: number; txRefused: number; txBusy: number };
}

/** Every counter of a lost packet on the two hosts: the switches' drop reasons, refused and busy port and underlay writes, the raw sockets' receive drops, the guests' TAPs. */
async function lossCounters(c: CloudConfig): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for (const host of ['h1', 'h2']) {
    const s = (await controlRequest(controlPath(c, host), { cmd: 'stats' })) as HostStats;
    for (const pipe of ['egress', 'ingress'] as const) for (const [k, v] of Object.entries(s[pipe].drops)) m.set(`${host} ${pipe} ${k}`, v);
    for (const p of s.ports) {
      m.set(`${host} port ${p.vm ?? p.name} tx refused`, p.txRefused);
      m.set(`${host} port ${p.vm ?? p.name} tx busy`, p.txBusy);
    }
    if (s.underlay) for (const k of ['rxErrors', 'txRefused', 'txBusy'] as const) m.set(`${host} underlay ${k}`, s.underlay[k]);
    const raw = sh('ip', ['netns', 'exec', `${PREFIX}${host}`, 'cat', '/proc/net/raw']).trim().split('\n').slice(1);
    m.set(`${host} raw sockets drops`, raw.reduce((sum, l) => sum + Number(l.trim().split(/\s+/).at(-1)), 0));
  }
  for (const [vm, host, kind] of GUESTS) {
    if (kind !== 'qemu-tap') continue;
    const [link] = JSON.parse(sh('ip', ['-n', `${PREFIX}${host}`, '-j', '-s', 'link', 'show', 'dev', c.vms.get(vm)!.tap])) as { stats64: { rx: { dropped: number }; tx: { dropped: number } } }[];
    m.set(`${host} TAP ${vm} rx_dropped`, link!.stats64.rx.dropped);
    m.set(`${host} TAP ${vm} tx_dropped`, link!.stats64.tx.dropped);
  }
  return m;
}

function increase(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) if (v > (before.get(k) ?? 0)) out[k] = v - (before.get(k) ?? 0);
  return out;
}

function switchPids(c: CloudConfig): Map<string, number> {
  return new Map((readState(c)?.switches ?? []).map((s) => [`${s.host} switch`, s.pid]));
}

function sum(cpu: CpuUse, labels: (l: string) => boolean): number {
  return Object.entries(cpu.procs).filter(([l]) => labels(l)).reduce((a, [, p]) => a + p.pct, 0);
}

/** iperf3 inside guest `from` to guest `to` (whose server runs); the client's JSON and the CPU in the window. */
async function guestIperf(c: CloudConfig, from: string, to: string, extra: string): Promise<{ json: { end: unknown }; cpu: CpuUse }> {
  const g = guests.get(from)!;
  const dst = c.vms.get(to)!.identityText;
  const watch = new CpuWatch(new Map([...switchPids(c), [`${from} qemu`, g.proc.pid!], [`${to} qemu`, guests.get(to)!.proc.pid!]]));
  const mark = setTimeout(() => watch.begin(), TIMING.omit * 1000);
  const r = await g.run(`iperf3 -c ${dst} -t ${TIMING.seconds} -O ${TIMING.omit} -J ${extra} > /tmp/iperf.json 2>&1`, (TIMING.seconds + TIMING.omit + 30) * 1000);
  clearTimeout(mark);
  const cpu = watch.end();
  const text = await g.sh('cat /tmp/iperf.json');
  let json: { end: unknown; error?: string };
  try {
    json = JSON.parse(text) as { end: unknown; error?: string };
  } catch {
    throw new Error(`iperf3 in ${from}: exit ${r.code}, no JSON: ${text.slice(0, 300)}`);
  }
  if (r.code !== 0 || json.error) throw new Error(`iperf3 in ${from} -> ${to}: ${json.error ?? `exit ${r.code}`}`);
  return { json, cpu };
}

async function guestPath(c: CloudConfig, from: string, to: string, f: Figures): Promise<void> {
  const tcp = await guestIperf(c, from, to, '');
  f.tcpMbps.push((tcp.json.end as { sum_received: { bits_per_second: number } }).sum_received.bits_per_second / 1e6);
  f.switchCpu.push(sum(tcp.cpu, (l) => l.endsWith('switch')));
  f.qemuCpu.push(sum(tcp.cpu, (l) => l.endsWith('qemu')));
  const before = await lossCounters(c);
  const udp = await guestIperf(c, from, to, `-u -l ${UDP_LEN} -b 0`);
  f.udpLoss = increase(before, await lossCounters(c));
  const end = udp.json.end as { sum_received: { bytes: number; seconds: number }; sum_sent: { packets: number; seconds: number } };
  f.udpKpps.push(end.sum_received.bytes / UDP_LEN / end.sum_received.seconds / 1000);
  f.udpSentKpps.push(end.sum_sent.packets / end.sum_sent.seconds / 1000);
}

async function labPath(c: CloudConfig, f: Figures): Promise<void> {
  const p = namespacePath(c);
  const tcp = await tcpTest(p, TIMING);
  f.tcpMbps.push(tcp.mbps);
  f.switchCpu.push(sum(tcp.cpu, (l) => l.endsWith('switch')));
  const before = await lossCounters(c);
  const udp = await udpTest(p, TIMING, UDP_LEN);
  f.udpLoss = increase(before, await lossCounters(c));
  f.udpKpps.push(udp.rxPps / 1000);
  f.udpSentKpps.push(udp.txPps / 1000);
}

function namespacePath(c: CloudConfig): Path {
  return {
    key: 'nvi', scope: 'cross', label: 'web1 -> web2', src: `${PREFIX}web1`, dst: `${PREFIX}web2`,
    dstAddr: c.vms.get('web2')!.identityText,
    datapath: [...switchPids(c)].map(([label, pid]) => ({ label, pid })),
    ifaces: [], udpSockets: [], rawSockets: [],
  };
}

function figure(xs: number[], digits: number): string {
  if (xs.length === 0) return '-';
  const s = [...xs].sort((a, b) => a - b);
  return `${quantile(s, 0.5).toFixed(digits)} [${s[0].toFixed(digits)}-${s[s.length - 1].toFixed(digits)}]`;
}

try {
  if (process.getuid?.() !== 0) refuse('bench/qemu needs root');
  const c = labConfig();
  await lab.up();
  const image = guestImage(REPO);
  const accel = await accelerator(image, join(REPO, 'build', 'guest'));
  for (const [vm, host] of GUESTS) {
    const netns = `${PREFIX}${host}`;
    guests.set(vm, QemuGuest.start({ name: vm, image, accel, net: qemuPort(c, c.vms.get(vm)!, host).args, dir: join(lab.dir, 'qemu'), netns, memoryMb: 512 }));
  }
  const boots = [];
  for (const [vm] of GUESTS) boots.push(await guests.get(vm)!.booted(180_000));
  for (const [vm] of GUESTS) {
    const got = await guests.get(vm)!.address(90_000);
    if (got !== c.vms.get(vm)!.identityText) throw new Error(`${vm}: DHCPv6 gave ${got}, its identity is ${c.vms.get(vm)!.identityText}`);
  }
  for (const vm of ['qt2', 'qs2']) await guests.get(vm)!.sh('iperf3 -s -D');
  // Plug the cables before measuring.
  await reachable(namespacePath(c), 10_000);
  for (const [from, to] of [['qt1', 'qt2'], ['qs1', 'qs2']]) await guests.get(from)!.sh(`ping -6 -c 3 -W 2 ${c.vms.get(to)!.identityText} >/dev/null`, 30_000);
  process.stdout.write(`qemu ${accel}, 4 guests of 512 MB booted to a shell in ${boots.join(' / ')} ms; ${RUNS} runs of ${TIMING.seconds} s\n`);

  const results = new Map<string, Figures>([['lab', newFigures()], ['qemu-tap', newFigures()], ['stream', newFigures()]]);
  for (let run = 1; run <= RUNS; run++) {
    await labPath(c, results.get('lab')!);
    await guestPath(c, 'qt1', 'qt2', results.get('qemu-tap')!);
    await guestPath(c, 'qs1', 'qs2', results.get('stream')!);
    process.stdout.write(`  run ${run}: ${[...results].map(([k, f]) => `${k} ${f.tcpMbps.at(-1)!.toFixed(0)} Mbit/s ${f.udpKpps.at(-1)!.toFixed(1)} kpps`).join(', ')}\n`);
    await delay(500);
  }
  const base = results.get('lab')!;
  const med = (xs: number[]): number => quantile([...xs].sort((a, b) => a - b), 0.5);
  process.stdout.write(`\ncross-host, guest to guest, median [min-max] of ${RUNS}:\n`);
  process.stdout.write(`  path       TCP Mbit/s            x lab   UDP-64 kpps received  x lab   (sent)      switches CPU %   QEMU CPU %\n`);
  for (const [k, f] of results) {
    process.stdout.write(`  ${k.padEnd(10)} ${figure(f.tcpMbps, 0).padEnd(21)} ${(med(f.tcpMbps) / med(base.tcpMbps)).toFixed(2).padEnd(7)} ` +
      `${figure(f.udpKpps, 1).padEnd(21)} ${(med(f.udpKpps) / med(base.udpKpps)).toFixed(2).padEnd(7)} ${med(f.udpSentKpps).toFixed(1).padEnd(11)} ` +
      `${figure(f.switchCpu, 0).padEnd(16)} ${figure(f.qemuCpu, 0)}\n`);
  }
  process.stdout.write(`\nUDP-64, the last run: the counters of lost datagrams that grew (what none of them shows was lost in the receiving QEMU, guest or iperf3 socket)\n`);
  for (const [k, f] of results) process.stdout.write(`  ${k.padEnd(10)} ${JSON.stringify(f.udpLoss)}\n`);
} finally {
  await lab.cleanup();
}

function newFigures(): Figures {
  return { tcpMbps: [], udpKpps: [], udpSentKpps: [], switchCpu: [], qemuCpu: [], udpLoss: {} };
}
