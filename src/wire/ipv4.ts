// IPv4 header (RFC 791) of the underlay: the outer header of ESP (protocol 50) and of
// plain IPv6-in-IPv4 (protocol 41, RFC 4213). Addresses are kept as uint32 in host order.

import { checksum } from './checksum.js';
import { Drop } from '../base/drops.js';

export const IPV4_HLEN = 20;
export const IPV4_OFF_VIHL = 0;
export const IPV4_OFF_TOS = 1;
export const IPV4_OFF_TOTLEN = 2;
export const IPV4_OFF_ID = 4;
export const IPV4_OFF_FRAG = 6;
export const IPV4_OFF_TTL = 8;
export const IPV4_OFF_PROTO = 9;
export const IPV4_OFF_CSUM = 10;
export const IPV4_OFF_SRC = 12;
export const IPV4_OFF_DST = 16;

const IPV4_FLAG_DF = 0x4000;
const IPV4_FLAG_MF = 0x2000;
const IPV4_FRAG_OFFSET_MASK = 0x1fff;
export const OUTER_TTL = 64;

/** Result of parseIpv4, reused across packets. */
export class Ipv4Parse {
  headerLength = 0;
  totalLength = 0;
  proto = 0;
  src = 0;
  dst = 0;
}

/**
 * Parse the IPv4 header at buf[off, off+avail). Fragments are refused: the kernel reassembles
 * before a raw socket sees them, so a fragment here is from a capture or an attacker.
 */
export function parseIpv4(buf: Uint8Array, off: number, avail: number, out: Ipv4Parse): Drop {
  if (avail < IPV4_HLEN) return Drop.Ipv4Truncated;
  const vihl = buf[off + IPV4_OFF_VIHL];
  if (vihl >> 4 !== 4) return Drop.Ipv4BadVersion;
  const hlen = (vihl & 0x0f) * 4;
  if (hlen < IPV4_HLEN || hlen > avail) return Drop.Ipv4BadHeader;
  const total = (buf[off + IPV4_OFF_TOTLEN] << 8) | buf[off + IPV4_OFF_TOTLEN + 1];
  if (total < hlen || total > avail) return Drop.Ipv4BadLength;
  if (checksum(buf, off, hlen) !== 0) return Drop.Ipv4BadChecksum;
  const frag = (buf[off + IPV4_OFF_FRAG] << 8) | buf[off + IPV4_OFF_FRAG + 1];
  if ((frag & IPV4_FLAG_MF) !== 0 || (frag & IPV4_FRAG_OFFSET_MASK) !== 0) return Drop.Ipv4Fragment;
  out.headerLength = hlen;
  out.totalLength = total;
  out.proto = buf[off + IPV4_OFF_PROTO];
  out.src = readU32(buf, off + IPV4_OFF_SRC);
  out.dst = readU32(buf, off + IPV4_OFF_DST);
  return Drop.None;
}

/**
 * A 20-byte outer header prepared at plug time (addresses, protocol, TTL, DF); per packet
 * only the total length, TOS and checksum are written.
 */
export function makeOuterTemplate(src: number, dst: number, proto: number): Buffer {
  const h = Buffer.alloc(IPV4_HLEN);
  h[IPV4_OFF_VIHL] = 0x45;
  h.writeUInt16BE(IPV4_FLAG_DF, IPV4_OFF_FRAG); // ID 0 is fine with DF set (RFC 6864)
  h[IPV4_OFF_TTL] = OUTER_TTL;
  h[IPV4_OFF_PROTO] = proto;
  h.writeUInt32BE(src >>> 0, IPV4_OFF_SRC);
  h.writeUInt32BE(dst >>> 0, IPV4_OFF_DST);
  return h;
}

/** Write the outer header from its template at `off` for a packet of `total` bytes. */
export function writeOuter(buf: Uint8Array, off: number, template: Uint8Array, total: number, tos: number): void {
  buf.set(template, off);
  buf[off + IPV4_OFF_TOS] = tos;
  buf[off + IPV4_OFF_TOTLEN] = total >> 8;
  buf[off + IPV4_OFF_TOTLEN + 1] = total & 0xff;
  const c = checksum(buf, off, IPV4_HLEN);
  buf[off + IPV4_OFF_CSUM] = c >> 8;
  buf[off + IPV4_OFF_CSUM + 1] = c & 0xff;
}

export function readU32(buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}
