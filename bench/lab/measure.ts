// The three tests of the lab bench, run on one path (a source namespace, a destination
// namespace and address, the userspace datapath processes between them):
//
//   tcp    iperf3 -c DST -t S -O W -J [-P 4]       throughput at the receiver, after W s of warm-up
//   udp    iperf3 -c DST -u -l 64 -b 0 -t S -O W   packets/s received and sent
//   ping   ping -6 -c 50 -i 0.01 DST               median and p99 round-trip time
//          ping -6 -c 20 -i 0.2 DST                the same for a packet that comes alone
//
// Around each iperf3 test: CPU of the datapath processes and of both iperf3 processes, sampled
// in the measured window only (after the warm-up), and the deltas of every drop counter on
// the path (interfaces, UDP and raw sockets, the switch's own drop reasons), per second.

import { performance } from 'node:perf_hooks';
import { BenchError, CpuWatch, delay, inNs, sh, start, waitExit, type CpuUse } from './proc.js';

export const IPERF_PORT = 5201;

export interface Path {
  readonly key: 'nvi' | 'wg' | 'ovpn' | 'kernel';
  readonly scope: 'cross' | 'same';
  readonly label: string;
  readonly src: string;
  readonly dst: string;
  readonly dstAddr: string;
  /** Userspace processes that carry the packets (switches, wireguard-go, openvpn); none for the kernel. */
  readonly datapath: readonly { readonly label: string; readonly pid: number }[];
  /** Interfaces whose drop/error counters are watched, in path order. */
  readonly ifaces: readonly { readonly ns: string; readonly dev: string; readonly label: string }[];
  /** Namespaces whose UDP receive-buffer overflows are watched (/proc/net/snmp or snmp6). */
  readonly udpSockets: readonly { readonly ns: string; readonly label: string; readonly family: 4 | 6 }[];
  /** Namespaces whose raw sockets' drops are watched (the switches' ESP sockets). */
  readonly rawSockets: readonly { readonly ns: string; readonly label: string }[];
  /** More counters (the switches' own drop reasons). */
  readonly extra?: () => Promise<Map<string, number>>;
}

export interface Timing {
  readonly seconds: number;
  readonly omit: number;
}

export interface IperfResult {
  readonly cpu: CpuUse;
  /** Counter name -> increase per second over the whole test (warm-up included); only > 0. */
  readonly drops: Record<string, number>;
}

export interface TcpResult extends IperfResult {
  readonly mbps: number;
  readonly retransmits: number;
}

export interface UdpResult extends IperfResult {
  readonly rxPps: number;
  readonly txPps: number;
  /** Datagrams a second that reached the receiver's socket and were refused because its buffer was full. */
  readonly rcvbufPps: number;
}

export interface PingResult {
  readonly meanMs: number;
  readonly medianMs: number;
  readonly p99Ms: number;
  readonly lost: number;
}

/** TCP with `streams` connections at once (iperf3 -P). */
export async function tcpTest(p: Path, t: Timing, streams = 1): Promise<TcpResult> {
  const r = await iperf(p, t, streams > 1 ? ['-P', String(streams)] : []);
  const end = r.json.end as { sum_sent: { retransmits?: number }; sum_received: { bits_per_second: number } };
  return { mbps: end.sum_received.bits_per_second / 1e6, retransmits: end.sum_sent.retransmits ?? 0, cpu: r.cpu, drops: r.drops };
}

export async function udpTest(p: Path, t: Timing, len: number): Promise<UdpResult> {
  const r = await iperf(p, t, ['-u', '-l', String(len), '-b', '0']);
  const end = r.json.end as { sum_sent: { packets: number; seconds: number }; sum_received: { bytes: number; seconds: number } };
  // iperf3 3.12 miscounts lost_packets in the receiver's summary when --omit is used (it
  // keeps the warm-up's sequence numbers); the byte count is right, and each datagram is `len`.
  const receiver = p.udpSockets.find((u) => u.ns === p.dst);
  return {
    rxPps: end.sum_received.bytes / len / end.sum_received.seconds,
    txPps: end.sum_sent.packets / end.sum_sent.seconds,
    rcvbufPps: receiver ? r.drops[rcvbufKey(receiver)] ?? 0 : NaN,
    cpu: r.cpu,
    drops: r.drops,
  };
}

/** `count` pings `intervalS` apart. */
export async function pingTest(p: Path, count: number, intervalS = 0.01): Promise<PingResult> {
  const r = start('ip', ['netns', 'exec', p.src, 'ping', '-6', '-n', '-c', String(count), '-i', String(intervalS), '-W', '1', p.dstAddr]);
  await waitExit(r, count * (intervalS * 1000 + 50) + 5000);
  const rtts = [...r.stdout().matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  if (rtts.length === 0) throw new BenchError(`ping ${p.label}: no reply\n${r.stdout()}${r.stderr()}`);
  return { meanMs: rtts.reduce((s, x) => s + x, 0) / rtts.length, medianMs: quantile(rtts, 0.5), p99Ms: rtts[Math.min(rtts.length, Math.ceil(0.99 * rtts.length)) - 1]!, lost: count - rtts.length };
}

/** Wait until one ping gets through (a cable plugged, a WireGuard handshake done). */
export async function reachable(p: Path, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const r = start('ip', ['netns', 'exec', p.src, 'ping', '-6', '-n', '-c', '1', '-W', '1', p.dstAddr]);
    if ((await waitExit(r, 3000)) === 0) return;
    if (Date.now() > end) throw new BenchError(`${p.key} ${p.label}: ${p.dstAddr} unreachable from ${p.src} after ${ms / 1000} s`);
    await delay(200);
  }
}

async function iperf(p: Path, t: Timing, extra: string[]): Promise<IperfResult & { json: { end: unknown } }> {
  const before = await counters(p);
  const server = start('ip', ['netns', 'exec', p.dst, 'iperf3', '-s', '-1', '-p', String(IPERF_PORT), '--forceflush']);
  for (let i = 0; !server.stdout().includes('Server listening'); i++) {
    if (i > 100) {
      server.kill('SIGKILL');
      throw new BenchError(`iperf3 server in ${p.dst} did not start: ${server.stderr()}`);
    }
    await delay(50);
  }
  const t0 = performance.now();
  const client = start('ip', ['netns', 'exec', p.src, 'iperf3', '-c', p.dstAddr, '-p', String(IPERF_PORT),
    '-t', String(t.seconds), '-O', String(t.omit), '-J', ...extra]);
  const watch = new CpuWatch(new Map([
    ...p.datapath.map((d): [string, number] => [d.label, d.pid]),
    ['iperf3 client', client.pid],
    ['iperf3 server', server.pid],
  ]));
  const mark = setTimeout(() => watch.begin(), t.omit * 1000);
  const code = await waitExit(client, (t.seconds + t.omit + 20) * 1000);
  clearTimeout(mark);
  const cpu = watch.end();
  const wall = (performance.now() - t0) / 1000;
  if ((await waitExit(server, 3000)) === 'timeout') server.kill('SIGKILL');
  const after = await counters(p);
  let json: { end: unknown; error?: string };
  try {
    json = JSON.parse(client.stdout()) as { end: unknown; error?: string };
  } catch {
    throw new BenchError(`iperf3 ${p.key} ${p.label}: exit ${code}, no JSON: ${client.stderr().trim()}`);
  }
  if (code !== 0 || json.error) throw new BenchError(`iperf3 ${p.key} ${p.label}: ${json.error ?? `exit ${code}`}`);
  const drops: Record<string, number> = {};
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d > 0) drops[k] = d / wall;
  }
  return { json, cpu, drops };
}

/** Every drop counter of the path, read now. */
async function counters(p: Path): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for (const i of p.ifaces) {
    const [link] = JSON.parse(sh('ip', ['-n', i.ns, '-j', '-s', 'link', 'show', 'dev', i.dev])) as { stats64: Stats64 }[];
    const s = link!.stats64;
    m.set(`${i.label} rx_dropped`, s.rx.dropped);
    m.set(`${i.label} rx_errors`, s.rx.errors);
    m.set(`${i.label} tx_dropped`, s.tx.dropped);
    m.set(`${i.label} tx_errors`, s.tx.errors);
  }
  for (const u of p.udpSockets) {
    const text = inNs(u.ns, 'cat', u.family === 6 ? '/proc/net/snmp6' : '/proc/net/snmp');
    const v = u.family === 6 ? snmp6(text) : snmp4Udp(text);
    m.set(rcvbufKey(u), v.get('RcvbufErrors') ?? 0);
    m.set(`${u.label} UDP${u.family === 6 ? '6' : ''} SndbufErrors`, v.get('SndbufErrors') ?? 0);
  }
  for (const r of p.rawSockets) {
    const lines = inNs(r.ns, 'cat', '/proc/net/raw').trim().split('\n').slice(1);
    m.set(`${r.label} raw socket drops`, lines.reduce((sum, l) => sum + Number(l.trim().split(/\s+/).at(-1)), 0));
  }
  if (p.extra) for (const [k, v] of await p.extra()) m.set(k, v);
  return m;
}

function rcvbufKey(u: Path['udpSockets'][number]): string {
  return `${u.label} UDP${u.family === 6 ? '6' : ''} RcvbufErrors`;
}

interface Stats64 {
  rx: { dropped: number; errors: number };
  tx: { dropped: number; errors: number };
}

function snmp6(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k?.startsWith('Udp6')) m.set(k.slice(4), Number(v));
  }
  return m;
}

function snmp4Udp(text: string): Map<string, number> {
  const lines = text.split('\n').filter((l) => l.startsWith('Udp: '));
  const names = lines[0]?.split(/\s+/).slice(1) ?? [];
  const values = lines[1]?.split(/\s+/).slice(1) ?? [];
  return new Map(names.map((n, i) => [n, Number(values[i])]));
}

export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}
