// Coalescing of TCP segments and UDP datagrams into super-frames for an offloading TAP: the
// native code and the TypeScript reference make the same bytes; a super-frame carries
// exactly its segments' payloads, in order, with the first header and the last segment's
// PSH/FIN (TCP) or a partial checksum over the whole (UDP, only when asked for).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Batch, FRAME_OFFSET } from '../src/dataplane/batch.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/wire/ethernet.js';
import { coalesce } from '../src/io/gro.js';
import { VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV6 } from '../src/io/gso.js';
import { onesSum } from '../src/wire/checksum.js';
import { PROTO_TCP, PROTO_UDP } from '../src/wire/ipv6.js';
import { parseIpv6Address } from '../src/base/address.js';
import { loadNative } from '../src/native/addon.js';
import { rng } from './rng.js';
import { udpFrame } from './udp-frame.js';

const A = parseIpv6Address('fd00:77::2');
const B = parseIpv6Address('fd00:77::1');
const MAC = Buffer.from('020000000001', 'hex');
const ROUTER = Buffer.from('024e56490001', 'hex');

function tcp(sport: number, seq: number, flags: number, payload: number, opts = 12, ts = 7): Buffer {
  const th = 20 + opts;
  const f = Buffer.alloc(ETH_HLEN + 40 + th + payload);
  f.fill(seq & 0xff, ETH_HLEN + 40 + th);
  writeEthIpv6(f, 0, MAC, ROUTER);
  f[14] = 0x60;
  f.writeUInt16BE(th + payload, 18);
  f[20] = PROTO_TCP;
  f[21] = 64;
  A.copy(f, 22);
  B.copy(f, 38);
  f.writeUInt16BE(sport, 54);
  f.writeUInt16BE(5001, 56);
  f.writeUInt32BE(seq >>> 0, 58);
  f.writeUInt32BE(777, 62);
  f[66] = (th / 4) << 4;
  f[67] = flags;
  f.writeUInt16BE(1000, 68);
  f.writeUInt16BE(0xbeef, 70);
  f.writeUInt16BE(0, 72);
  if (opts === 12) f.set([1, 1, 8, 10, 0, 0, 0, ts, 0, 0, 0, 3], 74);
  return f;
}

function udp(): Buffer {
  const f = tcp(1, 1, 0x10, 30, 0);
  f[20] = PROTO_UDP;
  return f;
}

/** A valid UDP datagram A -> B (correct checksum unless `check` is given), payload bytes all `fill`. */
function udpDatagram(sport: number, payload: number, fill: number, check?: number, hop = 64): Buffer {
  return udpFrame({ dstMac: MAC, srcMac: ROUTER, src: A, dst: B, sport, dport: 5201, payload: Buffer.alloc(payload, fill), hop, checksum: check });
}

function batchOf(frames: Buffer[]): { b: Batch; idx: Int32Array } {
  const b = new Batch();
  for (const f of frames) b.push(f, FRAME_OFFSET, 0, 0);
  return { b, idx: Int32Array.from(frames.map((_, k) => k)) };
}

test('a burst of one flow becomes one super-frame: payloads in order, first header, last PSH/FIN, GSO header', () => {
  const mss = 1400;
  const frames = [0, 1, 2, 3].map((k) => tcp(40000, 1000 + k * mss, k === 3 ? 0x19 : 0x10, k === 3 ? 500 : mss));
  const { b, idx } = batchOf(frames);
  const out = coalesce(b, idx, frames.length);
  assert.is(out.length, 1);
  const [s] = out;
  assert.is(s.count, 4);
  assert.is(s.vnet[0], VNET_F_NEEDS_CSUM);
  assert.is(s.vnet[1], VNET_GSO_TCPV6);
  assert.is(s.vnet.readUInt16LE(4), mss, 'gso_size is the first segment');
  assert.is(s.frame.readUInt16BE(18), 32 + 3 * mss + 500);
  assert.is(s.frame[67], 0x19, 'ACK with the last segment\'s PSH and FIN');
  assert.ok(s.frame.subarray(86).equals(Buffer.concat(frames.map((f) => f.subarray(86)))));
});

test('what may not be merged is written alone or starts a new run', () => {
  const mss = 1400;
  const cases: [string, Buffer[], number[]][] = [
    ['a gap in the sequence', [tcp(1, 0, 0x10, mss), tcp(1, mss + 1, 0x10, mss)], [1, 1]],
    ['another flow', [tcp(1, 0, 0x10, mss), tcp(2, mss, 0x10, mss)], [1, 1]],
    ['PSH ends the run', [tcp(1, 0, 0x18, mss), tcp(1, mss, 0x10, mss)], [1, 1]],
    ['a smaller segment ends the run', [tcp(1, 0, 0x10, mss), tcp(1, mss, 0x10, 100), tcp(1, mss + 100, 0x10, 100)], [2, 1]],
    ['a larger segment does not join', [tcp(1, 0, 0x10, 100), tcp(1, 100, 0x10, mss)], [1, 1]],
    ['different timestamps', [tcp(1, 0, 0x10, mss, 12, 7), tcp(1, mss, 0x10, mss, 12, 8)], [1, 1]],
    ['CWR on a later segment', [tcp(1, 0, 0x10, mss), tcp(1, mss, 0x90, mss)], [1, 1]],
    ['a pure ACK', [tcp(1, 0, 0x10, 0), tcp(1, 0, 0x10, 0)], [1, 1]],
    ['UDP', [udp(), udp()], [1, 1]],
    ['SYN', [tcp(1, 0, 0x12, 0), tcp(1, 1, 0x10, mss)], [1, 1]],
  ];
  for (const [name, frames, counts] of cases) {
    const { b, idx } = batchOf(frames);
    const out = coalesce(b, idx, frames.length);
    assert.equal(out.map((o) => o.count), counts, name);
    for (const o of out) if (o.count === 1) assert.is(o.vnet[0], VNET_F_DATA_VALID, `${name}: alone, marked checked`);
  }
});

test('UDP datagrams of one flow become one super-frame when asked for: payloads in order, whole lengths, partial checksum, GSO_UDP_L4', () => {
  const frames = [0, 1, 2, 3].map((k) => udpDatagram(40000, k === 3 ? 20 : 64, k));
  const { b, idx } = batchOf(frames);
  assert.equal(coalesce(b, idx, frames.length).map((o) => o.count), [1, 1, 1, 1], 'without udp: each alone');
  const out = coalesce(b, idx, frames.length, true);
  assert.is(out.length, 1);
  const [s] = out;
  assert.is(s.count, 4);
  assert.is(s.vnet[0], VNET_F_NEEDS_CSUM);
  assert.is(s.vnet[1], 5, 'VIRTIO_NET_HDR_GSO_UDP_L4');
  assert.is(s.vnet.readUInt16LE(2), 62, 'hdr_len: Ethernet, IPv6, UDP');
  assert.is(s.vnet.readUInt16LE(4), 64, 'gso_size is the first datagram\'s payload');
  assert.is(s.vnet.readUInt16LE(6), 54, 'csum_start: the UDP header');
  assert.is(s.vnet.readUInt16LE(8), 6, 'csum_offset: its checksum field');
  const whole = 8 + 3 * 64 + 20;
  assert.is(s.frame.readUInt16BE(18), whole, 'IPv6 payload length of the whole');
  assert.is(s.frame.readUInt16BE(58), whole, 'UDP length of the whole');
  let pseudo = onesSum(s.frame, 22, 32, 0) + whole + PROTO_UDP;
  while (pseudo > 0xffff) pseudo = (pseudo & 0xffff) + (pseudo >>> 16);
  assert.is(s.frame.readUInt16BE(60), pseudo, 'the pseudo-header sum, not complemented');
  assert.ok(s.frame.subarray(62).equals(Buffer.concat(frames.map((f) => f.subarray(62)))));
});

test('UDP datagrams that may not be merged are written alone or start a new run', () => {
  const cases: [string, Buffer[], number[]][] = [
    ['other ports', [udpDatagram(1, 64, 0), udpDatagram(2, 64, 1)], [1, 1]],
    ['a bad checksum', [udpDatagram(1, 64, 0), udpDatagram(1, 64, 1, 0x1234)], [1, 1]],
    ['no checksum', [udpDatagram(1, 64, 0, 0), udpDatagram(1, 64, 1)], [1, 1]],
    ['another hop limit', [udpDatagram(1, 64, 0), udpDatagram(1, 64, 1, undefined, 63)], [1, 1]],
    ['a larger datagram does not join', [udpDatagram(1, 20, 0), udpDatagram(1, 64, 1)], [1, 1]],
    ['a smaller datagram ends the run', [udpDatagram(1, 64, 0), udpDatagram(1, 20, 1), udpDatagram(1, 20, 2)], [2, 1]],
    ['an empty datagram', [udpDatagram(1, 0, 0), udpDatagram(1, 0, 0)], [1, 1]],
    ['64 datagrams at most', Array.from({ length: 65 }, (_, k) => udpDatagram(1, 64, k)), [64, 1]],
    ['64 KB at most', Array.from({ length: 50 }, (_, k) => udpDatagram(1, 1400, k)), [46, 4]],
  ];
  for (const [name, frames, counts] of cases) {
    const { b, idx } = batchOf(frames);
    assert.equal(coalesce(b, idx, frames.length, true).map((o) => o.count), counts, name);
  }
});

test('the native coalescing makes the same frames as the TypeScript reference', () => {
  const native = loadNative();
  const rand = rng(99);
  const pick = (n: number): number => Math.floor(rand() * n);
  const out = Buffer.alloc(256 * 2100);
  const outLens = new Int32Array(256);
  const counts = new Int32Array(256);
  let merged = 0;
  let mergedUdp = 0;
  for (let trial = 0; trial < 500; trial++) {
    const flows = 1 + pick(3);
    const seq = Array.from({ length: flows }, () => pick(2 ** 32));
    const frames: Buffer[] = [];
    const n = 1 + pick(120);
    for (let k = 0; k < n; k++) {
      const f = pick(flows);
      const size = pick(10) === 0 ? pick(1400) : 1400;
      const flags = [0x10, 0x10, 0x10, 0x10, 0x18, 0x11, 0x90, 0x12][pick(8)];
      if (pick(30) === 0) {
        frames.push(udp());
        continue;
      }
      if (pick(4) === 0) { // UDP of one of two flows, sometimes shorter, now and then a bad checksum
        frames.push(udpDatagram(50000 + pick(2), pick(8) === 0 ? pick(200) : 200, pick(256), pick(40) === 0 ? 0x1234 : undefined));
        continue;
      }
      frames.push(tcp(40000 + f, seq[f], flags, size, pick(15) === 0 ? 0 : 12, pick(20) === 0 ? 9 : 7));
      if (pick(25) !== 0) seq[f] = (seq[f] + size) >>> 0; // sometimes a gap
    }
    const { b, idx } = batchOf(frames);
    const udpRuns = trial % 2 === 1;
    const ref = coalesce(b, idx, n, udpRuns);
    const m = native.groCoalesce(b.data, b.start, b.len, idx, n, out, outLens, counts, udpRuns);
    assert.is(m, ref.length, `trial ${trial}: number of frames`);
    let at = 0;
    for (let k = 0; k < m; k++) {
      const mine = Buffer.concat([ref[k].vnet, ref[k].frame]);
      assert.is(counts[k], ref[k].count, `trial ${trial} frame ${k}: merged count`);
      assert.ok(out.subarray(at, at + outLens[k]).equals(mine), `trial ${trial} frame ${k}: bytes`);
      at += outLens[k];
      if (counts[k] > 1) merged++;
      if (counts[k] > 1 && ref[k].vnet[1] === 5) mergedUdp++;
    }
  }
  assert.ok(merged > 100, `${merged} super-frames: the random batches exercise merging`);
  assert.ok(mergedUdp > 50, `${mergedUdp} UDP super-frames`);
});

test.run();
