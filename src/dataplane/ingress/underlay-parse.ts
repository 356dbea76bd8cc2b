// Ingress stage 1: the outer IPv4 header. Only ESP (50) and IPv6-in-IPv4 (41) addressed to
// this host pass; the packet is trimmed to its total length and its payload located. A packet
// released by the upcall comes back as its inner packet and passes as it is.

import { Next, PacketFlag, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { Ipv4Parse, parseIpv4 } from '../../wire/ipv4.js';
import { PROTO_ESP, PROTO_IPV6 } from '../../wire/ipv6.js';
import { drop, type Stage } from '../stage.js';

export class UnderlayParse implements Stage {
  readonly name = 'underlay-parse';
  readonly drops = [
    Drop.Ipv4Truncated, Drop.Ipv4BadVersion, Drop.Ipv4BadHeader, Drop.Ipv4BadChecksum, Drop.Ipv4BadLength,
    Drop.Ipv4Fragment, Drop.Ipv4NotForUs, Drop.Ipv4UnknownProtocol,
  ];
  readonly outputs = [];
  private readonly ip = new Ipv4Parse();

  /** `local` is this host's underlay address (uint32). */
  constructor(private readonly local: number) {}

  process(b: Batch): void {
    const ip = this.ip;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      if (b.flags[i] & PacketFlag.Inner) {
        // Held by the pair-check (plain IPv6-in-IPv4 waiting for its cable): already the inner
        // IPv6 packet, with its outer source in b.peer.
        b.l3[i] = b.start[i];
        continue;
      }
      const r = parseIpv4(b.data, b.start[i], b.len[i], ip);
      if (r !== Drop.None) {
        drop(b, i, r);
        continue;
      }
      if (ip.dst !== this.local) {
        drop(b, i, Drop.Ipv4NotForUs);
        continue;
      }
      if (ip.proto === PROTO_ESP) b.flags[i] |= PacketFlag.Esp;
      else if (ip.proto !== PROTO_IPV6) {
        drop(b, i, Drop.Ipv4UnknownProtocol);
        continue;
      }
      b.len[i] = ip.totalLength;
      b.peer[i] = ip.src;
      b.l3[i] = b.start[i] + ip.headerLength; // the ESP header or the inner IPv6 header for now
    }
  }
}
