// Egress stage 5: anti-spoofing. The IPv6 source must be the port's identity, exactly
// (another VM's identity, another tenant's, link-local and multicast sources all fail);
// the destination must be an identity and not the sender itself.

import { Next, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { addrEquals, IPV6_OFF_DST, IPV6_OFF_SRC, isIdentityAddress } from '../../wire/ipv6.js';
import { drop, type Stage } from '../stage.js';
import type { PortTable } from '../port-table.js';

export class IpGuard implements Stage {
  readonly name = 'ip-guard';
  readonly drops = [Drop.SpoofSource, Drop.DstNotUnicast, Drop.DstOwnIdentity];
  readonly outputs = [];

  constructor(private readonly ports: PortTable) {}

  process(b: Batch): void {
    const buf = b.data;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const ip = b.l3[i];
      const identity = this.ports.at(b.port[i]).identity;
      if (!addrEquals(buf, ip + IPV6_OFF_SRC, identity)) drop(b, i, Drop.SpoofSource);
      else if (!isIdentityAddress(buf, ip + IPV6_OFF_DST)) drop(b, i, Drop.DstNotUnicast);
      else if (addrEquals(buf, ip + IPV6_OFF_DST, identity)) drop(b, i, Drop.DstOwnIdentity);
    }
  }
}
