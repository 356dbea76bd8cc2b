// Egress stage 6: the cable cache, keyed by (source identity, destination identity). A hit
// on a plugged cable touches nothing else; a hit on an unplugged one drops the packet for
// the reason stored at plug time; a miss or an expired cable goes to the upcall.

import { Next, type Batch } from '../batch.js';
import { BatchLookup, type CableCache } from '../cable-cache.js';
import { Drop, PLUG_REASONS } from '../../base/drops.js';
import { reached, tickOf } from '../../base/ticks.js';
import { drop, type Stage } from '../stage.js';
import type { Upcall } from '../upcall.js';

export class CableLookup implements Stage {
  readonly name = 'cable-lookup';
  /** Its own reasons, and those an unplugged cable stores (decided on the miss path). */
  readonly drops = [Drop.UpcallQueueFull, Drop.UpcallPortQuota, ...PLUG_REASONS];
  readonly outputs = [Next.Held];
  hits = 0;
  misses = 0;
  /** Each packet's pair hash and cable, from the cache's passes over the batch. */
  private readonly found = new BatchLookup();

  constructor(private readonly cache: CableCache, private readonly upcall: Upcall) {}

  process(b: Batch, now: number): void {
    const { hashes, cables } = this.found;
    const t = tickOf(now);
    this.cache.findBatch(b, 0, this.found); // the cache does not change until the loop below
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const c = cables[i];
      cables[i] = undefined;
      if (c === undefined || reached(t, c.expiresTick)) {
        this.misses++;
        const r = this.upcall.holdEgress(b, i, hashes[i]);
        if (r !== Drop.None) drop(b, i, r);
        continue;
      }
      this.hits++;
      if (c.drop !== Drop.None) {
        c.drops++;
        drop(b, i, c.drop);
        continue;
      }
      if (reached(t, c.refreshTick)) this.upcall.refresh(c);
      b.ref[i] = c;
    }
  }
}
