// Ingress stage 6: hand the IPv6 packet to the destination VM's port as an Ethernet frame
// from the switch's MAC. The header goes into the room the outer headers freed.

import { Next, type Batch } from '../batch.js';
import type { Cable } from '../cable.js';
import { ETH_HLEN, writeEthIpv6 } from '../../wire/ethernet.js';
import { settle, type Stage } from '../stage.js';
import type { PortTable } from '../port-table.js';
import { ROUTER_MAC } from '../vm-port.js';

export class Deliver implements Stage {
  readonly name = 'deliver';
  readonly drops = [];
  readonly outputs = [Next.VmPort];

  constructor(private readonly ports: PortTable) {}

  process(b: Batch): void {
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const c = b.ref[i] as Cable;
      const at = b.start[i] - ETH_HLEN;
      writeEthIpv6(b.data, at, this.ports.at(c.localPort).mac, ROUTER_MAC);
      c.packets++;
      c.bytes += b.len[i];
      b.start[i] = at;
      b.len[i] += ETH_HLEN;
      b.outPort[i] = c.localPort;
      settle(b, i, Next.VmPort);
    }
  }
}
