// The underlay alone: what a packet costs the kernel as ESP in IP protocol 50 (raw sockets)
// and as ESP in UDP with GSO/GRO (underlay.espUdpPort), through the lab's kind of fabric.
//
//   npx tsc -p . && node dist/bench/underlay.js [--runs 3] [--seconds 3] [--sizes 100,1400]   (root)
//
// Two namespaces joined through a bridge in a third (veths, bridge netfilter off, as
// `lab up` makes the fabric), each with a RawUnderlay (src/io/raw-underlay.ts) as the switch
// opens it. The sender (this process, CPU 0) sends batches of 256 ESP packets of one size, as
// the switch's encap stage leaves them, as fast as the socket takes them; the receiver (a
// child process, CPU 1) reads them on readiness, as the switch does. Each side's CPU time
// (user + system: the kernel's work below the sockets, the bridge's and the receiving stack's
// included where it runs in the sender's system calls) per packet received, medians over the
// runs, modes alternating; and the ratio of the two modes.

import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Batch, BATCH_MAX, UNDERLAY_OFFSET } from '../src/dataplane/batch.js';
import { parseIpv4Address } from '../src/base/address.js';
import { IPV4_HLEN, makeOuterTemplate, writeOuter } from '../src/wire/ipv4.js';
import { PROTO_ESP } from '../src/wire/ipv6.js';
import { RawUnderlay } from '../src/io/raw-underlay.js';
import { loadNative } from '../src/native/addon.js';
import { median } from './lab/report.js';
import { benchOptions, integer, refuse } from './options.js';

const NS = { a: 'nvi-bu-a', b: 'nvi-bu-b', fabric: 'nvi-bu-fabric' } as const;
const ADDR_A = '10.79.0.1';
const ADDR_B = '10.79.0.2';
const PORT = 4500;
const MODES = [{ name: 'raw (IP protocol 50)', port: 0 }, { name: 'UDP GSO/GRO', port: PORT }] as const;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function teardown(): void {
  for (const ns of Object.values(NS)) {
    try {
      ip('netns', 'del', ns);
    } catch {
      // not there
    }
  }
}

function setup(): void {
  teardown();
  for (const ns of Object.values(NS)) ip('netns', 'add', ns);
  ip('-n', NS.fabric, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', NS.fabric, 'link', 'set', 'br0', 'up');
  for (const [side, addr] of [['a', ADDR_A], ['b', ADDR_B]] as const) {
    ip('link', 'add', 'underlay0', 'netns', NS[side], 'type', 'veth', 'peer', 'name', `port-${side}`, 'netns', NS.fabric);
    ip('-n', NS.fabric, 'link', 'set', `port-${side}`, 'master', 'br0', 'up');
    ip('-n', NS[side], 'addr', 'add', `${addr}/24`, 'dev', 'underlay0');
    ip('-n', NS[side], 'link', 'set', 'underlay0', 'up');
    ip('-n', NS[side], 'link', 'set', 'lo', 'up');
  }
  for (const key of ['iptables', 'ip6tables', 'arptables']) {
    try {
      execFileSync('ip', ['netns', 'exec', NS.fabric, 'sysctl', '-qw', `net.bridge.bridge-nf-call-${key}=0`], { stdio: 'ignore' });
    } catch {
      // no br_netfilter: nothing filters
    }
  }
}

/** The receiver (child process): reads until stdin closes, then prints packets and CPU µs. */
async function receiver(port: number): Promise<void> {
  loadNative().setThreadCpus(Int32Array.of(1));
  const u = RawUnderlay.open(ADDR_B, { netns: NS.b, espUdpPort: port });
  const b = new Batch();
  let packets = 0;
  let cpu0 = process.cpuUsage();
  u.onReadable(() => {
    b.reset();
    if (packets === 0) cpu0 = process.cpuUsage();
    packets += u.read(b, 0);
  });
  process.stdout.write('ready\n');
  await new Promise<void>((r) => process.stdin.on('end', () => r()).resume());
  const c = process.cpuUsage(cpu0);
  u.close();
  process.stdout.write(`${JSON.stringify({ packets, cpuUs: c.user + c.system })}\n`);
}

interface Run {
  sent: number;
  received: number;
  seconds: number;
  senderCpuUs: number;
  receiverCpuUs: number;
}

async function measure(port: number, size: number, seconds: number): Promise<Run> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--receive', String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  if ((await lines.next()).value !== 'ready') throw new Error('the receiver did not start');
  const u = RawUnderlay.open(ADDR_A, { netns: NS.a, espUdpPort: port });
  const out = new Batch();
  const idx = new Int32Array(BATCH_MAX);
  const template = makeOuterTemplate(parseIpv4Address(ADDR_A), parseIpv4Address(ADDR_B), PROTO_ESP);
  for (let k = 0; k < BATCH_MAX; k++) {
    const at = Batch.slot(k) + UNDERLAY_OFFSET;
    writeOuter(out.data, at, template, IPV4_HLEN + size, 0);
    out.data.fill(k & 0xff, at + IPV4_HLEN, at + IPV4_HLEN + size);
    out.init(k, at, IPV4_HLEN + size, 0, 0);
    out.peer[k] = parseIpv4Address(ADDR_B);
    idx[k] = k;
  }
  out.count = BATCH_MAX;
  let sent = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    sent += u.send(out, idx, BATCH_MAX);
    if (sent % (BATCH_MAX * 64) < BATCH_MAX) await new Promise((r) => setImmediate(r)); // let timers and signals in
  }
  const elapsed = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  u.close();
  await new Promise((r) => setTimeout(r, 300)); // the receiver drains what is in flight
  child.stdin!.end();
  const result = JSON.parse((await lines.next()).value as string) as { packets: number; cpuUs: number };
  await new Promise((r) => child.once('exit', r));
  return { sent, received: result.packets, seconds: elapsed, senderCpuUs: c.user + c.system, receiverCpuUs: result.cpuUs };
}

async function main(): Promise<void> {
  const v = benchOptions({ runs: { type: 'string' }, seconds: { type: 'string' }, sizes: { type: 'string' }, receive: { type: 'string' } });
  if (v.receive !== undefined) return receiver(Number(v.receive));
  const runs = integer('runs', v.runs ?? '3');
  const seconds = integer('seconds', v.seconds ?? '3');
  const sizes = (v.sizes ?? '100,1400').split(',').map((s) => integer('sizes', s, IPV4_HLEN));
  if (process.getuid?.() !== 0) refuse('bench/underlay needs root (network namespaces, raw sockets)');
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { teardown(); process.exit(130); });
  setup();
  loadNative().setThreadCpus(Int32Array.of(0));
  try {
    console.log(`bench/underlay: ${runs} runs of ${seconds} s per mode and size, modes alternating; batches of ${BATCH_MAX} ESP packets of one size, A (CPU 0) -> bridge -> B (CPU 1)`);
    console.log('| ESP bytes | underlay | sent kpkt/s | received kpkt/s | sender CPU ns/pkt | receiver CPU ns/pkt |');
    console.log('|---:|:---|---:|---:|---:|---:|');
    for (const size of sizes) {
      const results = MODES.map(() => [] as Run[]);
      for (let r = 0; r < runs; r++) {
        for (let m = 0; m < MODES.length; m++) results[m].push(await measure(MODES[m].port, size, seconds));
      }
      const rows = results.map((rs) => ({
        sent: median(rs.map((x) => x.sent / x.seconds / 1000)),
        received: median(rs.map((x) => x.received / x.seconds / 1000)),
        sender: median(rs.map((x) => (x.senderCpuUs * 1000) / Math.max(x.received, 1))),
        receiver: median(rs.map((x) => (x.receiverCpuUs * 1000) / Math.max(x.received, 1))),
      }));
      rows.forEach((x, m) => console.log(`| ${size} | ${MODES[m].name} | ${x.sent.toFixed(0)} | ${x.received.toFixed(0)} | ${x.sender.toFixed(0)} | ${x.receiver.toFixed(0)} |`));
      const [raw, udp] = rows;
      console.log(`| ${size} | UDP / raw | ${(udp.sent / raw.sent).toFixed(2)}x | ${(udp.received / raw.received).toFixed(2)}x | ${(udp.sender / raw.sender).toFixed(3)}x | ${(udp.receiver / raw.receiver).toFixed(3)}x |`);
    }
  } finally {
    teardown();
  }
}

await main();
