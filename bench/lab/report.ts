// The lab bench's report: one table per scope (cross host, same host), then CPU and drops.
// Each line of the cross-host table ends with nvi-switch's figure over the best encrypted
// peer's on that line (the higher, or the lower for times and CPU per GB), and names the peer.
//
// Cells are "median [min-max]" over the runs that succeeded (a failed test is left out and
// the count of successes shown as "n=k" when short). CPU is "% of one core" (100 = one core
// for the whole measured window); "+" joins the sender's side and the receiver's side.
// Drops are per second over the whole test, median over the runs, counting a run without
// that counter as 0.

import type { CpuUse } from './proc.js';
import type { Path, PingResult, TcpResult, Timing, UdpResult } from './measure.js';

export interface PathResults {
  tcp: (TcpResult | undefined)[];
  /** TCP with 4 streams at once. */
  tcp4: (TcpResult | undefined)[];
  udp: (UdpResult | undefined)[];
  ping: (PingResult | undefined)[];
  /** Pings 0.2 s apart: each packet alone. */
  lone: (PingResult | undefined)[];
}

type Say = (line: string) => void;
const COLUMN: Record<Path['key'], string> = { nvi: 'nvi-switch', wg: 'wireguard-go', ovpn: 'OpenVPN', kernel: 'kernel (VXLAN)' };
/** The encrypted userspace peers nvi-switch is compared with, line by line. */
const PEERS: readonly Path['key'][] = ['wg', 'ovpn'];

export function median(xs: readonly number[]): number {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const mbps = (x: number): string => x.toFixed(0);
const pps = (x: number): string => (x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0));
const ms = (x: number): string => x.toFixed(3);
const pct = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');

function cell<T>(rs: readonly (T | undefined)[], get: (r: T) => number, fmt: (x: number) => string): string {
  const xs = rs.filter((r): r is T => r !== undefined).map(get).filter(Number.isFinite);
  if (xs.length === 0) return 'failed';
  const m = fmt(median(xs));
  const range = xs.length > 1 ? ` [${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}]` : '';
  return `${m}${range}${xs.length < rs.length ? ` n=${xs.length}` : ''}`;
}

function med<T>(rs: readonly (T | undefined)[], get: (r: T) => number): number {
  return median(rs.filter((r): r is T => r !== undefined).map(get));
}

/** "97+58 (sys 40+30)": the processes' CPU, in path order (sender's side first). */
function cpuCell(rs: readonly ({ cpu: CpuUse } | undefined)[], labels: readonly string[]): string {
  if (labels.length === 0) return '- (in softirq)';
  const all = labels.map((l) => pct(med(rs, (r) => r.cpu.procs[l]?.pct ?? NaN))).join('+');
  const sys = labels.map((l) => pct(med(rs, (r) => r.cpu.procs[l]?.sysPct ?? NaN))).join('+');
  return `${all} (sys ${sys})`;
}

/** Machine busy minus every watched process: other jobs on the machine, kernel threads, softirq not charged to ours. */
function restCell(rs: readonly ({ cpu: CpuUse } | undefined)[]): string {
  return pct(med(rs, (r) => r.cpu.busyPct - Object.values(r.cpu.procs).reduce((s, p) => s + p.pct, 0)));
}

function table(say: Say, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ').trimEnd();
  say(line(header));
  say(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const r of rows) say(line(r));
}

interface Row {
  readonly name: string;
  readonly cells: string[];
  /** The line's figure per path, and whether more is better: for the ratio to the best peer. */
  readonly figure?: (p: Path) => number;
  readonly more?: boolean;
}

/** The datapath's CPU seconds per GB carried: its cores busy over the GB/s the receiver got. */
function cpuPerGb(r: TcpResult, labels: readonly string[]): number {
  if (labels.length === 0) return NaN;
  const cores = labels.reduce((s, l) => s + (r.cpu.procs[l]?.pct ?? NaN), 0) / 100;
  return cores / (r.mbps / 8000);
}

function rowsFor(cols: readonly Path[], results: ReadonlyMap<Path, PathResults>, udpLen: number): Row[] {
  const r = (p: Path): PathResults => results.get(p)!;
  const row = (name: string, f: (p: Path) => string, figure?: (p: Path) => number, more = true): Row => ({ name, cells: cols.map(f), figure, more });
  const labels = (p: Path): string[] => p.datapath.map((d) => d.label);
  return [
    row('TCP 1 stream, Mbit/s (receiver)', (p) => cell(r(p).tcp, (x) => x.mbps, mbps), (p) => med(r(p).tcp, (x) => x.mbps)),
    row('TCP 4 streams, Mbit/s (receiver)', (p) => cell(r(p).tcp4, (x) => x.mbps, mbps), (p) => med(r(p).tcp4, (x) => x.mbps)),
    row('TCP retransmits per test (1 stream)', (p) => cell(r(p).tcp, (x) => x.retransmits, (x) => x.toFixed(0))),
    row(`UDP ${udpLen} B received, pkt/s`, (p) => cell(r(p).udp, (x) => x.rxPps, pps), (p) => med(r(p).udp, (x) => x.rxPps)),
    row(`UDP ${udpLen} B sent, pkt/s`, (p) => cell(r(p).udp, (x) => x.txPps, pps), (p) => med(r(p).udp, (x) => x.txPps)),
    row(`UDP ${udpLen} B into the receiver's socket, pkt/s (received + RcvbufErrors)`, (p) => cell(r(p).udp, (x) => x.rxPps + x.rcvbufPps, pps),
      (p) => med(r(p).udp, (x) => x.rxPps + x.rcvbufPps)),
    row('ping rtt mean, ms', (p) => cell(r(p).ping, (x) => x.meanMs, ms), (p) => med(r(p).ping, (x) => x.meanMs), false),
    row('ping rtt median, ms', (p) => cell(r(p).ping, (x) => x.medianMs, ms), (p) => med(r(p).ping, (x) => x.medianMs), false),
    row('ping rtt p99, ms', (p) => cell(r(p).ping, (x) => x.p99Ms, ms), (p) => med(r(p).ping, (x) => x.p99Ms), false),
    row('lone ping (0.2 s apart) rtt mean, ms', (p) => cell(r(p).lone, (x) => x.meanMs, ms), (p) => med(r(p).lone, (x) => x.meanMs), false),
    row('lone ping rtt p99, ms', (p) => cell(r(p).lone, (x) => x.p99Ms, ms), (p) => med(r(p).lone, (x) => x.p99Ms), false),
    row('TCP 1 stream: datapath CPU s per GB', (p) => (labels(p).length === 0 ? '- (in softirq)' : cell(r(p).tcp, (x) => cpuPerGb(x, labels(p)), (x) => x.toFixed(2))),
      (p) => med(r(p).tcp, (x) => cpuPerGb(x, labels(p))), false),
    row('TCP 1 stream: datapath CPU % (send+recv host)', (p) => cpuCell(r(p).tcp, labels(p))),
    row('TCP 1 stream: iperf3 CPU % (client+server)', (p) => cpuCell(r(p).tcp, ['iperf3 client', 'iperf3 server'])),
    row('TCP 1 stream: machine busy % of 200 (softirq)', (p) => `${pct(med(r(p).tcp, (x) => x.cpu.busyPct))} (${pct(med(r(p).tcp, (x) => x.cpu.softirqPct))})`),
    row('TCP 1 stream: rest of machine % (busy - above)', (p) => restCell(r(p).tcp)),
    row('TCP 4 streams: datapath CPU % (send+recv host)', (p) => cpuCell(r(p).tcp4, labels(p))),
    row('UDP: datapath CPU % (send+recv host)', (p) => cpuCell(r(p).udp, labels(p))),
    row('UDP: iperf3 CPU % (client+server)', (p) => cpuCell(r(p).udp, ['iperf3 client', 'iperf3 server'])),
    row('UDP: machine busy % of 200 (softirq)', (p) => `${pct(med(r(p).udp, (x) => x.cpu.busyPct))} (${pct(med(r(p).udp, (x) => x.cpu.softirqPct))})`),
    row('UDP: rest of machine % (busy - above)', (p) => restCell(r(p).udp)),
  ];
}

/** "2.95 (wireguard-go)": nvi-switch's figure over the best peer's on the line, and which peer that is. */
function ratioCell(row: Row, nvi: Path, peers: readonly Path[]): string {
  if (!row.figure || peers.length === 0) return '';
  const scored = peers.map((p) => ({ p, x: row.figure!(p) })).filter((s) => Number.isFinite(s.x));
  if (scored.length === 0) return '';
  const best = scored.reduce((a, b) => ((row.more ? b.x > a.x : b.x < a.x) ? b : a));
  const ratio = row.figure(nvi) / best.x;
  return Number.isFinite(ratio) ? `${ratio.toFixed(2)} (${COLUMN[best.p.key]})` : '';
}

export function printReport(say: Say, paths: readonly Path[], results: ReadonlyMap<Path, PathResults>, info: { runs: number; timing: Timing; ping: number; lone: number; udpLen: number; espUdpPort: number }): void {
  say('');
  say(`Preliminary (noisy machine). ${info.runs} run(s); median [min-max]. TCP/UDP: ${info.timing.seconds} s after ${info.timing.omit} s warm-up; ping -c ${info.ping} -i 0.01; lone ping -c ${info.lone} -i 0.2.`);
  say(`nvi-switch's underlay: ${info.espUdpPort === 0 ? 'ESP as IP protocol 50 on raw sockets' : `ESP in UDP to port ${info.espUdpPort} (UDP GSO/GRO)`} (underlay.espUdpPort ${info.espUdpPort}).`);
  say('CPU: % of one core in the measured window, median over runs; "a+b" = sender host + receiver host (or iperf3 client + server);');
  say('  a process\'s sys time includes kernel work it triggers: a switch writing a TAP runs the guest\'s stack receive path.');
  for (const scope of ['cross', 'same'] as const) {
    const nvi = paths.find((p) => p.key === 'nvi' && p.scope === scope);
    const peers = paths.filter((p) => PEERS.includes(p.key) && p.scope === scope);
    const kernel = paths.find((p) => p.key === 'kernel' && p.scope === scope);
    if (!nvi) continue;
    const cols = [nvi, ...peers, ...(kernel ? [kernel] : [])];
    const rows = rowsFor(cols, results, info.udpLen);
    say('');
    say(`${scope === 'cross' ? 'Cross host' : 'Same host (reference)'}: ${cols.map((p) => `${COLUMN[p.key]} ${p.label}`).join(', ')}`);
    const ratio = peers.length > 0 ? ['nvi / best peer'] : [];
    table(say, ['metric', ...cols.map((p) => COLUMN[p.key]), ...ratio], rows.map((r) => [r.name, ...r.cells, ...(peers.length > 0 ? [ratioCell(r, nvi, peers)] : [])]));
  }
  say('');
  say('Drops during the tests, per second (median over runs; only counters that moved):');
  say('  TAP tx_dropped = frames the VM sent that its switch did not read in time (TAP queue full);');
  say('  UDP6 RcvbufErrors in the receiving VM/client = the iperf3 server did not keep up.');
  for (const p of paths) {
    for (const [test, rs] of [['TCP', results.get(p)!.tcp], ['TCP 4 streams', results.get(p)!.tcp4], ['UDP', results.get(p)!.udp]] as const) {
      const ok = rs.filter((r): r is TcpResult | UdpResult => r !== undefined);
      const keys = new Set(ok.flatMap((r) => Object.keys(r.drops)));
      const lines = [...keys].map((k) => [k, median(ok.map((r) => r.drops[k] ?? 0))] as const).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
      say(`  ${COLUMN[p.key]} ${p.label} ${test}: ${lines.length === 0 ? 'none' : lines.map(([k, v]) => `${k} ${pps(v)}/s`).join('; ')}`);
    }
  }
}
