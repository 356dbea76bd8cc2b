// Receive offload toward a guest's TAP: consecutive TCP segments of one flow, in the order
// the pipeline delivers them, are written as one super-frame with a GSO virtio-net header,
// so the guest's stack handles one large packet instead of dozens (what the kernel's GRO
// would do for a NIC); so are UDP datagrams of one flow (`udp`, for kernels that take UDP
// segmentation offload). This is the TypeScript reference; the native TAP write does the
// same in C (src/native/gro.c) and test/gro.test.ts holds them to identical bytes.
//
// Segments B may follow A in a super-frame (the conditions of the kernel's tcp_gro_receive):
// same Ethernet header, same IPv6 header but the payload length, no extension headers;
// same ports, ack number, window and options (timestamps included); B starts where A
// ends; the run so far carries none of the flags that end a burst (PSH, FIN, SYN, RST,
// URG); B's flags are A's but for PSH and FIN, and not CWR; every segment but the last has
// the size of the first (gso_size); at most 64 KB. The super-frame has the first
// segment's flags, with PSH and FIN of the last.
// The super-frame's TCP checksum is left partial (NEEDS_CSUM): the pseudo-header sum, as
// virtio expects; a frame written alone keeps its checksum and is marked DATA_VALID.
//
// UDP datagrams B may follow A: same Ethernet header, IPv6 header but the payload length (no
// extension headers), and ports; a UDP length equal to the IPv6 payload length, a payload,
// and a checksum that verifies (it is not written for a merged datagram); every datagram
// but the last has the size of the first (gso_size); at most 64 datagrams and 64 KB. The
// super-frame is the first datagram's headers with every payload, lengths of the whole,
// and a partial checksum over the whole length: the kernel adjusts it as it cuts.

import type { Batch } from '../dataplane/batch.js';
import { onesSum } from '../wire/checksum.js';
import { ETH_HLEN } from '../wire/ethernet.js';
import { IPV6_HLEN, PROTO_TCP, PROTO_UDP, pseudoHeaderChecksum } from '../wire/ipv6.js';
import { VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV6, VNET_GSO_UDP_L4, VNET_HDR_LEN } from './gso.js';

const UDP = ETH_HLEN + IPV6_HLEN; // offset of the UDP header
const UDP_HLEN = 8;
const MAX_UDP_SEGS = 64;

const TCP = ETH_HLEN + IPV6_HLEN; // offset of the TCP header in a frame without extension headers
const MAX_SUPER = 65_535 + IPV6_HLEN; // IPv6 packet: 64 KB of payload at most

const FIN = 0x01;
const PSH = 0x08;
const CWR = 0x80;
/** TCP flags that end a burst. */
const END_FLAGS = FIN | 0x02 | 0x04 | PSH | 0x20; // FIN SYN RST PSH URG

/** TCP header length of a frame that may start or join a super-frame, else 0. */
function tcpHeader(f: Uint8Array, at: number, len: number): number {
  if (len < TCP + 20 || f[at + 12] !== 0x86 || f[at + 13] !== 0xdd || f[at + ETH_HLEN + 6] !== PROTO_TCP) return 0;
  const plen = (f[at + ETH_HLEN + 4] << 8) | f[at + ETH_HLEN + 5];
  const th = (f[at + TCP + 12] >> 4) * 4;
  if (th < 20 || ETH_HLEN + IPV6_HLEN + plen !== len || TCP + th > len) return 0;
  return th;
}

function readU32(f: Uint8Array, o: number): number {
  return ((f[o] << 24) | (f[o + 1] << 16) | (f[o + 2] << 8) | f[o + 3]) >>> 0;
}

/** May frame b (at bAt) follow the run that starts with frame a (at aAt) and whose next sequence number is nextSeq? */
function joins(d: Uint8Array, aAt: number, th: number, bAt: number, bLen: number, nextSeq: number): boolean {
  if (tcpHeader(d, bAt, bLen) !== th || bLen - TCP - th <= 0) return false;
  const bFlags = d[bAt + TCP + 13];
  if ((bFlags & CWR) !== 0 || (bFlags & ~(FIN | PSH)) !== d[aAt + TCP + 13]) return false;
  // Ethernet (14), IPv6 version/class/label (4), next header and hop limit (2), addresses (32).
  for (let k = 0; k < 14; k++) if (d[aAt + k] !== d[bAt + k]) return false;
  for (let k = 0; k < 4; k++) if (d[aAt + ETH_HLEN + k] !== d[bAt + ETH_HLEN + k]) return false;
  for (let k = 6; k < IPV6_HLEN; k++) if (d[aAt + ETH_HLEN + k] !== d[bAt + ETH_HLEN + k]) return false;
  // TCP: ports; sequence continues the run; ack, window; the same options.
  const a = aAt + TCP;
  const b = bAt + TCP;
  for (let k = 0; k < 4; k++) if (d[a + k] !== d[b + k]) return false;
  if (readU32(d, b + 4) !== nextSeq) return false;
  for (let k = 8; k < th; k++) {
    if (k === 13 || k === 16 || k === 17) continue; // flags are checked by the caller; checksums differ
    if (d[a + k] !== d[b + k]) return false;
  }
  return true;
}

/** A ones'-complement sum folded to 16 bits, not complemented (a partial checksum). */
function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** Payload length of a UDP datagram that may start or join a super-frame, else 0 (see above). */
function udpPayload(f: Uint8Array, at: number, len: number): number {
  if (len <= UDP + UDP_HLEN || f[at + 12] !== 0x86 || f[at + 13] !== 0xdd || f[at + ETH_HLEN + 6] !== PROTO_UDP) return 0;
  const plen = (f[at + ETH_HLEN + 4] << 8) | f[at + ETH_HLEN + 5];
  const ulen = (f[at + UDP + 4] << 8) | f[at + UDP + 5];
  if (ETH_HLEN + IPV6_HLEN + plen !== len || ulen !== plen) return 0;
  if (f[at + UDP + 6] === 0 && f[at + UDP + 7] === 0) return 0;
  if (pseudoHeaderChecksum(f, at + ETH_HLEN, at + UDP, ulen, PROTO_UDP) !== 0) return 0;
  return ulen - UDP_HLEN;
}

function sameUdpFlow(d: Uint8Array, aAt: number, bAt: number): boolean {
  for (let k = 0; k < ETH_HLEN + 4; k++) if (d[aAt + k] !== d[bAt + k]) return false;
  for (let k = ETH_HLEN + 6; k < ETH_HLEN + IPV6_HLEN + 4; k++) if (d[aAt + k] !== d[bAt + k]) return false;
  return true;
}

/** The end (exclusive) of the UDP run that starts at idx[k]. */
function udpRun(b: Batch, idx: Int32Array, k: number, n: number): number {
  const d = b.data;
  const at = b.start[idx[k]];
  const seg = udpPayload(d, at, b.len[idx[k]]);
  if (seg === 0) return k + 1;
  let total = b.len[idx[k]] - ETH_HLEN;
  let end = k + 1;
  while (end < n && end - k < MAX_UDP_SEGS) {
    const j = idx[end];
    const s = udpPayload(d, b.start[j], b.len[j]);
    if (s === 0 || s > seg || total + s > MAX_SUPER || !sameUdpFlow(d, at, b.start[j])) break;
    total += s;
    end++;
    if (s < seg) break;
  }
  return end;
}

/** The virtio-net header of a super-frame: partial checksum at csumStart + csumOffset, segments of `size` after `hdr` bytes of headers. */
function gsoHeader(type: number, hdr: number, size: number, csumStart: number, csumOffset: number): Buffer {
  const vnet = Buffer.alloc(VNET_HDR_LEN);
  vnet[0] = VNET_F_NEEDS_CSUM;
  vnet[1] = type;
  vnet.writeUInt16LE(hdr, 2);
  vnet.writeUInt16LE(size, 4);
  vnet.writeUInt16LE(csumStart, 6);
  vnet.writeUInt16LE(csumOffset, 8);
  return vnet;
}

function udpSuperFrame(b: Batch, idx: Int32Array, k: number, end: number): GroFrame {
  const d = b.data;
  const at = b.start[idx[k]];
  const hdr = UDP + UDP_HLEN;
  const parts = [d.subarray(at, at + hdr)];
  for (let m = k; m < end; m++) parts.push(d.subarray(b.start[idx[m]] + hdr, b.start[idx[m]] + b.len[idx[m]]));
  const frame = Buffer.concat(parts);
  const plen = frame.length - ETH_HLEN - IPV6_HLEN;
  frame.writeUInt16BE(plen, ETH_HLEN + 4);
  frame.writeUInt16BE(plen, UDP + 4);
  frame.writeUInt16BE(fold(onesSum(frame, ETH_HLEN + 8, 32, 0) + plen + PROTO_UDP), UDP + 6);
  return { vnet: gsoHeader(VNET_GSO_UDP_L4, hdr, b.len[idx[k]] - hdr, UDP, 6), frame, count: end - k };
}

export interface GroFrame {
  /** The virtio-net header to write in front of the frame. */
  readonly vnet: Buffer;
  readonly frame: Buffer;
  /** How many delivered frames it carries. */
  readonly count: number;
}

/**
 * The frames b[idx[0..n)] as they would be written to a TAP: runs of one TCP flow (and
 * with `udp` of one UDP flow) as super-frames, everything else alone. Allocates (reference
 * and tests only).
 */
export function coalesce(b: Batch, idx: Int32Array, n: number, udp = false): GroFrame[] {
  const d = b.data;
  const out: GroFrame[] = [];
  for (let k = 0; k < n; ) {
    const i = idx[k];
    const at = b.start[i];
    const len = b.len[i];
    if (udp && len > UDP && d[at + ETH_HLEN + 6] === PROTO_UDP) {
      const end = udpRun(b, idx, k, n);
      if (end > k + 1) {
        out.push(udpSuperFrame(b, idx, k, end));
        k = end;
        continue;
      }
    }
    const th = tcpHeader(d, at, len);
    const mss = len - TCP - th;
    let end = k + 1;
    if (th > 0 && mss > 0 && (d[at + TCP + 13] & END_FLAGS) === 0) {
      let nextSeq = (readU32(d, at + TCP + 4) + mss) >>> 0;
      let total = len - ETH_HLEN;
      while (end < n) {
        const j = idx[end];
        const bLen = b.len[j];
        const seg = bLen - TCP - th;
        if (total + seg > MAX_SUPER || seg > mss || !joins(d, at, th, b.start[j], bLen, nextSeq)) break;
        total += seg;
        nextSeq = (nextSeq + seg) >>> 0;
        end++;
        if (seg < mss || (d[b.start[j] + TCP + 13] & END_FLAGS) !== 0) break; // the run's last segment
      }
    }
    if (end === k + 1) {
      const vnet = Buffer.alloc(VNET_HDR_LEN);
      vnet[0] = VNET_F_DATA_VALID;
      vnet[1] = VNET_GSO_NONE;
      out.push({ vnet, frame: Buffer.from(d.subarray(at, at + len)), count: 1 });
      k = end;
      continue;
    }
    // Headers of the first segment, payloads of all, flags of the last.
    const parts = [d.subarray(at, at + TCP + th)];
    for (let m = k; m < end; m++) parts.push(d.subarray(b.start[idx[m]] + TCP + th, b.start[idx[m]] + b.len[idx[m]]));
    const frame = Buffer.concat(parts);
    const plen = frame.length - ETH_HLEN - IPV6_HLEN;
    frame[ETH_HLEN + 4] = plen >> 8;
    frame[ETH_HLEN + 5] = plen & 0xff;
    frame[TCP + 13] = d[at + TCP + 13] | (d[b.start[idx[end - 1]] + TCP + 13] & (FIN | PSH));
    // Partial checksum: the pseudo-header sum, folded, not complemented.
    const sum = fold(onesSum(frame, ETH_HLEN + 8, 32, 0) + plen + PROTO_TCP);
    frame[TCP + 16] = sum >> 8;
    frame[TCP + 17] = sum & 0xff;
    out.push({ vnet: gsoHeader(VNET_GSO_TCPV6, TCP + th, mss, TCP, 16), frame, count: end - k });
    k = end;
  }
  return out;
}
