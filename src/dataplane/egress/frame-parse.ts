// Egress stage 1: Ethernet and IPv6 of a frame from a VM port. Sets l3/l4/proto/flags and
// trims Ethernet padding, so later stages see exactly the IPv6 packet.

import { MAX_PACKET, PacketFlag, Next, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { ETH_HLEN, ETH_OFF_TYPE, ETHERTYPE_IPV6 } from '../../wire/ethernet.js';
import { Ipv6Parse, parseIpv6 } from '../../wire/ipv6.js';
import { drop, type Stage } from '../stage.js';

export class FrameParse implements Stage {
  readonly name = 'frame-parse';
  readonly drops = [
    Drop.EthTruncated, Drop.EthNotIpv6, Drop.EthTooBig,
    Drop.Ipv6Truncated, Drop.Ipv6BadVersion, Drop.Ipv6BadLength, Drop.Ipv6ExtTruncated, Drop.Ipv6ExtTooLong, Drop.Ipv6ExtOrder,
  ];
  readonly outputs = [];
  private readonly ip = new Ipv6Parse();

  process(b: Batch): void {
    const buf = b.data;
    const ip = this.ip;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const at = b.start[i];
      const len = b.len[i];
      if (len < ETH_HLEN) {
        drop(b, i, Drop.EthTruncated);
        continue;
      }
      if (((buf[at + ETH_OFF_TYPE] << 8) | buf[at + ETH_OFF_TYPE + 1]) !== ETHERTYPE_IPV6) {
        drop(b, i, Drop.EthNotIpv6);
        continue;
      }
      if (len > MAX_PACKET) {
        drop(b, i, Drop.EthTooBig);
        continue;
      }
      const l3 = at + ETH_HLEN;
      const r = parseIpv6(buf, l3, len - ETH_HLEN, ip);
      if (r !== Drop.None) {
        drop(b, i, r);
        continue;
      }
      b.l3[i] = l3;
      b.l4[i] = ip.l4;
      b.proto[i] = ip.proto;
      b.flags[i] |= (ip.fragment ? PacketFlag.Fragment : 0) | (ip.laterFragment ? PacketFlag.LaterFragment : 0);
      b.len[i] = ETH_HLEN + ip.length;
    }
  }
}
