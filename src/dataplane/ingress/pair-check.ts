// Ingress stage 4: who may speak on a cable. ESP packets arrive with their cable (the SA's,
// whose pair esp-decap checked); it must still be plugged (an unplugged one is verified again
// once its refusal expires). IPv6-in-IPv4 packets find their
// cable by the inner pair (a miss goes to the upcall: SDN Algorithm 2), must come from the
// host the source is bound to, and may not use a cable whose policy wants encryption, unless
// they come from this host itself: a VM of another data-path thread of this host
// (src/switch/workers/shard.ts), whose packets never left the host (the kernel drops packets
// from the network that claim one of its own addresses as their source).

import { Next, PacketFlag, type Batch } from '../batch.js';
import type { Cable } from '../cable.js';
import { BatchLookup, type CableCache } from '../cable-cache.js';
import { Drop, PLUG_REASONS } from '../../base/drops.js';
import { reached, tickOf } from '../../base/ticks.js';
import { IPV6_OFF_DST } from '../../wire/ipv6.js';
import { drop, type Stage } from '../stage.js';
import type { PortTable } from '../port-table.js';
import type { Upcall } from '../upcall.js';

export class PairCheck implements Stage {
  readonly name = 'pair-check';
  readonly drops = [
    Drop.InnerUnknownDestination, Drop.Ip6in4WrongPeer, Drop.Ip6in4EncryptionRequired, Drop.UpcallQueueFull,
    ...PLUG_REASONS, // an unplugged cable drops for the reason it stores
  ];
  readonly outputs = [Next.Held];
  /** Each IPv6-in-IPv4 packet's pair hash and cable, from the cache's passes over the batch. */
  private readonly found = new BatchLookup();

  constructor(
    private readonly cache: CableCache,
    private readonly upcall: Upcall,
    /** Whose VM an inner destination is. */
    private readonly ports: PortTable,
    /** This host's underlay address (uint32). */
    private readonly localAddress: number,
  ) {}

  process(b: Batch, now: number): void {
    const buf = b.data;
    const { hashes, cables } = this.found;
    const t = tickOf(now);
    this.cache.findBatch(b, PacketFlag.Esp, this.found); // IPv6-in-IPv4 only; the cache does not change until the loop below
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const ip = b.l3[i];
      if ((b.flags[i] & PacketFlag.Esp) !== 0) {
        const c = b.ref[i] as Cable;
        if (!c.used) c.used = true; // found through its SA, not the cache: it is in use all the same
        if (c.drop !== Drop.None) {
          // Unplugged after its SA was made (a refresh refused it). Its SA keeps it, so no miss
          // will ever ask again: once the refusal is old enough, verify it again here.
          if (reached(t, c.expiresTick)) this.upcall.refresh(c);
          c.drops++;
          drop(b, i, c.drop);
        } else if (reached(t, c.refreshTick)) {
          this.upcall.refresh(c);
        }
        continue;
      }
      const hash = hashes[i];
      const c = cables[i];
      cables[i] = undefined;
      if (c === undefined || reached(t, c.expiresTick)) {
        const port = this.ports.portOf(buf, ip + IPV6_OFF_DST);
        if (port < 0) {
          drop(b, i, Drop.InnerUnknownDestination);
          continue;
        }
        const r = this.upcall.holdIngress(b, i, hash, ip, port);
        if (r !== Drop.None) drop(b, i, r);
        continue;
      }
      if (c.drop !== Drop.None) {
        c.drops++;
        drop(b, i, c.drop);
      } else if (c.peerAddr !== b.peer[i]) {
        drop(b, i, Drop.Ip6in4WrongPeer);
      } else if (c.decision !== null && c.decision.encrypt && c.peerAddr !== this.localAddress) {
        drop(b, i, Drop.Ip6in4EncryptionRequired);
      } else {
        if (reached(t, c.refreshTick)) this.upcall.refresh(c);
        b.ref[i] = c;
      }
    }
  }
}
