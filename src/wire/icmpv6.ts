// ICMPv6 (RFC 4443) and the neighbour-discovery messages (RFC 4861) the switch answers
// for its VMs. Builders write in place at a given offset; the caller owns the room.

import { IPV6_HLEN, IPV6_OFF_SRC, PROTO_ICMPV6, pseudoHeaderChecksum, writeIpv6Header } from './ipv6.js';

export const ICMP6_OFF_TYPE = 0;
export const ICMP6_OFF_CODE = 1;
export const ICMP6_OFF_CSUM = 2;

export const ICMP6_PACKET_TOO_BIG = 2;
export const ICMP6_ECHO_REQUEST = 128;
export const ICMP6_MLD_QUERY = 130;
export const ICMP6_MLD_REPORT = 131;
export const ICMP6_MLD_DONE = 132;
export const ICMP6_MLD2_REPORT = 143;
export const ND_ROUTER_SOLICIT = 133;
export const ND_ROUTER_ADVERT = 134;
export const ND_NEIGHBOR_SOLICIT = 135;
export const ND_NEIGHBOR_ADVERT = 136;
export const ND_REDIRECT = 137;

export const ND_OPT_SOURCE_LLADDR = 1;
export const ND_OPT_TARGET_LLADDR = 2;
export const ND_OPT_MTU = 5;

/** ND messages must arrive with hop limit 255: proof they were not forwarded (RFC 4861 6.1, 7.1). */
export const ND_HOP_LIMIT = 255;
/** IPv6 minimum MTU: an ICMPv6 error never exceeds it (RFC 4443 2.4 c). */
export const IPV6_MIN_MTU = 1280;

/**
 * ICMPv6 checksum over the pseudo-header (RFC 8200 8.1) of the IPv6 header at `ip` and
 * the message at `icmp`. A message with a valid checksum gives 0.
 */
export function icmp6Checksum(buf: Uint8Array, ip: number, icmp: number, icmpLen: number): number {
  return pseudoHeaderChecksum(buf, ip, icmp, icmpLen, PROTO_ICMPV6);
}

/** Write an IPv6 header for an ICMPv6 message of `icmpLen` bytes at `ip`. */
export function writeIcmp6Header(
  buf: Uint8Array, ip: number, src: Uint8Array, dst: Uint8Array, icmpLen: number, hopLimit: number,
): void {
  writeIpv6Header(buf, ip, src, dst, icmpLen, PROTO_ICMPV6, hopLimit);
}

/** Fill in the ICMPv6 checksum of the message at ip+40. */
export function sealIcmp6(buf: Uint8Array, ip: number, icmpLen: number): void {
  const m = ip + IPV6_HLEN;
  buf[m + ICMP6_OFF_CSUM] = 0;
  buf[m + ICMP6_OFF_CSUM + 1] = 0;
  const c = icmp6Checksum(buf, ip, m, icmpLen);
  buf[m + ICMP6_OFF_CSUM] = c >> 8;
  buf[m + ICMP6_OFF_CSUM + 1] = c & 0xff;
}

/** Length of a Neighbor Advertisement with a target link-layer address option. */
export const NA_LEN = 24 + 8;

/** Neighbor Advertisement (RFC 4861 4.4) at m: flags R|S|O, target, TLLA option. */
export function writeNeighborAdvert(buf: Uint8Array, m: number, target: Uint8Array, mac: Uint8Array, solicited: boolean): void {
  buf[m + ICMP6_OFF_TYPE] = ND_NEIGHBOR_ADVERT;
  buf[m + ICMP6_OFF_CODE] = 0;
  buf[m + 4] = 0x80 | (solicited ? 0x40 : 0) | 0x20; // Router, Solicited, Override
  buf[m + 5] = 0;
  buf[m + 6] = 0;
  buf[m + 7] = 0;
  buf.set(target, m + 8);
  buf[m + 24] = ND_OPT_TARGET_LLADDR;
  buf[m + 25] = 1; // length in units of 8 bytes
  buf.set(mac, m + 26);
}

/** Length of the Router Advertisement the switch sends: header, SLLA and MTU options. */
export const RA_LEN = 16 + 8 + 8;

/** Router Advertisement (RFC 4861 4.2): default router for `lifetime` s, SLLA, MTU option (4.6.4). */
export function writeRouterAdvert(buf: Uint8Array, m: number, mac: Uint8Array, mtu: number, lifetime: number): void {
  buf[m + ICMP6_OFF_TYPE] = ND_ROUTER_ADVERT;
  buf[m + ICMP6_OFF_CODE] = 0;
  buf[m + 4] = 64; // Cur Hop Limit advised to the guest
  buf[m + 5] = 0x80; // M=1: the address is the VM's identity, given by DHCPv6 (no prefix: no SLAAC)
  buf[m + 6] = lifetime >> 8;
  buf[m + 7] = lifetime & 0xff;
  for (let k = 8; k < 16; k++) buf[m + k] = 0; // reachable time, retrans timer: unspecified
  buf[m + 16] = ND_OPT_SOURCE_LLADDR;
  buf[m + 17] = 1;
  buf.set(mac, m + 18);
  buf[m + 24] = ND_OPT_MTU;
  buf[m + 25] = 1;
  buf[m + 26] = 0;
  buf[m + 27] = 0;
  buf[m + 28] = (mtu >>> 24) & 0xff;
  buf[m + 29] = (mtu >>> 16) & 0xff;
  buf[m + 30] = (mtu >>> 8) & 0xff;
  buf[m + 31] = mtu & 0xff;
}

/**
 * Walk the ND options in buf[p, end): true when every option has a non-zero length and
 * fits (RFC 4861 4.6), and no source link-layer option is present when `forbidSlla`.
 */
export function ndOptionsValid(buf: Uint8Array, p: number, end: number, forbidSlla: boolean): boolean {
  while (p < end) {
    if (p + 2 > end) return false;
    const units = buf[p + 1];
    if (units === 0 || p + units * 8 > end) return false;
    if (forbidSlla && buf[p] === ND_OPT_SOURCE_LLADDR) return false;
    p += units * 8;
  }
  return true;
}

/** Link-local address from a MAC by modified EUI-64 (RFC 4291 appendix A). */
export function linkLocalFromMac(mac: Uint8Array): Buffer {
  const a = Buffer.alloc(16);
  a[0] = 0xfe;
  a[1] = 0x80;
  a[8] = mac[0] ^ 0x02;
  a[9] = mac[1];
  a[10] = mac[2];
  a[11] = 0xff;
  a[12] = 0xfe;
  a[13] = mac[3];
  a[14] = mac[4];
  a[15] = mac[5];
  return a;
}

/** ff02::1, all nodes. */
export const ALL_NODES = Buffer.from('ff020000000000000000000000000001', 'hex');

/** Largest part of an offending packet quoted in an ICMPv6 error: 1280 - 40 - 8 (RFC 4443 2.4 c). */
export const ICMP6_ERROR_QUOTE = IPV6_MIN_MTU - IPV6_HLEN - 8;

/**
 * Turn the IPv6 packet at `ip` (length `ipLen`) into an ICMPv6 Packet Too Big (RFC 4443 3.2)
 * addressed back to its source, in place: the quoted packet moves 48 bytes up; the caller
 * guarantees the room. `from` is the switch's address. Returns the new IPv6 length.
 */
export function writePacketTooBig(buf: Uint8Array, ip: number, ipLen: number, mtu: number, from: Uint8Array): number {
  const quote = Math.min(ipLen, ICMP6_ERROR_QUOTE);
  buf.copyWithin(ip + IPV6_HLEN + 8, ip, ip + quote);
  const icmpLen = 8 + quote;
  const quotedSrc = ip + IPV6_HLEN + 8 + IPV6_OFF_SRC; // the error goes back to the quoted packet's source
  writeIcmp6Header(buf, ip, from, buf.subarray(quotedSrc, quotedSrc + 16), icmpLen, 64);
  const m = ip + IPV6_HLEN;
  buf[m + ICMP6_OFF_TYPE] = ICMP6_PACKET_TOO_BIG;
  buf[m + ICMP6_OFF_CODE] = 0;
  buf[m + 4] = (mtu >>> 24) & 0xff;
  buf[m + 5] = (mtu >>> 16) & 0xff;
  buf[m + 6] = (mtu >>> 8) & 0xff;
  buf[m + 7] = mtu & 0xff;
  sealIcmp6(buf, ip, icmpLen);
  return IPV6_HLEN + icmpLen;
}
