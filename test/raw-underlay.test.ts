// RawUnderlay between two network namespaces joined by a veth pair (nvi-tn-<pid>-a/-b,
// removed at the end, also when a test fails). Each side's sockets are opened inside its
// namespace by the addon itself (setns around socket(), see src/native/netns.c), so one
// test process holds both hosts and its event loop drives both.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { Batch, UNDERLAY_OFFSET } from '../src/dataplane/batch.js';
import { IPV4_HLEN, makeOuterTemplate, writeOuter } from '../src/wire/ipv4.js';
import { parseIpv4Address } from '../src/base/address.js';
import { PROTO_ESP, PROTO_IPV6 } from '../src/wire/ipv6.js';
import { RawUnderlay, UNDERLAY_PORT } from '../src/io/raw-underlay.js';
import { ownerOf } from '../src/switch/workers/shard.js';
import { guardedSetup } from './guarded-setup.js';
import { atExit } from './at-exit.js';

const NS_A = `nvi-tn-${process.pid}-a`;
const NS_B = `nvi-tn-${process.pid}-b`;
const VETH_A = `nvi-rv${process.pid}a`.slice(-15);
const VETH_B = `nvi-rv${process.pid}b`.slice(-15);
const ADDR_A = '10.77.0.1';
const ADDR_B = '10.77.0.2';
const A = parseIpv4Address(ADDR_A);
const B = parseIpv4Address(ADDR_B);

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function cleanup(): void {
  for (const ns of [NS_A, NS_B]) {
    try {
      ip('netns', 'del', ns); // deleting a namespace deletes its end of the veth, and so the pair
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
  a = RawUnderlay.open(ADDR_A, { netns: NS_A });
  b = RawUnderlay.open(ADDR_B, { netns: NS_B });
});

test.after(() => {
  a?.close();
  b?.close();
  cleanup();
});

/** Packet k: an outer IPv4 header as the switch writes it, then `size` bytes of payload tagged with k. */
function fill(out: Batch, k: number, proto: number, size: number): number {
  const total = IPV4_HLEN + size;
  const at = Batch.slot(k) + UNDERLAY_OFFSET;
  writeOuter(out.data, at, makeOuterTemplate(A, B, proto), total, 0);
  out.data.writeUInt32BE(k, at + IPV4_HLEN);
  for (let p = 4; p < size; p++) out.data[at + IPV4_HLEN + p] = (k * 7 + p) & 0xff;
  out.init(k, at, total, 0, 0);
  out.peer[k] = B;
  return k;
}

/** Received packets keyed by the tag in their payload. */
function collect(into: Map<number, Buffer>, from: Batch): void {
  for (let i = 0; i < from.count; i++) {
    assert.is(from.start[i], Batch.slot(i) + UNDERLAY_OFFSET);
    assert.is(from.port[i], UNDERLAY_PORT);
    assert.is(from.peer[i], A, 'source address');
    into.set(from.data.readUInt32BE(from.start[i] + IPV4_HLEN), Buffer.from(from.view(i)));
  }
}

test('ESP and IPv6-in-IPv4 packets with our own IPv4 header arrive byte for byte with their source address', async () => {
  const N = 200;
  const out = new Batch();
  const idx = new Int32Array(N);
  for (let k = 0; k < N; k++) {
    const proto = k % 2 === 0 ? PROTO_ESP : PROTO_IPV6;
    idx[k] = fill(out, k, proto, 8 + ((k * 37) % 1400));
  }
  out.count = N;
  const received = new Map<number, Buffer>();
  const rx = new Batch();
  b.onReadable(() => {
    rx.reset();
    b.read(rx, 42);
    collect(received, rx);
  });
  assert.is(a.send(out, idx, N), N);
  assert.ok(await until(() => received.size === N, 3000), `received ${received.size} of ${N}`);
  for (let k = 0; k < N; k++) {
    assert.ok(received.get(k)!.equals(out.view(k)), `packet ${k} differs`);
  }
  assert.is(a.txPackets, N);
  assert.is(b.rxPackets, N);
});

test('one read drains both protocols into one batch, up to the batch size', async () => {
  const out = new Batch();
  const idx = new Int32Array(256);
  for (let k = 0; k < 256; k++) idx[k] = fill(out, k, k < 128 ? PROTO_ESP : PROTO_IPV6, 64);
  out.count = 256;
  // Every raw socket of a protocol gets its own copy: c is read by hand, b's callback drains b.
  const c = RawUnderlay.open(ADDR_B, { netns: NS_B });
  try {
    assert.is(a.send(out, idx, 256), 256);
    await new Promise((r) => setTimeout(r, 100));
    const rx = new Batch();
    rx.count = 56; // room for 200
    assert.is(c.read(rx, 0), 200);
    const protos = new Set<number>();
    for (let i = 56; i < 256; i++) protos.add(rx.data[rx.start[i] + 9]);
    assert.equal([...protos].sort(), [PROTO_IPV6, PROTO_ESP]);
    rx.reset();
    assert.is(c.read(rx, 0), 56, 'the rest on the next read');
    rx.reset();
    assert.is(c.read(rx, 0), 0, 'nothing left');
  } finally {
    c.close();
  }
});

test("a readiness callback reads its own socket alone: one ESP and one IPv6-in-IPv4 packet are two callbacks of one packet each", async () => {
  const c = RawUnderlay.open(ADDR_B, { netns: NS_B }); // a socket pair of its own (each gets a copy), quiet until now
  try {
    const out = new Batch();
    const idx = Int32Array.of(fill(out, 0, PROTO_ESP, 64), fill(out, 1, PROTO_IPV6, 64));
    out.count = 2;
    const reads: number[][] = [];
    const rx = new Batch();
    c.onReadable(() => {
      rx.reset();
      c.read(rx, 0);
      reads.push([...Array(rx.count).keys()].map((i) => rx.data[rx.start[i] + 9]));
    });
    assert.is(a.send(out, idx, 2), 2);
    assert.ok(await until(() => reads.flat().length === 2, 3000), `read ${JSON.stringify(reads)}`);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(reads.map((r) => r.length), [1, 1], `each callback read one packet: ${JSON.stringify(reads)}`);
    assert.equal(reads.flat().sort(), [PROTO_IPV6, PROTO_ESP].sort());
  } finally {
    c.close();
  }
});

test('a packet larger than the link MTU is refused and counted while the rest of the batch goes out', () => {
  const out = new Batch();
  fill(out, 0, PROTO_ESP, 100);
  fill(out, 1, PROTO_ESP, 1600); // 1620 bytes > 1500, the veth MTU: EMSGSIZE
  fill(out, 2, PROTO_IPV6, 100);
  out.count = 3;
  const refused = a.txRefused;
  assert.is(a.send(out, Int32Array.of(0, 1, 2), 3), 2);
  assert.is(a.txRefused, refused + 1);
  assert.is(a.lastErrno, 90); // EMSGSIZE
});

test('a packet to an unreachable peer is refused, not thrown', () => {
  const out = new Batch();
  fill(out, 0, PROTO_ESP, 100);
  out.peer[0] = parseIpv4Address('203.0.113.9'); // no route in the namespace
  out.count = 1;
  assert.is(a.send(out, Int32Array.of(0), 1), 0);
  assert.is(a.lastErrno, 101); // ENETUNREACH
});

test('an underlay address that is not on this host is refused with EADDRNOTAVAIL', () => {
  assert.throws(() => RawUnderlay.open('192.0.2.123'),
    (e: Error & { code?: string }) => e.code === 'NVI_ERR_UNDERLAY_OPEN' && /EADDRNOTAVAIL/.test(e.message)
      && /192\.0\.2\.123/.test(e.message));
  // The namespace's address is not the host's either.
  assert.throws(() => RawUnderlay.open(ADDR_A), /EADDRNOTAVAIL/);
});

test('a malformed underlay address is refused before any socket is opened', () => {
  assert.throws(() => RawUnderlay.open('10.0.0.256'), (e: Error & { code?: string }) => e.code === 'NVI_ERR_UNDERLAY_ADDRESS');
});

test('an underlay in a namespace that does not exist is refused with the namespace named', () => {
  assert.throws(() => RawUnderlay.open(ADDR_A, { netns: 'nvi-tn-missing' }),
    (e: Error & { code?: string }) => e.code === 'NVI_ERR_UNDERLAY_OPEN' && /nvi-tn-missing/.test(e.message));
});

test('a closed underlay reads nothing and sends nothing', () => {
  const c = RawUnderlay.open(ADDR_A, { netns: NS_A });
  c.onReadable(() => {});
  c.close();
  c.close();
  const out = new Batch();
  fill(out, 0, PROTO_ESP, 10);
  out.count = 1;
  assert.is(c.send(out, Int32Array.of(0), 1), 0);
  assert.is(c.read(new Batch(), 0), 0);
});

/** An underlay packet from A to B of `proto` whose payload (after the outer header) is `payload`. */
function packet(out: Batch, k: number, proto: number, payload: Buffer): void {
  const at = Batch.slot(k) + UNDERLAY_OFFSET;
  writeOuter(out.data, at, makeOuterTemplate(A, B, proto), IPV4_HLEN + payload.length, 0);
  payload.copy(out.data, at + IPV4_HLEN);
  out.init(k, at, IPV4_HLEN + payload.length, 0, 0);
  out.peer[k] = B;
}

test('three sharded underlays share the packets out: ESP by SPI mod 3, IPv6-in-IPv4 by the owner of the inner destination, short ones to shard 0, none twice', async () => {
  const SHARDS = 3;
  const shards = [0, 1, 2].map((index) => RawUnderlay.open(ADDR_B, { netns: NS_B, shard: { count: SHARDS, index } }));
  try {
    const out = new Batch();
    const want: number[][] = [[], [], []]; // tags each shard must get
    let k = 0;
    for (; k < 120; k++) {
      // ESP: the SPI (any 32-bit value, also above 2^31), then the tag where the sequence number goes.
      const spi = (Math.imul(k + 1, 0x9e3779b1) >>> 0);
      const p = Buffer.alloc(40);
      p.writeUInt32BE(spi, 0);
      p.writeUInt32BE(k, 4);
      packet(out, k, PROTO_ESP, p);
      want[spi % SHARDS].push(k);
    }
    for (; k < 240; k++) {
      // IPv6-in-IPv4: an inner IPv6 header whose addresses end in words s and d; the tag after it.
      const s = Math.imul(k, 0x85ebca6b) >>> 0;
      const d = Math.imul(k, 0xc2b2ae35) >>> 0;
      const p = Buffer.alloc(48);
      p[0] = 0x60;
      p.writeUInt32BE(s, 8 + 12);
      p.writeUInt32BE(d, 24 + 12);
      p.writeUInt32BE(k, 40);
      packet(out, k, PROTO_IPV6, p);
      want[ownerOf(p, SHARDS, 24)].push(k); // the worker that owns the destination VM
      assert.is(ownerOf(p, SHARDS, 24), d % SHARDS);
    }
    // Too short to hold an SPI (3 bytes), or the inner addresses (39 bytes): shard 0, whose parse counts them.
    const shortTags = new Map<number, number>();
    for (const [proto, len] of [[PROTO_ESP, 3], [PROTO_IPV6, 39], [PROTO_ESP, 0]]) {
      packet(out, k, proto, Buffer.alloc(len, 0xee));
      shortTags.set(IPV4_HLEN + len, k);
      want[0].push(k);
      k++;
    }
    out.count = k;
    const idx = Int32Array.from({ length: k }, (_, i) => i);
    assert.is(a.send(out, idx, k), k);
    await new Promise((r) => setTimeout(r, 100));
    for (let q = 0; q < SHARDS; q++) {
      const got: number[] = [];
      const rx = new Batch();
      for (let n = shards[q].read(rx, 0); n > 0; n = shards[q].read(rx, 0)) {
        for (let i = 0; i < rx.count; i++) {
          const len = rx.len[i];
          const proto = rx.data[rx.start[i] + 9];
          const tagAt = rx.start[i] + IPV4_HLEN + (proto === PROTO_ESP ? 4 : 40);
          got.push(shortTags.get(len) ?? rx.data.readUInt32BE(tagAt));
        }
        rx.reset();
      }
      assert.equal(got.sort((x, y) => x - y), want[q].sort((x, y) => x - y), `shard ${q} of ${SHARDS}`);
    }
    assert.ok(want.every((w) => w.length > 20), `every shard had its share: ${want.map((w) => w.length)}`);
  } finally {
    for (const u of shards) u.close();
  }
});

test('a shard outside its count is refused before a socket is opened', () => {
  for (const shard of [{ count: 2, index: 2 }, { count: 0, index: 0 }, { count: 2, index: -1 }, { count: 1.5, index: 0 }]) {
    assert.throws(() => RawUnderlay.open(ADDR_B, { netns: NS_B, shard }), (e: Error & { code?: string }) => e.code === 'NVI_ERR_UNDERLAY_SHARD');
  }
});

test.run();
