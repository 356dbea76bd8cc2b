// Ingress stage 3: the inner IPv6 packet (after ESP, or right after the outer header for
// IPv6-in-IPv4). From here on the packet is start..start+len = the IPv6 packet.

import { Next, PacketFlag, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { Ipv6Parse, parseIpv6 } from '../../wire/ipv6.js';
import { drop, type Stage } from '../stage.js';

export class InnerParse implements Stage {
  readonly name = 'inner-parse';
  readonly drops = [Drop.Ipv6Truncated, Drop.Ipv6BadVersion, Drop.Ipv6BadLength, Drop.Ipv6ExtTruncated, Drop.Ipv6ExtTooLong, Drop.Ipv6ExtOrder];
  readonly outputs = [];
  private readonly ip = new Ipv6Parse();

  process(b: Batch): void {
    const ip = this.ip;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const l3 = b.l3[i];
      const r = parseIpv6(b.data, l3, b.start[i] + b.len[i] - l3, ip);
      if (r !== Drop.None) {
        drop(b, i, r);
        continue;
      }
      b.start[i] = l3;
      b.len[i] = ip.length;
      b.l4[i] = ip.l4;
      b.proto[i] = ip.proto;
      b.flags[i] |= (ip.fragment ? PacketFlag.Fragment : 0) | (ip.laterFragment ? PacketFlag.LaterFragment : 0);
    }
  }
}
