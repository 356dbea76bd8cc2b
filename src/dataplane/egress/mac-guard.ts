// Egress stage 2: the Ethernet source must be the MAC of the VM port (before ND, so that
// a VM cannot poison anything with a forged link-layer address). A packet whose port was
// detached while it waited (held by the upcall) ends here as port/gone.

import { Next, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { ETH_OFF_SRC, macEquals } from '../../wire/ethernet.js';
import { drop, type Stage } from '../stage.js';
import type { PortTable } from '../port-table.js';

export class MacGuard implements Stage {
  readonly name = 'mac-guard';
  readonly drops = [Drop.SpoofMac, Drop.PortGone];
  readonly outputs = [];

  constructor(private readonly ports: PortTable) {}

  process(b: Batch): void {
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const p = b.port[i];
      if (!this.ports.has(p)) drop(b, i, Drop.PortGone);
      else if (!macEquals(b.data, b.start[i] + ETH_OFF_SRC, this.ports.at(p).mac)) drop(b, i, Drop.SpoofMac);
    }
  }
}
