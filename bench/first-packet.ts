// First packet (issue 13): how long a new pair's first frame takes from the sending VM to the
// receiving VM, cross host, embedded store, next to a frame on the plugged cable.
//
//   npx tsc -p . && node dist/bench/first-packet.js [--pairs 200] [--reverify] [--no-prefetch] [--busy-poll-us N] [--workers N] [--profile DIR]
//       [--node-args=ARGS] [--logs DIR] [--hops] [--pin] [--esp-udp PORT] [--spares N] [--rebind]   (root)
//
// web1 (h1) sends web2 (h2) a UDP datagram stamped with its send time; web2 takes the kernel's
// receive stamp (the namespaces share one clock: test/e2e/net.py stamp-send / stamp-recv).
// Before each first datagram both switches forget every cable and SA (`cables --flush`), so it
// takes the whole miss path: lookup, verification, policy, the key exchange with h2 (which
// makes its own checks), SA install, release. A second datagram right after it, on the
// plugged cable, is the baseline. --reverify: the switches also forget the bindings and VM
// certificates they verified (`cables --flush --reverify`), so each first packet verifies
// web1's and web2's from scratch at both ends, as for a new pair of VMs on hosts that know
// each other (host certificates stay known). --no-prefetch: h2 does not plug the reply's
// cable as it accepts the request's (switch.upcall.prefetchReplies). --busy-poll-us N: both switches with
// switch.busyPollUs N (off by default). --workers N: both switches with switch.workers N
// (web1 is then on worker 1 of h1, web2 on worker 0 of h2). --profile DIR: each switch runs under
// node --cpu-prof and writes its profile to DIR/h1.cpuprofile and DIR/h2.cpuprofile as it
// stops (open them in Chrome's DevTools). --node-args=ARGS: more options for the switches' node,
// space-separated (e.g. --node-args=--trace-gc; the = is needed). --logs DIR: the switches' logs (their stdout too) are copied to DIR before the
// lab (prefix nvi-b-) is removed at the end.
// --hops: where each first datagram spends its time. Four captures with the kernel's stamps
// (web1's TAP, h1's and h2's underlay0, web2's TAP; they wake the machine too, so the totals
// run a little above those of a run without them): the datagram on web1's TAP, h1's INIT for
// web1 -> web2 leaving h1 and arriving at h2, h2's ANSWER leaving h2 and arriving at h1, the
// first ESP packet leaving h1 and arriving at h2, the datagram on web2's TAP. Per hop: p50 and
// p99 over the pairs. --pin: h1's switch on CPU 0, h2's on CPU 1 (hosts.<name>.cpus), as
// bench/lab.ts does: two hosts of one machine each with a core, instead of the scheduler's
// choice (which may put both on one core, where each wake-up of the peer preempts the sender).
// --esp-udp PORT: both switches carry ESP in UDP to PORT (underlay.espUdpPort); not with --hops,
// whose captures read ESP as IP protocol 50.
// --rebind: before each pair, web2's binding is published again at the next epoch (`nvi-switch
// vm create web2` as h2, what a VM that comes or moves causes), so each first datagram goes to
// a binding h1 has not verified yet, unless it verified it as the store published it.
// --spares N: both switches keep N spare SAs with each peer host (switch.esp.spares, 2 in the
// shipped config; 0: none, every first packet waits for an INIT and its ANSWER): the first
// datagram leaves on one, and h2 checks the pair on it (no INIT, no ANSWER). The flush forgets
// cables and SAs, not spares (they belong to no pair). With spares, --hops has three hops: h1
// to its ESP packet, the wire, h2 to web2's frame (no INIT, no ANSWER); and when h1 left
// its bind-ahead probe on the wire before that ESP packet, when it did (from web1's frame).

import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { controlRequest } from '../src/switch/control.js';
import { controlPath, stateDir } from '../src/switch/paths.js';
import { BINARY, BenchLab, PREFIX, REPO } from './lab/bench-lab.js';
import { quantilesUs } from './lab/probe.js';
import { after, fields, hexBytes, needTools, startCaptures, stopCaptures, type CapturePoint } from './lab/captures.js';
import { KX_ANSWER, KX_INIT } from '../src/esp/handshake.js';
import type { CloudConfig } from '../src/config/config.js';
import { benchOptions, integer, refuse } from './options.js';

const NET_PY = join(REPO, 'test', 'e2e', 'net.py');
const v = benchOptions({ pairs: { type: 'string' }, reverify: { type: 'boolean' }, 'no-prefetch': { type: 'boolean' }, 'busy-poll-us': { type: 'string' }, workers: { type: 'string' }, profile: { type: 'string' }, 'node-args': { type: 'string' }, logs: { type: 'string' }, hops: { type: 'boolean' }, pin: { type: 'boolean' }, 'esp-udp': { type: 'string' }, spares: { type: 'string' }, rebind: { type: 'boolean' } });
const PAIRS = integer('pairs', v.pairs ?? '200');
const PORT = 7100;
/** Where an INIT carries the source identity of the pair it plugs (src/esp/handshake.ts). */
const INIT_SRC = 20;
const HOPS = ['h1 to INIT', 'INIT on the wire', 'h2 answers', 'ANSWER on the wire', 'h1 to ESP', 'ESP on the wire', 'h2 delivers', 'in all'] as const;
const SPARE_HOPS = ['h1 to its probe', 'h1 to ESP', 'ESP on the wire', 'h2 delivers', 'in all'] as const;
/** IPv4 length of a bind-ahead probe (src/switch/bind-probe.ts): 20 + ESP 16 + an IPv6 header padded to 44 + ICV 16, shorter than any ESP packet with a datagram inside. */
const PROBE_LEN = 96;
const lab = new BenchLab('first-packet');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

try {
  if (process.getuid?.() !== 0) refuse('bench/first-packet needs root');
  if (v.hops) needTools(['tcpdump', 'tshark'], refuse);
  const busyPollUs = v['busy-poll-us'] === undefined ? undefined : integer('busy-poll-us', v['busy-poll-us']);
  const espUdp = v['esp-udp'] === undefined ? undefined : integer('esp-udp', v['esp-udp']);
  if (espUdp !== undefined && v.hops) refuse('--hops reads ESP as IP protocol 50: not with --esp-udp');
  const spares = v.spares === undefined ? undefined : integer('spares', v.spares, 0);
  lab.config((doc) => {
    if (espUdp !== undefined) doc.setIn(['underlay', 'espUdpPort'], espUdp);
    if (spares !== undefined) doc.setIn(['switch', 'esp', 'spares'], spares);
    if (v['no-prefetch']) doc.setIn(['switch', 'upcall', 'prefetchReplies'], false);
    if (busyPollUs !== undefined) doc.setIn(['switch', 'busyPollUs'], busyPollUs);
    if (v.workers !== undefined) doc.setIn(['switch', 'workers'], integer('workers', v.workers));
    if (v.pin) {
      doc.setIn(['hosts', 'h1', 'cpus'], doc.createNode([0]));
      doc.setIn(['hosts', 'h2', 'cpus'], doc.createNode([1]));
    }
  });
  const nodeArgs = (v['node-args'] ?? '').split(' ').filter((a) => a !== '');
  if (v.profile !== undefined) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${resolve(v.profile)}`, '--cpu-prof-name={host}.cpuprofile');
  const c = await lab.up(nodeArgs);
  if (v.logs !== undefined) {
    const to = resolve(v.logs);
    lab.atEnd(async () => {
      mkdirSync(to, { recursive: true });
      for (const h of ['h1', 'h2']) cpSync(join(stateDir(c), 'lab', `${h}.log`), join(to, `${h}.log`));
    });
  }
  const web2 = c.vms.get('web2')!.identityText;
  const recv = spawn('ip', ['netns', 'exec', `${PREFIX}web2`, 'python3', NET_PY, 'stamp-recv', String(PORT), String(PAIRS * 2 + 60)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const send = spawn('ip', ['netns', 'exec', `${PREFIX}web1`, 'python3', NET_PY, 'stamp-send', web2, String(PORT)], { stdio: ['pipe', 'pipe', 'inherit'] });
  lab.children.push(recv, send);
  let gone = '';
  recv.once('exit', (code) => (gone = `stamp-recv in web2 exited (${code})`));
  send.once('exit', (code) => (gone = `stamp-send in web1 exited (${code})`));
  const arrived = new Map<number, number>();
  let listening = false;
  createInterface({ input: recv.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as { seq?: number; us?: number; listening?: number };
    if (m.listening !== undefined) listening = true;
    if (m.seq !== undefined) arrived.set(m.seq, m.us!);
  });
  while (!listening) {
    if (gone) throw new Error(gone);
    await sleep(20);
  }
  const datagram = async (seq: number): Promise<number | undefined> => {
    if (gone) throw new Error(gone);
    send.stdin!.write(`${seq}\n`);
    for (let t = 0; t < 200 && !arrived.has(seq); t++) await sleep(5);
    return arrived.get(seq);
  };
  // Warm up: the paths, the JIT, the replicas.
  for (let k = 0; k < 20; k++) await datagram(900_000 + k);
  const dropsBefore = await drops(c);
  const capture = v.hops ? hopPoints(c) : [];
  const dumps = startCaptures(capture, (name) => join(lab.dir, `${name}.pcap`));
  lab.children.push(...dumps);
  if (v.hops) await sleep(1500); // the captures are listening
  const first: number[] = [];
  const warm: number[] = [];
  let lost = 0;
  const lostWhich: string[] = [];
  for (let k = 0; k < PAIRS; k++) {
    if (v.rebind) await rebind(c);
    for (const h of ['h1', 'h2']) await controlRequest(controlPath(c, h), { cmd: 'flush', ...(v.reverify ? { reverify: true } : {}) });
    await sleep(30);
    const a = await datagram(2 * k);
    await sleep(10);
    const b = await datagram(2 * k + 1);
    if (a === undefined || b === undefined) lost++;
    if (a === undefined) lostWhich.push(`pair ${k}: the first datagram`);
    if (b === undefined) lostWhich.push(`pair ${k}: the next one`);
    if (a !== undefined) first.push(a);
    if (b !== undefined) warm.push(b);
  }
  await sleep(200);
  await stopCaptures(dumps);
  type Stats = { upcall: { latency: { count: number; sum: number } }; kx: { sparesUsed: number; sparesBound: number } };
  const h1 = (await controlRequest(controlPath(c, 'h1'), { cmd: 'stats' })) as Stats;
  const h2 = (await controlRequest(controlPath(c, 'h2'), { cmd: 'stats' })) as Stats;
  const dropped = dropsSince(dropsBefore, await drops(c));
  const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  process.stdout.write(`first packet of a new pair, web1 (h1) -> web2 (h2), UDP, ${PAIRS} pairs (cables and SAs flushed before each${v.reverify ? ', and what was verified' : ''}${v.rebind ? ", web2's binding published again before each" : ''})${v['no-prefetch'] ? ', no prefetch of replies' : ''}${busyPollUs === undefined ? '' : `, switch.busyPollUs ${busyPollUs}`}${spares === undefined ? '' : `, switch.esp.spares ${spares}`}${v.pin ? ', h1 on CPU 0 and h2 on CPU 1' : ''}:\n` +
    `  first datagram:             ${quantilesUs(first)}\n` +
    `  next one, plugged cable:    ${quantilesUs(warm)}\n` +
    `  first / plugged (medians):  ${(med(first) / med(warm)).toFixed(1)}x\n` +
    `  lost ${lost}${lost > 0 ? ` (${lostWhich.join(', ')})` : ''}; h1's misses resolved ${h1.upcall.latency.count}, mean ${((h1.upcall.latency.sum / Math.max(1, h1.upcall.latency.count)) * 1000).toFixed(2)} ms\n` +
    (c.switch.esp.spares === 0 ? '' : `  on spares: h1 sent ${h1.kx.sparesUsed} first packets on one, h2 bound ${h2.kx.sparesBound} (and h2 ${h2.kx.sparesUsed} replies' cables, h1 bound ${h1.kx.sparesBound})\n`) +
    `  dropped by the switches meanwhile: ${dropped.length === 0 ? 'nothing' : dropped.join(', ')}\n`);
  if (v.hops) process.stdout.write(hopsReport(c, (name) => join(lab.dir, `${name}.pcap`), PAIRS, h1.kx.sparesUsed >= PAIRS));
  send.stdin!.end();
} finally {
  await lab.cleanup();
}

/** Every drop counter of both switches, as "h1 egress reason" -> count. */
async function drops(c: Parameters<typeof controlPath>[0]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const h of ['h1', 'h2']) {
    const s = (await controlRequest(controlPath(c, h), { cmd: 'stats' })) as Record<'egress' | 'ingress', { drops: Record<string, number> }>;
    for (const pipe of ['egress', 'ingress'] as const) for (const [reason, n] of Object.entries(s[pipe].drops)) out.set(`${h} ${pipe} ${reason}`, n);
  }
  return out;
}

/** "h1 ingress reason +n" for each counter that moved. */
function dropsSince(before: Map<string, number>, after: Map<string, number>): string[] {
  return [...after].filter(([k, n]) => n !== (before.get(k) ?? 0)).map(([k, n]) => `${k} +${n - (before.get(k) ?? 0)}`);
}

/** --rebind: web2's binding published again at the next epoch, as h2 does for a VM that comes (or moves back); then time for both replicas to hear of it. */
async function rebind(c: CloudConfig): Promise<void> {
  const r = spawnSync('ip', ['netns', 'exec', `${PREFIX}${c.vms.get('web2')!.host}`, process.execPath, BINARY, 'vm', 'create', 'web2', '--tenant', 'blue', '--host', 'h2', '-c', lab.file], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`--rebind: vm create web2 failed: ${r.stderr || r.error?.message}`);
  await sleep(600); // the embedded store's replicas poll it
}

/** The four captures of --hops. */
function hopPoints(c: CloudConfig): CapturePoint[] {
  const web1 = c.vms.get('web1')!;
  const web2 = c.vms.get('web2')!;
  const underlay = `esp or udp port ${c.underlay.keyExchangePort}`;
  return [
    { name: 'web1', ns: `${PREFIX}web1`, dev: web1.tap, filter: `udp port ${PORT}` },
    { name: 'h1', ns: `${PREFIX}${web1.host}`, dev: 'underlay0', filter: underlay },
    { name: 'h2', ns: `${PREFIX}${web2.host}`, dev: 'underlay0', filter: underlay },
    { name: 'web2', ns: `${PREFIX}web2`, dev: web2.tap, filter: `udp port ${PORT}` },
  ];
}

/** The stamped datagrams on a TAP: time (s) by number. */
function datagrams(file: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const [t, payload] of fields(file, `udp.dstport == ${PORT}`, ['frame.time_epoch', 'udp.payload'])) out.set(Number(hexBytes(payload).readBigUInt64BE(0)), Number(t));
  return out;
}

/** On an underlay capture: web1 -> web2's INITs and h2's ANSWERs, the bind-ahead probes and the other ESP packets, each by direction (sent by `from`), times (s) in order. */
function underlay(file: string, from: string, web1: Buffer): { init: number[]; answer: number[]; probe: number[]; esp: number[] } {
  const r = { init: [] as number[], answer: [] as number[], probe: [] as number[], esp: [] as number[] };
  for (const [t, src, proto, len, payload] of fields(file, 'esp || udp', ['frame.time_epoch', 'ip.src', 'ip.proto', 'ip.len', 'udp.payload'])) {
    if (src !== from) continue;
    if (proto === '50') (Number(len) === PROBE_LEN ? r.probe : r.esp).push(Number(t));
    else {
      const m = hexBytes(payload);
      if (m[0] === KX_INIT && m.subarray(INIT_SRC, INIT_SRC + 16).equals(web1)) r.init.push(Number(t));
      else if (m[0] === KX_ANSWER) r.answer.push(Number(t));
    }
  }
  for (const xs of Object.values(r)) xs.sort((a, b) => a - b);
  return r;
}

/** Each first datagram's way through both switches, hop by hop; `onSpares`: each left on a spare SA (no INIT, no ANSWER). */
function hopsReport(c: CloudConfig, file: (name: string) => string, pairs: number, onSpares: boolean): string {
  const web1 = c.vms.get('web1')!;
  const [h1, h2] = [c.hosts.get(web1.host)!, c.hosts.get(c.vms.get('web2')!.host)!];
  const sent = datagrams(file('web1'));
  const got = datagrams(file('web2'));
  const out1 = underlay(file('h1'), h1.addressText, web1.identity);
  const in2 = underlay(file('h2'), h1.addressText, web1.identity);
  const out2 = underlay(file('h2'), h2.addressText, web1.identity);
  const in1 = underlay(file('h1'), h2.addressText, web1.identity);
  const names = onSpares ? SPARE_HOPS : HOPS;
  const hops = new Map<string, number[]>(names.map((h) => [h, []]));
  let matched = 0;
  for (let k = 0; k < pairs; k++) {
    const t0 = sent.get(2 * k);
    const t7 = got.get(2 * k);
    if (t0 === undefined || t7 === undefined) continue;
    if (onSpares) {
      const t1 = after(out1.esp, t0);
      const t2 = t1 === undefined ? undefined : after(in2.esp, t1);
      if (t2 === undefined || t2 > t7) continue;
      const probe = after(out1.probe, t0);
      if (probe !== undefined && probe < t1!) hops.get('h1 to its probe')!.push((probe - t0) * 1e6);
      [t1! - t0, t2 - t1!, t7 - t2, t7 - t0].forEach((d, i) => hops.get(SPARE_HOPS[i + 1])!.push(d * 1e6));
      matched++;
      continue;
    }
    const t1 = after(out1.init, t0);
    const t2 = t1 === undefined ? undefined : after(in2.init, t1);
    const t3 = t2 === undefined ? undefined : after(out2.answer, t2);
    const t4 = t3 === undefined ? undefined : after(in1.answer, t3);
    const t5 = t4 === undefined ? undefined : after(out1.esp, t4);
    const t6 = t5 === undefined ? undefined : after(in2.esp, t5);
    if (t6 === undefined || t6 > t7) continue;
    const times = [t0, t1!, t2!, t3!, t4!, t5!, t6, t7];
    HOPS.slice(0, 7).forEach((h, i) => hops.get(h)!.push((times[i + 1] - times[i]) * 1e6));
    hops.get('in all')!.push((t7 - t0) * 1e6);
    matched++;
  }
  if (matched < pairs / 2) throw new Error(`--hops: only ${matched} of ${pairs} first datagrams found with their ${onSpares ? '' : 'INIT, ANSWER and '}ESP packet in the captures`);
  return `  hop by hop (${matched} of ${pairs} first datagrams found in all four captures${onSpares ? ', each on a spare SA' : ''}):\n` +
    names.filter((h) => hops.get(h)!.length > 0).map((h) => `    ${h.padEnd(19)} ${quantilesUs(hops.get(h)!)}${h === 'h1 to its probe' ? ` (${hops.get(h)!.length} probes)` : ''}`).join('\n') + '\n';
}
