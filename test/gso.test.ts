// Segmentation of offloaded frames (TSO, UDP segmentation, partial checksums) into wire
// frames: every segment is a valid IPv6/TCP packet with a correct checksum, the stream is
// unchanged, flags and sequence numbers are those the segments would have had on a wire;
// every datagram cut from a UDP super-frame is a valid IPv6/UDP packet with its share of
// the payload.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Batch, BATCH_MAX, FRAME_OFFSET, MAX_PACKET, SLOT_BYTES } from '../src/dataplane/batch.js';
import { finishChecksum, onesSum } from '../src/wire/checksum.js';
import { Drop } from '../src/base/drops.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/wire/ethernet.js';
import { GsoResult, Segmenter, VnetHdr, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV6 } from '../src/io/gso.js';
import { Ipv6Parse, parseIpv6, PROTO_TCP, PROTO_UDP, pseudoHeaderChecksum } from '../src/wire/ipv6.js';
import { parseIpv6Address } from '../src/base/address.js';
import { GSO_MALFORMED, GSO_NO_ROOM, GSO_TOO_BIG, loadNative } from '../src/native/addon.js';
import { rng } from './rng.js';
import { udpFrame } from './udp-frame.js';

const SRC = parseIpv6Address('fd9a:3c7e:51b2:1:f63b:ba70:5b22:fa85');
const DST = parseIpv6Address('fd9a:3c7e:51b2:1:6efa:c636:9039:91e2');
const MAC = Buffer.from('0236903991e2', 'hex');
const ROUTER = Buffer.from('024e56490001', 'hex');

/** Pseudo-header sum as Linux leaves it in a partial checksum field (folded, not complemented). */
function pseudo(proto: number, l4Len: number): number {
  let sum = onesSum(Buffer.concat([SRC, DST]), 0, 32, 0) + l4Len + proto;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** A TSO super-frame as a guest kernel hands it over: TCP with timestamps, partial checksum. */
function tsoFrame(payload: Buffer, flags: number, seq: number): Buffer {
  const tcpLen = 32;
  const f = Buffer.alloc(ETH_HLEN + 40 + tcpLen + payload.length);
  writeEthIpv6(f, 0, ROUTER, MAC);
  const ip = ETH_HLEN;
  f[ip] = 0x60;
  f.writeUInt16BE(0, ip + 4); // the guest may leave it anything: the segmenter sets its own
  f[ip + 6] = PROTO_TCP;
  f[ip + 7] = 64;
  SRC.copy(f, ip + 8);
  DST.copy(f, ip + 24);
  const t = ip + 40;
  f.writeUInt16BE(40000, t);
  f.writeUInt16BE(5201, t + 2);
  f.writeUInt32BE(seq >>> 0, t + 4);
  f.writeUInt32BE(0x11223344, t + 8);
  f[t + 12] = (tcpLen / 4) << 4;
  f[t + 13] = flags;
  f.writeUInt16BE(502, t + 14);
  f.writeUInt16BE(pseudo(PROTO_TCP, tcpLen + payload.length), t + 16);
  f.set([1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9], t + 20); // NOP NOP TS
  payload.copy(f, t + tcpLen);
  return f;
}

/** A UDP super-frame as a guest kernel hands it over (UDP_SEGMENT): lengths of the whole, partial checksum. */
function usoFrame(payload: Buffer): Buffer {
  return udpFrame({ dstMac: ROUTER, srcMac: MAC, src: SRC, dst: DST, sport: 40001, dport: 5201, payload, checksum: 'partial' });
}

function hdr(gsoType: number, gsoSize: number, hdrLen: number, csumStart: number, csumOffset: number): VnetHdr {
  const h = new VnetHdr();
  Object.assign(h, { flags: VNET_F_NEEDS_CSUM, gsoType, hdrLen, gsoSize, csumStart, csumOffset });
  return h;
}

function tcpChecksumOk(frame: Buffer): boolean {
  const ip = ETH_HLEN;
  const l4Len = frame.readUInt16BE(ip + 4);
  const sum = onesSum(frame, ip + 8, 32, 0) + l4Len + PROTO_TCP;
  return finishChecksum(onesSum(frame, ip + 40, l4Len, sum)) === 0;
}

test('a TSO frame becomes MSS-sized segments: valid IPv6/TCP, correct checksums, the same byte stream', () => {
  const rand = rng(7);
  for (const size of [1, 1399, 1400, 1401, 10_000, 65_000]) {
    const payload = Buffer.from(Array.from({ length: size }, () => Math.floor(rand() * 256)));
    const frame = tsoFrame(payload, 0x18 | 0x01 | 0x80, 0xfffff000); // PSH ACK FIN CWR, sequence about to wrap
    const b = new Batch();
    const out = new GsoResult();
    const seg = new Segmenter();
    assert.ok(seg.append(frame, 0, frame.length, hdr(VNET_GSO_TCPV6, 1400, 86, 54, 16), b, 3, 99, out));
    assert.is(out.drop, Drop.None);
    const n = Math.ceil(size / 1400);
    assert.is(out.count, n, `size ${size}`);
    const parsed = new Ipv6Parse();
    const stream: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const f = Buffer.from(b.view(i));
      assert.is(parseIpv6(f, ETH_HLEN, f.length - ETH_HLEN, parsed), Drop.None, `segment ${i}`);
      assert.is(parsed.length, f.length - ETH_HLEN, 'IPv6 payload length matches the segment');
      assert.ok(tcpChecksumOk(f), `segment ${i} checksum`);
      assert.is(f.readUInt32BE(ETH_HLEN + 44), (0xfffff000 + i * 1400) >>> 0, `segment ${i} sequence`);
      const flags = f[ETH_HLEN + 53];
      assert.is((flags & 0x01) !== 0, i === n - 1, 'FIN only on the last');
      assert.is((flags & 0x08) !== 0, i === n - 1, 'PSH only on the last');
      assert.is((flags & 0x80) !== 0, i === 0, 'CWR only on the first');
      assert.is(b.port[i], 3);
      assert.ok(f.subarray(ETH_HLEN + 60, ETH_HLEN + 72).equals(frame.subarray(ETH_HLEN + 60, ETH_HLEN + 72)), 'options kept');
      stream.push(f.subarray(ETH_HLEN + 72));
      assert.ok(f.length - ETH_HLEN <= 40 + 32 + 1400);
    }
    assert.ok(Buffer.concat(stream).equals(payload), `size ${size}: stream unchanged`);
  }
});

test('a frame with a partial checksum gets its checksum completed and nothing else changes', () => {
  const payload = Buffer.from('hello, world, hello');
  const udpLen = 8 + payload.length;
  const f = udpFrame({ dstMac: ROUTER, srcMac: MAC, src: SRC, dst: DST, sport: 1234, dport: 514, payload, checksum: 'partial' });
  const b = new Batch();
  const out = new GsoResult();
  assert.ok(new Segmenter().append(f, 0, f.length, hdr(VNET_GSO_NONE, 0, 0, 54, 6), b, 0, 0, out));
  assert.is(out.count, 1);
  const got = Buffer.from(b.view(0));
  const sum = onesSum(got, 22, 32, 0) + udpLen + PROTO_UDP;
  assert.is(finishChecksum(onesSum(got, 54, udpLen, sum)), 0, 'checksum verifies');
  got.writeUInt16BE(0, 60);
  const orig = Buffer.from(f);
  orig.writeUInt16BE(0, 60);
  assert.ok(got.equals(orig));
});

test('a partial UDP checksum that completes to 0 goes as 0xffff (0 means no checksum, which UDP over IPv6 may not carry), in the reference and the native segmenter alike', () => {
  // 8 payload bytes like a numbered probe; the last 2 chosen so that the complete checksum is 0.
  const payload = Buffer.from([0, 0, 0, 0, 0, 0x84, 0, 0]);
  const udpLen = 8 + payload.length;
  const probe = udpFrame({ dstMac: ROUTER, srcMac: MAC, src: SRC, dst: DST, sport: 40001, dport: 7000, payload, checksum: 'valid' });
  const c = probe.readUInt16BE(60) === 0xffff ? 0 : probe.readUInt16BE(60);
  payload.writeUInt16BE(c, 6); // a word at an even offset: the sum now comes to 0xffff, and its complement, the checksum, to 0
  const f = udpFrame({ dstMac: ROUTER, srcMac: MAC, src: SRC, dst: DST, sport: 40001, dport: 7000, payload, checksum: 'partial' });
  const b = new Batch();
  const out = new GsoResult();
  assert.ok(new Segmenter().append(f, 0, f.length, hdr(VNET_GSO_NONE, 0, 0, 54, 6), b, 0, 0, out));
  const got = Buffer.from(b.view(0));
  assert.is(got.readUInt16BE(60), 0xffff, 'the reference: 0xffff, not 0');
  const sum = onesSum(got, 22, 32, 0) + udpLen + PROTO_UDP;
  assert.is(finishChecksum(onesSum(got, 54, udpLen, sum)), 0, 'and it verifies');
  const v = Buffer.alloc(10 + f.length);
  v[0] = VNET_F_NEEDS_CSUM;
  v.writeUInt16LE(54, 6);
  v.writeUInt16LE(6, 8);
  f.copy(v, 10);
  const dst = Buffer.alloc(SLOT_BYTES);
  const lens = new Int32Array(BATCH_MAX);
  assert.is(loadNative().gsoSegment(v, 0, v.length, dst, FRAME_OFFSET, SLOT_BYTES, MAX_PACKET, 1, lens), 1);
  assert.ok(dst.subarray(FRAME_OFFSET, FRAME_OFFSET + lens[0]).equals(got), 'the native segmenter: the same bytes');
});

test('a TSO frame that does not fit the rest of the batch is left whole for the next one', () => {
  const frame = tsoFrame(Buffer.alloc(14_000), 0x10, 1);
  const b = new Batch();
  b.count = BATCH_MAX - 5;
  const out = new GsoResult();
  assert.not.ok(new Segmenter().append(frame, 0, frame.length, hdr(VNET_GSO_TCPV6, 1400, 86, 54, 16), b, 0, 0, out));
  assert.is(b.count, BATCH_MAX - 5);
  assert.is(new Segmenter().slotsNeeded(frame.length - 86 + 86, hdr(VNET_GSO_TCPV6, 1400, 86, 54, 16)), 10);
});

test('a UDP super-frame becomes datagrams of gso_size: valid IPv6/UDP, correct checksums, the payload shared out in order', () => {
  const payload = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7 + 3) & 0xff));
  const frame = usoFrame(payload);
  const b = new Batch();
  const out = new GsoResult();
  assert.ok(new Segmenter().append(frame, 0, frame.length, hdr(5, 300, 62, 54, 6), b, 3, 0, out));
  assert.is(out.drop, Drop.None);
  assert.is(out.count, 4, '300 + 300 + 300 + 100');
  const parts: Buffer[] = [];
  for (let i = 0; i < b.count; i++) {
    const f = Buffer.from(b.view(i));
    const size = i < 3 ? 300 : 100;
    assert.is(f.length, 62 + size, `datagram ${i}: length`);
    assert.is(f.readUInt16BE(18), 8 + size, 'IPv6 payload length');
    assert.is(f.readUInt16BE(58), 8 + size, 'UDP length');
    assert.is(pseudoHeaderChecksum(f, ETH_HLEN, 54, 8 + size, PROTO_UDP), 0, `datagram ${i}: checksum`);
    assert.is(f.readUInt16BE(54), 40001);
    const ip = new Ipv6Parse();
    assert.is(parseIpv6(f, ETH_HLEN, f.length - ETH_HLEN, ip), Drop.None);
    parts.push(f.subarray(62));
  }
  assert.ok(Buffer.concat(parts).equals(payload), 'the payloads, in order');
});

test('offloaded frames that do not make sense are refused as malformed, never half appended', () => {
  const ok = tsoFrame(Buffer.alloc(3000), 0x10, 1);
  const cases: [string, Buffer, VnetHdr][] = [
    ['a TCPv4 segmentation request', ok, hdr(1, 1400, 86, 54, 16)],
    ['UDP segmentation of a TCP packet', ok, hdr(5, 1400, 62, 54, 6)],
    ['UDP segmentation with no gso_size', usoFrame(Buffer.alloc(300)), hdr(5, 0, 62, 54, 6)],
    ['not IPv6', Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x00]), ok.subarray(14)]), hdr(VNET_GSO_TCPV6, 1400, 86, 54, 16)],
    ['TCP offload of a UDP packet', (() => { const f = Buffer.from(ok); f[20] = PROTO_UDP; return f; })(), hdr(VNET_GSO_TCPV6, 1400, 86, 54, 16)],
    ['a TCP header length past the frame', ok.subarray(0, 60), hdr(VNET_GSO_TCPV6, 1400, 86, 54, 16)],
    ['a checksum offset past the frame', ok.subarray(0, 100), hdr(VNET_GSO_NONE, 0, 0, 90, 16)],
  ];
  for (const [name, frame, h] of cases) {
    const b = new Batch();
    const out = new GsoResult();
    assert.ok(new Segmenter().append(frame, 0, frame.length, h, b, 0, 0, out), name);
    assert.is(out.drop, Drop.EthOffloadMalformed, name);
    assert.is(b.count, 0, name);
  }
});

test('the native segmenter makes the same bytes as the TypeScript reference, and refuses the same frames', () => {
  const native = loadNative();
  const rand = rng(2024);
  const pick = (n: number): number => Math.floor(rand() * n);
  const lens = new Int32Array(BATCH_MAX);
  const seen = new Set<string>();
  for (let trial = 0; trial < 3000; trial++) {
    const size = [0, 1, 100, 1400, 1401, 9000, 64_000][pick(7)];
    const udp = pick(3) === 0;
    const frame = udp ? usoFrame(Buffer.alloc(size, trial & 0xff)) : tsoFrame(Buffer.alloc(size, trial & 0xff), [0x10, 0x18, 0x19, 0x98][pick(4)], pick(2 ** 32));
    const gso = udp ? [5, 5, VNET_GSO_NONE, VNET_GSO_TCPV6][pick(4)] : [VNET_GSO_TCPV6, VNET_GSO_TCPV6, VNET_GSO_NONE, 1, 5, 0x84][pick(6)];
    const h = udp
      ? hdr(gso, [0, 1, 64, 300, 1400, 1900][pick(6)], 62, pick(4) === 0 ? pick(200) : 54, pick(4) === 0 ? pick(40) : 6)
      : hdr(gso, [0, 88, 536, 1400, 1460, 1900][pick(6)], 86, pick(4) === 0 ? pick(200) : 54, pick(4) === 0 ? pick(40) : 16);
    if (!udp && pick(5) === 0) frame[54 + 12] = pick(256); // a random TCP data offset
    if (pick(8) === 0) frame[20] = [0, 17, 43, 44, 60][pick(5)]; // other next headers
    const room = pick(6) === 0 ? 1 + pick(4) : BATCH_MAX;
    // The TypeScript reference.
    const b = new Batch();
    b.count = BATCH_MAX - room;
    const out = new GsoResult();
    const fits = new Segmenter().append(Buffer.from(frame), 0, frame.length, h, b, 0, 0, out);
    // The native one, from the same bytes behind their virtio-net header.
    const v = Buffer.alloc(10 + frame.length);
    v[0] = h.flags;
    v[1] = h.gsoType;
    v.writeUInt16LE(h.hdrLen, 2);
    v.writeUInt16LE(h.gsoSize, 4);
    v.writeUInt16LE(h.csumStart, 6);
    v.writeUInt16LE(h.csumOffset, 8);
    frame.copy(v, 10);
    const dst = Buffer.alloc(BATCH_MAX * SLOT_BYTES);
    const first = (BATCH_MAX - room) * SLOT_BYTES + FRAME_OFFSET;
    const r = native.gsoSegment(v, 0, v.length, dst, first, SLOT_BYTES, MAX_PACKET, room, lens);
    const ts = !fits ? GSO_NO_ROOM : out.drop === Drop.EthOffloadMalformed ? GSO_MALFORMED : out.drop === Drop.EthTooBig ? GSO_TOO_BIG : out.count;
    assert.ok(out.drop === Drop.None || out.drop === Drop.EthOffloadMalformed || out.drop === Drop.EthTooBig, `trial ${trial}: ${out.drop}`);
    assert.is(r, ts, `trial ${trial}: native ${r}, reference ${ts}`);
    seen.add(String(Math.sign(r)) + (r < 0 ? r : ''));
    if (udp && gso === 5 && r > 1) seen.add('udp datagrams');
    for (let k = 0; k < Math.max(r, 0); k++) {
      const i = BATCH_MAX - room + k;
      const mine = b.view(i);
      assert.is(lens[k], mine.length, `trial ${trial} segment ${k} length`);
      assert.ok(dst.subarray(first + k * SLOT_BYTES, first + k * SLOT_BYTES + lens[k]).equals(mine), `trial ${trial} segment ${k} bytes`);
    }
  }
  for (const outcome of ['1', '-1-1', '-1-2', '-1-3', 'udp datagrams']) assert.ok(seen.has(outcome), `outcome ${outcome} never happened`);
});

test.run();
