// IPv6 header (RFC 8200) and its extension-header chain. Parsing reads by named offsets,
// checks bounds before every read and reports a Drop code; it never throws for a packet.

import { Drop } from '../base/drops.js';
import { finishChecksum, onesSum } from './checksum.js';

export const IPV6_HLEN = 40;
export const IPV6_OFF_VTF = 0;
export const IPV6_OFF_PLEN = 4;
export const IPV6_OFF_NEXT = 6;
export const IPV6_OFF_HOPS = 7;
export const IPV6_OFF_SRC = 8;
export const IPV6_OFF_DST = 24;

export const PROTO_HOPOPTS = 0;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_IPV6 = 41;
export const PROTO_ROUTING = 43;
export const PROTO_FRAGMENT = 44;
export const PROTO_ESP = 50;
export const PROTO_AH = 51;
export const PROTO_ICMPV6 = 58;
export const PROTO_NONE = 59;
export const PROTO_DSTOPTS = 60;

/** The switch walks at most this many extension headers before it gives up on a packet. */
export const MAX_EXT_HEADERS = 8;

/** Result of parseIpv6: where the upper layer starts and what it is. Reused, never allocated per packet. */
export class Ipv6Parse {
  /** Total length of the IPv6 packet (40 + payload length); trailing bytes beyond it are padding. */
  length = 0;
  l4 = -1;
  proto = PROTO_NONE;
  fragment = false;
  laterFragment = false;
}

/** Minimum upper-layer header the switch must see to apply policy (ports, TCP flags, ICMPv6 type). */
function minUpperHeader(proto: number): number {
  if (proto === PROTO_TCP) return 20;
  if (proto === PROTO_UDP) return 8;
  if (proto === PROTO_ICMPV6) return 4;
  return 0;
}

/**
 * Parse the IPv6 packet at buf[off, off+avail). On success fills `out` and returns Drop.None.
 * A first fragment must carry the whole header chain and upper-layer header (RFC 7112).
 */
export function parseIpv6(buf: Uint8Array, off: number, avail: number, out: Ipv6Parse): Drop {
  if (avail < IPV6_HLEN) return Drop.Ipv6Truncated;
  if (buf[off + IPV6_OFF_VTF] >> 4 !== 6) return Drop.Ipv6BadVersion;
  const plen = (buf[off + IPV6_OFF_PLEN] << 8) | buf[off + IPV6_OFF_PLEN + 1];
  if (plen === 0) return Drop.Ipv6BadLength; // jumbograms (RFC 2675) are not carried
  const length = IPV6_HLEN + plen;
  if (length > avail) return Drop.Ipv6Truncated;
  out.length = length;
  out.fragment = false;
  out.laterFragment = false;

  const end = off + length;
  let next = buf[off + IPV6_OFF_NEXT];
  let p = off + IPV6_HLEN;
  for (let n = 0; ; n++) {
    if (next !== PROTO_HOPOPTS && next !== PROTO_ROUTING && next !== PROTO_FRAGMENT &&
        next !== PROTO_DSTOPTS && next !== PROTO_AH) {
      break;
    }
    if (n === MAX_EXT_HEADERS) return Drop.Ipv6ExtTooLong;
    if (next === PROTO_HOPOPTS && n !== 0) return Drop.Ipv6ExtOrder; // only allowed first (RFC 8200 4.1, 4.3)
    if (p + 8 > end) return Drop.Ipv6ExtTruncated;
    const hdrNext = buf[p];
    let hdrLen: number;
    if (next === PROTO_FRAGMENT) {
      hdrLen = 8;
      const offsetField = ((buf[p + 2] << 8) | buf[p + 3]) >> 3;
      out.fragment = true;
      if (offsetField !== 0) out.laterFragment = true;
    } else if (next === PROTO_AH) {
      hdrLen = (buf[p + 1] + 2) * 4;
    } else {
      hdrLen = (buf[p + 1] + 1) * 8;
    }
    if (p + hdrLen > end) return Drop.Ipv6ExtTruncated;
    p += hdrLen;
    next = hdrNext;
    if (out.laterFragment) break; // nothing after the fragment header is a header
  }
  out.proto = next;
  if (out.laterFragment) {
    out.l4 = -1;
    return Drop.None;
  }
  if (end - p < minUpperHeader(next)) return Drop.Ipv6Truncated;
  out.l4 = p;
  return Drop.None;
}

// ---- Addresses ------------------------------------------------------------------------

/** True when buf[off, off+16) equals addr (16 bytes). */
export function addrEquals(buf: Uint8Array, off: number, addr: Uint8Array): boolean {
  for (let k = 0; k < 16; k++) if (buf[off + k] !== addr[k]) return false;
  return true;
}

export function isMulticast(buf: Uint8Array, off: number): boolean {
  return buf[off] === 0xff;
}

export function isLinkLocal(buf: Uint8Array, off: number): boolean {
  return buf[off] === 0xfe && (buf[off + 1] & 0xc0) === 0x80;
}

/** Unspecified (::) or loopback (::1). */
function isUnspecifiedOrLoopback(buf: Uint8Array, off: number): boolean {
  for (let k = 0; k < 15; k++) if (buf[off + k] !== 0) return false;
  return buf[off + 15] <= 1;
}

/** An address that can be a VM identity: unicast, not link-local, unspecified or loopback. */
export function isIdentityAddress(buf: Uint8Array, off: number): boolean {
  return !isMulticast(buf, off) && !isLinkLocal(buf, off) && !isUnspecifiedOrLoopback(buf, off);
}

/** Write an IPv6 header at `ip`: version 6, no traffic class or flow label, `payloadLen` bytes of protocol `next`. */
export function writeIpv6Header(
  buf: Uint8Array, ip: number, src: Uint8Array, dst: Uint8Array, payloadLen: number, next: number, hopLimit: number,
): void {
  buf[ip] = 0x60;
  buf[ip + 1] = 0;
  buf[ip + 2] = 0;
  buf[ip + 3] = 0;
  buf[ip + IPV6_OFF_PLEN] = payloadLen >> 8;
  buf[ip + IPV6_OFF_PLEN + 1] = payloadLen & 0xff;
  buf[ip + IPV6_OFF_NEXT] = next;
  buf[ip + IPV6_OFF_HOPS] = hopLimit;
  buf.set(src, ip + IPV6_OFF_SRC);
  buf.set(dst, ip + IPV6_OFF_DST);
}

/** Checksum over the pseudo-header (RFC 8200 8.1) of the IPv6 header at `ip` and `len` bytes of protocol `proto` at `l4`; 0 when valid. */
export function pseudoHeaderChecksum(buf: Uint8Array, ip: number, l4: number, len: number, proto: number): number {
  let sum = onesSum(buf, ip + IPV6_OFF_SRC, 32, 0);
  sum += len;
  sum += proto;
  sum = onesSum(buf, l4, len, sum);
  return finishChecksum(sum);
}
