// Egress stage 6: the cable cache, keyed by (source identity, destination identity). A hit
// on a plugged cable touches nothing else; a hit on an unplugged one drops the packet for
// the reason stored at plug time; a miss or an expired cable goes to the upcall.

import { BATCH_MAX, Next, type Batch } from '../batch.js';
import type { Cable } from '../cable.js';
import type { CableCache } from '../cable-cache.js';
import { Drop, PLUG_REASONS } from '../../base/drops.js';
import { IPV6_OFF_DST, IPV6_OFF_SRC } from '../../wire/ipv6.js';
import { pairHash } from '../pair-hash.js';
import { drop, type Stage } from '../stage.js';
import type { Upcall } from '../upcall.js';

export class CableLookup implements Stage {
  readonly name = 'cable-lookup';
  /** Its own reasons, and those an unplugged cable stores (decided on the miss path). */
  readonly drops = [Drop.UpcallQueueFull, Drop.UpcallPortQuota, ...PLUG_REASONS];
  readonly outputs = [Next.Held];
  hits = 0;
  misses = 0;
  /** Each packet's pair hash, first slot and cable, from the passes of process(). */
  private readonly hashes = new Int32Array(BATCH_MAX);
  private readonly slots = new Int32Array(BATCH_MAX);
  private readonly cables: (Cable | undefined)[] = new Array<Cable | undefined>(BATCH_MAX).fill(undefined);

  constructor(private readonly cache: CableCache, private readonly upcall: Upcall) {}

  process(b: Batch, now: number): void {
    const buf = b.data;
    const { hashes, slots, cables, cache } = this;
    // In passes, each reaching one step further into memory (the table's hash words, its
    // slots and the cables), so that the cache misses of different packets overlap instead
    // of waiting behind each other's. The cache does not change until the last pass.
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const ip = b.l3[i];
      hashes[i] = pairHash(buf, ip + IPV6_OFF_SRC, buf, ip + IPV6_OFF_DST);
      slots[i] = cache.firstSlot(hashes[i]);
    }
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const ip = b.l3[i];
      cables[i] = cache.findFrom(slots[i], hashes[i], buf, ip + IPV6_OFF_SRC, ip + IPV6_OFF_DST);
    }
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const c = cables[i];
      cables[i] = undefined;
      if (c === undefined || now >= c.expiresAt) {
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
      if (now >= c.refreshAt) this.upcall.refresh(c);
      b.ref[i] = c;
    }
  }
}
