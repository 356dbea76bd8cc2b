// The underlay with ESP in UDP (underlay.espUdpPort, src/native/udp_esp.c), between two real
// network namespaces joined by a veth: ESP packets leave as UDP datagrams, runs of one size to
// one peer as one datagram (UDP GSO), and arrive as the IPv4 ESP packets the switch sent,
// byte for byte, in order; plain IPv6-in-IPv4 still goes by the raw socket.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { Batch, BATCH_MAX, UNDERLAY_OFFSET } from '../src/dataplane/batch.js';
import { IPV4_HLEN, makeOuterTemplate, writeOuter } from '../src/wire/ipv4.js';
import { parseIpv4Address } from '../src/base/address.js';
import { PROTO_ESP, PROTO_IPV6 } from '../src/wire/ipv6.js';
import { RawUnderlay } from '../src/io/raw-underlay.js';
import { loadNative, netnsPath } from '../src/native/addon.js';
import { guardedSetup } from './guarded-setup.js';
import { atExit } from './at-exit.js';

const NS_A = `nvi-tu-${process.pid}-a`;
const NS_B = `nvi-tu-${process.pid}-b`;
const VETH_A = `nvi-uv${process.pid}a`.slice(-15);
const VETH_B = `nvi-uv${process.pid}b`.slice(-15);
const ADDR_A = '10.78.0.1';
const ADDR_B = '10.78.0.2';
const A = parseIpv4Address(ADDR_A);
const B = parseIpv4Address(ADDR_B);
const PORT = 4500;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** UDP datagrams namespace `ns` sent and received so far (the kernel's SNMP counters). */
function udpDatagrams(ns: string): { out: number; in: number } {
  const text = execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp'], { encoding: 'utf8' });
  const [names, values] = text.split('\n').filter((l) => l.startsWith('Udp:')).map((l) => l.split(/\s+/));
  const at = (name: string): number => Number(values[names.indexOf(name)]);
  return { out: at('OutDatagrams'), in: at('InDatagrams') };
}

function cleanup(): void {
  for (const ns of [NS_A, NS_B]) {
    try {
      ip('netns', 'del', ns);
    } catch {
      // already gone
    }
  }
}
atExit(cleanup);

async function until(done: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return done();
}

let a: RawUnderlay;
let b: RawUnderlay;

guardedSetup(test, () => {
  cleanup();
  ip('netns', 'add', NS_A);
  ip('netns', 'add', NS_B);
  ip('link', 'add', VETH_A, 'netns', NS_A, 'type', 'veth', 'peer', 'name', VETH_B, 'netns', NS_B);
  for (const [ns, dev, addr] of [[NS_A, VETH_A, ADDR_A], [NS_B, VETH_B, ADDR_B]]) {
    ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
    ip('-n', ns, 'link', 'set', dev, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  a = RawUnderlay.open(ADDR_A, { netns: NS_A, espUdpPort: PORT });
  b = RawUnderlay.open(ADDR_B, { netns: NS_B, espUdpPort: PORT });
});

test.after(() => {
  a?.close();
  b?.close();
  cleanup();
});

/** Where a packet's tag is: the ESP sequence number's place (the SPI's, before it, is the same for all). */
const TAG = IPV4_HLEN + 4;
const SPI = 0x1234;

/** Slot k: an outer IPv4 header as the switch writes it (A -> B, `tos`), then `size` bytes: `spi`, the tag k, filler. */
function fill(out: Batch, k: number, proto: number, size: number, tos = 0, spi = SPI): number {
  const total = IPV4_HLEN + size;
  const at = Batch.slot(k) + UNDERLAY_OFFSET;
  writeOuter(out.data, at, makeOuterTemplate(A, B, proto), total, tos);
  out.data.writeUInt32BE(spi, at + IPV4_HLEN);
  out.data.writeUInt32BE(k, at + TAG);
  for (let p = 8; p < size; p++) out.data[at + IPV4_HLEN + p] = (k * 7 + p) & 0xff;
  out.init(k, at, total, 0, 0);
  out.peer[k] = B;
  return k;
}

/** Reads b's underlay on readiness into `into` (tag -> packet), keeping the order of arrival in `order`. */
function receive(into: Map<number, Buffer>, order: number[]): void {
  const rx = new Batch();
  b.onReadable(() => {
    rx.reset();
    b.read(rx, 1);
    for (let i = 0; i < rx.count; i++) {
      assert.is(rx.peer[i], A, 'source address');
      const tag = rx.data.readUInt32BE(rx.start[i] + TAG);
      into.set(tag, Buffer.from(rx.view(i)));
      order.push(tag);
    }
  });
}

/** Sends slots 0..n-1 of `out` from a in one call; returns how many went. */
function sendAll(out: Batch, n: number): number {
  out.count = n;
  const idx = new Int32Array(n);
  for (let k = 0; k < n; k++) idx[k] = k;
  return a.send(out, idx, n);
}

test('ESP packets arrive as the IPv4 packets the switch sent, byte for byte and in order; IPv6-in-IPv4 as before, by the raw socket', async () => {
  const N = 200;
  const out = new Batch();
  for (let k = 0; k < N; k++) fill(out, k, k % 5 === 4 ? PROTO_IPV6 : PROTO_ESP, 8 + ((k * 37) % 1400), k % 3 === 0 ? 0x02 : 0);
  const got = new Map<number, Buffer>();
  const order: number[] = [];
  receive(got, order);
  assert.is(sendAll(out, N), N);
  assert.ok(await until(() => got.size === N, 3000), `received ${got.size} of ${N}`);
  for (let k = 0; k < N; k++) assert.ok(got.get(k)!.equals(out.view(k)), `packet ${k} differs (TOS, length, checksum and payload are compared)`);
  const esp = order.filter((t) => t % 5 !== 4);
  assert.equal(esp, [...esp].sort((x, y) => x - y), 'the ESP packets of one peer arrive in the order they were sent');
  assert.is(order.length, N, 'none twice');
});

test('a run of ESP packets of one size to one peer leaves as one datagram of many segments, and arrives whole', async () => {
  const N = 128;
  const out = new Batch();
  for (let k = 0; k < N; k++) fill(out, k, PROTO_ESP, 100);
  const got = new Map<number, Buffer>();
  const order: number[] = [];
  receive(got, order);
  const before = udpDatagrams(NS_A);
  assert.is(sendAll(out, N), N);
  assert.ok(await until(() => got.size === N, 3000), `received ${got.size} of ${N}`);
  const sent = udpDatagrams(NS_A).out - before.out;
  assert.ok(sent <= 4, `${N} packets of one size left in ${sent} datagrams (64 segments at most each: 2)`);
  assert.equal(order, [...Array(N).keys()], 'in order');
  for (let k = 0; k < N; k++) assert.ok(got.get(k)!.equals(out.view(k)), `packet ${k} differs`);
});

test('packets of two SAs never share a datagram: a receiver of several threads steers each datagram by its SPI', async () => {
  const out = new Batch();
  for (let k = 0; k < 96; k++) fill(out, k, PROTO_ESP, 100, 0, k < 32 || k >= 64 ? 0x1001 : 0x1002);
  const got = new Map<number, Buffer>();
  receive(got, []);
  const before = udpDatagrams(NS_A);
  assert.is(sendAll(out, 96), 96);
  assert.ok(await until(() => got.size === 96, 3000), `received ${got.size} of 96`);
  assert.is(udpDatagrams(NS_A).out - before.out, 3, 'SA 1, SA 2, SA 1: three datagrams');
  for (let k = 0; k < 96; k++) assert.ok(got.get(k)!.equals(out.view(k)), `packet ${k} differs`);
});

test('a shorter packet ends a run and a longer one starts the next: every size arrives intact', async () => {
  const sizes = [100, 100, 100, 60, 100, 100, 140, 140, 20, 20, 20, 200];
  const out = new Batch();
  sizes.forEach((s, k) => fill(out, k, PROTO_ESP, s));
  const got = new Map<number, Buffer>();
  const order: number[] = [];
  receive(got, order);
  assert.is(sendAll(out, sizes.length), sizes.length);
  assert.ok(await until(() => got.size === sizes.length, 3000), `received ${got.size} of ${sizes.length}`);
  assert.equal(order, [...sizes.keys()], 'in order');
  sizes.forEach((s, k) => assert.ok(got.get(k)!.equals(out.view(k)), `packet ${k} (${s} B) differs`));
});

test('more segments than a batch holds: the rest wait in the scratch and the same readiness reads them too', async () => {
  const rounds = 3;
  const out = new Batch();
  const got = new Map<number, Buffer>();
  const order: number[] = [];
  const batches: number[] = [];
  const rx = new Batch();
  b.onReadable(() => {
    rx.reset();
    batches.push(b.read(rx, 1));
    for (let i = 0; i < rx.count; i++) {
      const tag = rx.data.readUInt32BE(rx.start[i] + TAG);
      got.set(tag, Buffer.from(rx.view(i)));
      order.push(tag);
    }
  });
  // Three batches of 256 same-size packets before b reads: 12 datagrams of 64 segments wait in its socket.
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < BATCH_MAX; k++) {
      fill(out, k, PROTO_ESP, 80);
      out.data.writeUInt32BE(r * BATCH_MAX + k, out.start[k] + TAG);
    }
    assert.is(sendAll(out, BATCH_MAX), BATCH_MAX);
  }
  const all = rounds * BATCH_MAX;
  assert.ok(await until(() => got.size === all, 3000), `received ${got.size} of ${all}`);
  assert.equal(order, [...Array(all).keys()], 'every packet once, in order');
  assert.ok(batches.every((n) => n <= BATCH_MAX) && batches.some((n) => n === BATCH_MAX), `batches read: ${batches.join(' ')}`);
});

/** Slot k of `out`: ESP of `size` bytes with SPI `spi` and tag `tag`. */
function fillTagged(out: Batch, k: number, size: number, spi: number, tag: number): void {
  fill(out, k, PROTO_ESP, size, 0, spi);
  out.data.writeUInt32BE(tag, out.start[k] + TAG);
}

/** b's readiness callback as the switch's: one batch a call; the tags in `order`. */
function receiveBatches(order: number[]): void {
  const rx = new Batch();
  b.onReadable(() => {
    rx.reset();
    b.read(rx, 1);
    for (let i = 0; i < rx.count; i++) order.push(rx.data.readUInt32BE(rx.start[i] + TAG));
  });
}

test('segments still waiting when a readiness turn ends are read at the next turn, though the socket holds nothing more', async () => {
  // 24 datagrams of 60 segments (runs cut by the SPI) wait before b reads. One turn's 5 reads
  // hand out 5 batches, 1280 segments; the last 160 wait in the scratch with the socket empty.
  const RUN = 60;
  const out = new Batch();
  const order: number[] = [];
  receiveBatches(order);
  let tag = 0;
  for (let call = 0; call < 6; call++) {
    for (let k = 0; k < 4 * RUN; k++) fillTagged(out, k, 80, 0x2000 + Math.floor(k / RUN), tag++);
    assert.is(sendAll(out, 4 * RUN), 4 * RUN);
  }
  assert.ok(await until(() => order.length >= tag, 3000), `received ${order.length} of ${tag}`);
  assert.equal(order, [...Array(tag).keys()], 'every packet once, in order');
});

test('pause() hands the segments waiting in the scratch to the callback and leaves new datagrams in the socket', async () => {
  const out = new Batch();
  for (let k = 0; k < 2 * BATCH_MAX; k += BATCH_MAX) {
    for (let j = 0; j < BATCH_MAX; j++) fillTagged(out, j, 80, SPI, k + j);
    assert.is(sendAll(out, BATCH_MAX), BATCH_MAX);
  }
  b.pause(); // nothing reads while the datagrams arrive
  await new Promise((r) => setTimeout(r, 50));
  const first = new Batch();
  assert.is(b.read(first, 1), BATCH_MAX, 'one batch read, the rest of the datagrams waiting in the scratch');
  for (let j = 0; j < 10; j++) fillTagged(out, j, 80, SPI, 1000 + j);
  assert.is(sendAll(out, 10), 10); // a datagram for whoever reads next
  await new Promise((r) => setTimeout(r, 50));
  const order: number[] = [];
  receiveBatches(order);
  b.pause(); // before any readiness callback ran
  assert.equal(order, [...Array(BATCH_MAX).keys()].map((k) => BATCH_MAX + k), 'the waiting segments, in order, and nothing newer');
  receiveBatches(order);
  assert.ok(await until(() => order.length === BATCH_MAX + 10, 3000), `received ${order.length - BATCH_MAX} of the 10 after the pause`);
  assert.equal(order.slice(BATCH_MAX), [...Array(10).keys()].map((j) => 1000 + j), 'the new datagram, read once reading resumed');
});

test('a packet larger than the link MTU is refused and counted while the rest of the batch goes out', () => {
  const out = new Batch();
  fill(out, 0, PROTO_ESP, 100);
  fill(out, 1, PROTO_ESP, 1600); // 1600 + UDP + IPv4 > 1500, the veth MTU: EMSGSIZE (DF)
  fill(out, 2, PROTO_IPV6, 100);
  fill(out, 3, PROTO_ESP, 100);
  const refused = a.txRefused;
  assert.is(sendAll(out, 4), 3);
  assert.is(a.txRefused, refused + 1);
  assert.is(a.lastErrno, 90); // EMSGSIZE
});

test('a datagram from anywhere to the port is read as an ESP packet from its sender, for the pipeline to judge', async () => {
  const got = new Map<number, Buffer>();
  receive(got, []);
  execFileSync('ip', ['netns', 'exec', NS_A, '/usr/bin/python3', '-c',
    `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('${ADDR_A}', 0)); s.sendto(bytes([0, 0, 0, 1, 0, 0, 0, 9]) + b'x' * 8, ('${ADDR_B}', ${PORT}))`]);
  assert.ok(await until(() => got.has(9), 3000), 'read');
  const p = got.get(9)!;
  assert.is(p.length, IPV4_HLEN + 16);
  assert.is(p[0], 0x45);
  assert.is(p[9], PROTO_ESP);
  assert.is(p.readUInt16BE(2), IPV4_HLEN + 16, 'total length');
  assert.is(p.readUInt32BE(12), A, 'source');
  assert.is(p.readUInt32BE(16), B, 'destination');
});

test('an empty datagram to the port is read as an empty ESP packet, for the parse stage to count', async () => {
  const lens: number[] = [];
  const rx = new Batch();
  b.onReadable(() => {
    rx.reset();
    b.read(rx, 1);
    for (let i = 0; i < rx.count; i++) lens.push(rx.len[i], rx.data.readUInt16BE(rx.start[i] + 2));
  });
  execFileSync('ip', ['netns', 'exec', NS_A, '/usr/bin/python3', '-c',
    `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'', ('${ADDR_B}', ${PORT}))`]);
  assert.ok(await until(() => lens.length > 0, 3000), 'read');
  assert.equal(lens, [IPV4_HLEN, IPV4_HLEN], 'an IPv4 header alone, its total length 20');
});

test('a group of 3 sockets for 3 data-path threads: each datagram goes to the socket of its SPI mod 3, one too short for an SPI to socket 0, none twice', async () => {
  const GROUP_PORT = 4600;
  const fds = loadNative().udpEspGroupOpen(B, GROUP_PORT, 1 << 20, 3, netnsPath(NS_B));
  const shards = fds.map((fd, index) => RawUnderlay.open(ADDR_B, { netns: NS_B, espUdpPort: GROUP_PORT, shard: { count: 3, index }, espUdpFd: fd }));
  try {
    execFileSync('ip', ['netns', 'exec', NS_A, '/usr/bin/python3', '-c', [
      'import socket, struct, random',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      'random.seed(7)',
      ...[`for i in range(300): s.sendto(struct.pack('>I', random.randrange(256, 1 << 30)) + struct.pack('>I', i), ('${ADDR_B}', ${GROUP_PORT}))`],
      `s.sendto(b'ab', ('${ADDR_B}', ${GROUP_PORT}))`,
    ].join('\n')]);
    const seen: number[][] = [[], [], []];
    const short: number[] = [];
    const rx = new Batch();
    await until(() => {
      shards.forEach((u, index) => {
        rx.reset();
        u.read(rx, 1);
        for (let i = 0; i < rx.count; i++) {
          if (rx.len[i] < IPV4_HLEN + 8) short.push(index);
          else {
            const spi = rx.data.readUInt32BE(rx.start[i] + IPV4_HLEN);
            assert.is(spi % 3, index, `SPI ${spi} on socket ${index}`);
            seen[index].push(rx.data.readUInt32BE(rx.start[i] + IPV4_HLEN + 4));
          }
        }
      });
      return seen.flat().length + short.length >= 301;
    }, 3000);
    assert.equal(seen.flat().sort((x, y) => x - y), [...Array(300).keys()], 'every datagram once');
    assert.ok(seen.every((s) => s.length > 50), `spread: ${seen.map((s) => s.length).join(' ')}`);
    assert.equal(short, [0], 'the short one to socket 0');
  } finally {
    for (const u of shards) u.close();
  }
});

test('a group on a port another socket has is refused, and so is a count outside 2-64', () => {
  assert.throws(() => loadNative().udpEspGroupOpen(B, PORT, 0, 2, netnsPath(NS_B)), /bind.*(EADDRINUSE|in use)/i);
  assert.throws(() => loadNative().udpEspGroupOpen(B, 4601, 0, 1, netnsPath(NS_B)), /2-64 sockets/);
  assert.throws(() => RawUnderlay.open(ADDR_B, { netns: NS_B, espUdpPort: 4602, shard: { count: 2, index: 0 } }), /needs its socket of the host's group/);
});

test('the port of ESP in UDP is refused where another socket has it, with the step and errno named', () => {
  assert.throws(() => RawUnderlay.open(ADDR_B, { netns: NS_B, espUdpPort: PORT }), /bind.*(EADDRINUSE|in use)/i);
});

test.run();
