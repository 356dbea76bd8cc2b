// Egress stage 2: the Ethernet source must be the MAC of the VM port (before ND, so that
// a VM cannot poison anything with a forged link-layer address).

import { Next, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { ETH_OFF_SRC, macEquals } from '../../wire/ethernet.js';
import { drop, type Stage } from '../stage.js';
import type { VmPort } from '../vm-port.js';

export class MacGuard implements Stage {
  readonly name = 'mac-guard';
  readonly drops = [Drop.SpoofMac];
  readonly outputs = [];

  constructor(private readonly ports: readonly VmPort[]) {}

  process(b: Batch): void {
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      if (!macEquals(b.data, b.start[i] + ETH_OFF_SRC, this.ports[b.port[i]].mac)) drop(b, i, Drop.SpoofMac);
    }
  }
}
