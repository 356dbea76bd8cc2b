// A UDP/IPv6 datagram in an Ethernet frame, for the offload tests: its checksum valid, left
// partial (the pseudo-header sum, folded and not complemented, as an offloading guest hands it
// over), or a given value.

import { onesSum } from '../src/wire/checksum.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/wire/ethernet.js';
import { IPV6_HLEN, PROTO_UDP, pseudoHeaderChecksum, writeIpv6Header } from '../src/wire/ipv6.js';

export interface UdpFrame {
  readonly dstMac: Uint8Array;
  readonly srcMac: Uint8Array;
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
  readonly sport: number;
  readonly dport: number;
  readonly payload: Uint8Array;
  readonly hop?: number;
  readonly checksum?: 'valid' | 'partial' | number;
}

export function udpFrame(o: UdpFrame): Buffer {
  const udpLen = 8 + o.payload.length;
  const u = ETH_HLEN + IPV6_HLEN;
  const f = Buffer.alloc(u + udpLen);
  writeEthIpv6(f, 0, o.dstMac, o.srcMac);
  writeIpv6Header(f, ETH_HLEN, o.src, o.dst, udpLen, PROTO_UDP, o.hop ?? 64);
  f.writeUInt16BE(o.sport, u);
  f.writeUInt16BE(o.dport, u + 2);
  f.writeUInt16BE(udpLen, u + 4);
  f.set(o.payload, u + 8);
  const how = o.checksum ?? 'valid';
  if (how === 'valid') f.writeUInt16BE(pseudoHeaderChecksum(f, ETH_HLEN, u, udpLen, PROTO_UDP) || 0xffff, u + 6);
  else if (how === 'partial') {
    let sum = onesSum(f, ETH_HLEN + 8, 32, 0) + udpLen + PROTO_UDP;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    f.writeUInt16BE(sum, u + 6);
  } else f.writeUInt16BE(how, u + 6);
  return f;
}
