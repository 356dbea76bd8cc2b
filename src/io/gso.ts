// Offloads between the switch and a guest's TAP (the virtio-net header, IFF_VNET_HDR).
// With TSO the guest hands over TCP frames of up to 64 KB, with UDP segmentation offload
// (switch.offloadUdp, Linux >= 6.2) UDP super-frames of many datagrams, and with checksum
// offload it leaves checksums partial; before a frame may enter the pipeline (and be
// encrypted, which hides any "checksum still to do" flag from the receiver) the switch must
// make it what a wire would carry: MSS-sized segments, or datagrams of gso_size, with
// complete checksums. This is the TypeScript
// reference; the native addon does the same in C (src/native/gso.c) and
// test/gso.test.ts holds the two to identical bytes.
//
// virtio_net_hdr (virtio 1.x 5.1.6, little-endian for tun):
//   0 flags (NEEDS_CSUM 1, DATA_VALID 2)   1 gso_type (NONE 0, TCPV4 1, UDP 3, TCPV6 4, UDP_L4 5; ECN 0x80)
//   2 hdr_len   4 gso_size   6 csum_start   8 csum_offset

import { BATCH_MAX, FRAME_OFFSET, MAX_PACKET, type Batch } from '../dataplane/batch.js';
import { finishChecksum, onesSum } from '../wire/checksum.js';
import { Drop } from '../base/drops.js';
import { ETH_HLEN, ETH_OFF_TYPE, ETHERTYPE_IPV6 } from '../wire/ethernet.js';
import { IPV6_HLEN, IPV6_OFF_PLEN, Ipv6Parse, parseIpv6, pseudoHeaderChecksum, PROTO_TCP, PROTO_UDP } from '../wire/ipv6.js';

export const VNET_HDR_LEN = 10;
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_UDP_L4 = 5;
export const VNET_GSO_ECN = 0x80;

const UDP_HLEN = 8;
const UDP_OFF_LEN = 4;
const UDP_OFF_CSUM = 6;
const TCP_OFF_SEQ = 4;
const TCP_OFF_DOFF = 12;
const TCP_OFF_FLAGS = 13;
const TCP_OFF_CSUM = 16;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

export class VnetHdr {
  flags = 0;
  gsoType = 0;
  hdrLen = 0;
  gsoSize = 0;
  csumStart = 0;
  csumOffset = 0;

  read(buf: Uint8Array, off: number): void {
    this.flags = buf[off];
    this.gsoType = buf[off + 1];
    this.hdrLen = buf[off + 2] | (buf[off + 3] << 8);
    this.gsoSize = buf[off + 4] | (buf[off + 5] << 8);
    this.csumStart = buf[off + 6] | (buf[off + 7] << 8);
    this.csumOffset = buf[off + 8] | (buf[off + 9] << 8);
  }
}

/**
 * Finish a partial checksum (NEEDS_CSUM): the 16-bit field at csumStart + csumOffset holds
 * the pseudo-header sum; the checksum is the complement of the sum from csumStart to the
 * end. A result of 0 goes as 0xffff, as Linux does: the same in one's complement, and to UDP
 * over IPv6, 0 would mean no checksum, which it may not carry (RFC 8200 8.1): the receiver
 * would drop the datagram (one in 65,536). Returns false when the offsets do not fit the frame.
 */
export function completeChecksum(buf: Uint8Array, off: number, len: number, csumStart: number, csumOffset: number): boolean {
  const field = csumStart + csumOffset;
  if (csumStart >= len || field + 2 > len) return false;
  const c = finishChecksum(onesSum(buf, off + csumStart, len - csumStart, 0)) || 0xffff;
  buf[off + field] = c >> 8;
  buf[off + field + 1] = c & 0xff;
  return true;
}

/** What one offloaded frame became: `count` frames appended, or the Drop reason (none appended). */
export class GsoResult {
  drop: Drop = Drop.None;
  count = 0;
}

/** Turns frames read from an offloading TAP into wire frames in a batch. */
export class Segmenter {
  private readonly ip = new Ipv6Parse();

  /** Slots a frame of `len` bytes will need: its segment count, or 1. */
  slotsNeeded(len: number, h: VnetHdr): number {
    if ((h.gsoType & ~VNET_GSO_ECN) === VNET_GSO_NONE || h.gsoSize === 0) return 1;
    return Math.max(1, Math.ceil(Math.max(0, len - h.hdrLen) / h.gsoSize));
  }

  /**
   * Append the frame at src[off, off+len) (after its virtio-net header `h`) to the batch as
   * wire frames: TCP/IPv6 TSO frames cut at gso_size with complete checksums, other frames
   * with a partial checksum completed; `out` says how many, or why none. Returns false when
   * the batch has no room for all of them (nothing appended: keep the frame for the next batch).
   */
  append(src: Uint8Array, off: number, len: number, h: VnetHdr, b: Batch, port: number, timeUs: number, out: GsoResult): boolean {
    out.drop = Drop.None;
    out.count = 0;
    const gso = h.gsoType & ~VNET_GSO_ECN;
    if (gso === VNET_GSO_NONE) {
      if (b.count >= BATCH_MAX) return false;
      const partial = (h.flags & VNET_F_NEEDS_CSUM) !== 0;
      if (len > MAX_PACKET || (partial && (h.csumStart >= len || h.csumStart + h.csumOffset + 2 > len))) {
        out.drop = len > MAX_PACKET ? Drop.EthTooBig : Drop.EthOffloadMalformed;
        return true;
      }
      const i = b.push(src.subarray(off, off + len), FRAME_OFFSET, port, timeUs);
      if (partial) completeChecksum(b.data, b.start[i], len, h.csumStart, h.csumOffset);
      out.count = 1;
      return true;
    }
    if (gso !== VNET_GSO_TCPV6 && gso !== VNET_GSO_UDP_L4) {
      out.drop = Drop.EthOffloadMalformed; // TCPv4 or UFO: only IPv6 TCP and UDP segmentation are enabled
      return true;
    }
    return gso === VNET_GSO_UDP_L4 ? this.segmentUdp6(src, off, len, h, b, port, timeUs, out) : this.segmentTcp6(src, off, len, h, b, port, timeUs, out);
  }

  /** The IPv6 super-frame at src[off, off+len) parsed to its `proto` header (this.ip.l4), or false when it is not one. */
  private superFrame(src: Uint8Array, off: number, len: number, proto: number): boolean {
    const plen = len - ETH_HLEN - IPV6_HLEN;
    if (plen <= 0 || plen > 0xffff || ((src[off + ETH_OFF_TYPE] << 8) | src[off + ETH_OFF_TYPE + 1]) !== ETHERTYPE_IPV6) return false;
    const ip = off + ETH_HLEN;
    // The super-frame's IPv6 payload length is whatever the guest left there: set the true one
    // (this is our own read buffer) and parse the extension-header chain to the L4 header.
    src[ip + IPV6_OFF_PLEN] = plen >> 8;
    src[ip + IPV6_OFF_PLEN + 1] = plen & 0xff;
    const r = parseIpv6(src, ip, len - ETH_HLEN, this.ip);
    return r === Drop.None && !this.ip.fragment && this.ip.proto === proto && this.ip.l4 >= 0;
  }

  /** A UDP super-frame (GSO_UDP_L4) cut into datagrams of gso_size payload bytes, each with its lengths and checksum. */
  private segmentUdp6(src: Uint8Array, off: number, len: number, h: VnetHdr, b: Batch, port: number, timeUs: number, out: GsoResult): boolean {
    if (!this.superFrame(src, off, len, PROTO_UDP) || this.ip.l4 + UDP_HLEN > off + len || h.gsoSize === 0) {
      out.drop = Drop.EthOffloadMalformed;
      return true;
    }
    const n = cut(src, off, len, this.ip.l4 + UDP_HLEN, h.gsoSize, b, port, timeUs, out);
    if (n <= 0) return n === 0;
    const d = b.data;
    for (let i = b.count - n; i < b.count; i++) {
      const su = b.start[i] + (this.ip.l4 - off);
      const l4Len = b.start[i] + b.len[i] - su;
      d[su + UDP_OFF_LEN] = l4Len >> 8;
      d[su + UDP_OFF_LEN + 1] = l4Len & 0xff;
      d[su + UDP_OFF_CSUM] = 0;
      d[su + UDP_OFF_CSUM + 1] = 0;
      // Zero means "no checksum", which IPv6 forbids (RFC 8200 8.1).
      const c = pseudoHeaderChecksum(d, b.start[i] + ETH_HLEN, su, l4Len, PROTO_UDP) || 0xffff;
      d[su + UDP_OFF_CSUM] = c >> 8;
      d[su + UDP_OFF_CSUM + 1] = c & 0xff;
    }
    out.count = n;
    return true;
  }

  private segmentTcp6(src: Uint8Array, off: number, len: number, h: VnetHdr, b: Batch, port: number, timeUs: number, out: GsoResult): boolean {
    // Headers: Ethernet, IPv6 (extension headers allowed), TCP.
    const ok = this.superFrame(src, off, len, PROTO_TCP);
    const l4 = this.ip.l4;
    const tcpLen = ok ? (src[l4 + TCP_OFF_DOFF] >> 4) * 4 : 0;
    const mss = h.gsoSize;
    if (!ok || tcpLen < 20 || l4 + tcpLen > off + len || mss === 0) {
      out.drop = Drop.EthOffloadMalformed;
      return true;
    }
    const n = cut(src, off, len, l4 + tcpLen, mss, b, port, timeUs, out);
    if (n <= 0) return n === 0;
    const seq0 = ((src[l4 + TCP_OFF_SEQ] << 24) | (src[l4 + TCP_OFF_SEQ + 1] << 16) | (src[l4 + TCP_OFF_SEQ + 2] << 8) | src[l4 + TCP_OFF_SEQ + 3]) >>> 0;
    const flags = src[l4 + TCP_OFF_FLAGS];
    const d = b.data;
    for (let k = 0; k < n; k++) {
      const i = b.count - n + k;
      const stcp = b.start[i] + (l4 - off);
      const seq = (seq0 + k * mss) >>> 0;
      d[stcp + TCP_OFF_SEQ] = seq >>> 24;
      d[stcp + TCP_OFF_SEQ + 1] = (seq >>> 16) & 0xff;
      d[stcp + TCP_OFF_SEQ + 2] = (seq >>> 8) & 0xff;
      d[stcp + TCP_OFF_SEQ + 3] = seq & 0xff;
      let f = flags;
      if (k < n - 1) f &= ~(TCP_FIN | TCP_PSH);
      if (k > 0) f &= ~TCP_CWR;
      d[stcp + TCP_OFF_FLAGS] = f;
      // Checksum over the pseudo-header (RFC 8200 8.1) and the segment.
      d[stcp + TCP_OFF_CSUM] = 0;
      d[stcp + TCP_OFF_CSUM + 1] = 0;
      const c = pseudoHeaderChecksum(d, b.start[i] + ETH_HLEN, stcp, b.start[i] + b.len[i] - stcp, PROTO_TCP);
      d[stcp + TCP_OFF_CSUM] = c >> 8;
      d[stcp + TCP_OFF_CSUM + 1] = c & 0xff;
    }
    out.count = n;
    return true;
  }
}

/**
 * The super-frame at src[off, off+len), its headers ending at `hdrEnd`, cut into segments of
 * `size` payload bytes appended to the batch: each the headers and its share of the payload,
 * with its IPv6 payload length; the caller fixes its L4 header. Returns how many; -1 when the
 * batch has no room for all (nothing appended); 0 when a segment would be larger than any
 * frame (out.drop set).
 */
function cut(src: Uint8Array, off: number, len: number, hdrEnd: number, size: number, b: Batch, port: number, timeUs: number, out: GsoResult): number {
  const payload = off + len - hdrEnd;
  const n = Math.max(1, Math.ceil(payload / size));
  if (b.count + n > BATCH_MAX) return -1;
  const hlen = hdrEnd - off;
  if (hlen + Math.min(size, payload) > MAX_PACKET) {
    out.drop = Drop.EthTooBig; // a segment size beyond any MTU the switch advertises
    return 0;
  }
  const d = b.data;
  for (let k = 0; k < n; k++) {
    const segLen = Math.min(size, payload - k * size);
    const i = b.push(src.subarray(off, off + hlen), FRAME_OFFSET, port, timeUs);
    const at = b.start[i];
    d.set(src.subarray(hdrEnd + k * size, hdrEnd + k * size + segLen), at + hlen);
    b.len[i] = hlen + segLen;
    const ipPayload = hlen - ETH_HLEN - IPV6_HLEN + segLen;
    d[at + ETH_HLEN + IPV6_OFF_PLEN] = ipPayload >> 8;
    d[at + ETH_HLEN + IPV6_OFF_PLEN + 1] = ipPayload & 0xff;
  }
  return n;
}
