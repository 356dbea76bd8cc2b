// Cables decided again when something they were decided on changes, without waiting for
// their TTL: a new policy revision re-evaluates exactly the cables whose identities it may
// affect; a changed binding (a migration, a renewal, a VM gone), pushed by the store's watch,
// makes exactly the cables to or from that identity verify again at once (found through the
// caches' identity index: a host without such a cable does no work).

import { Drop } from '../base/drops.js';
import type { Clock } from '../base/clock.js';
import { deadline, earlier, tickOf } from '../base/ticks.js';
import { Cable, CableDirection } from '../dataplane/cable.js';
import type { CableCache } from '../dataplane/cable-cache.js';
import type { Policy } from '../policy/decision.js';

export class Reevaluator {
  readonly counts = { reevaluated: 0, reverifiedByPush: 0 };

  constructor(
    private readonly caches: { readonly egress: CableCache; readonly ingress: CableCache },
    /** The policy in force; the sender and receiver read it through current(). */
    private policy: Policy,
    private readonly clock: Clock,
    /** Seconds an unplug decision is remembered. */
    private readonly negativeTtl: number,
    /** An ingress cable was replaced: its inbound SAs now carry the new one. */
    private readonly replaced: (old: Cable, next: Cable) => void,
    /** Verify a plugged cable again now; it keeps forwarding meanwhile (the upcall's refresh). */
    private readonly refresh: (c: Cable) => void,
    /** The SA side: a removed cable's SAs go; a moved-away ingress cable's SAs serve until `retireAt`. */
    private readonly sas: { evicted(c: Cable): void; movedAway(old: Cable, next: Cable, retireAt: number): void },
  ) {}

  current(): Policy {
    return this.policy;
  }

  /** A new policy revision. Returns how many cables were re-evaluated. */
  applyPolicy(next: Policy): number {
    const affected = this.policy.affected(next);
    this.policy = next;
    const now = this.clock.now();
    let n = 0;
    for (const cache of [this.caches.egress, this.caches.ingress]) {
      // Through the identity index, unless the change may touch anyone: a revision about a few
      // VMs costs their cables, not a walk over a million.
      const cables = affected.all ? [...cache.all()] : cablesOfAny(cache, affected.identities);
      for (const c of cables) {
        n++;
        this.reevaluate(cache, c, now);
      }
    }
    this.counts.reevaluated += n;
    return n;
  }

  /**
   * The binding of `identity` changed in the store: every cable whose far end it is (egress
   * to it, ingress from it), plugged or not, is verified again now (a plugged one keeps
   * forwarding meanwhile; an unplugged one may be allowed now). Returns how many.
   */
  bindingChanged(identity: string): number {
    const now = this.clock.now();
    let n = 0;
    for (const c of this.caches.egress.cablesOf(identity)) if (c.dstText === identity) n += this.push(c, now);
    for (const c of this.caches.ingress.cablesOf(identity)) if (c.srcText === identity) n += this.push(c, now);
    this.counts.reverifiedByPush += n;
    return n;
  }

  /**
   * VM `identity` left this host (detached, or migrated away): the cables from it and to it
   * from this host's other VMs go. Ingress cables to it become unplugged as vm/moved for
   * `graceMs`, their SAs kept as long: packets still arriving on them are counted and their
   * senders told (NOTIFY), so that they look the VM up again at once.
   */
  portGone(identity: string, graceMs: number): void {
    const now = this.clock.now();
    for (const c of this.caches.egress.cablesOf(identity)) {
      this.caches.egress.remove(c);
      this.sas.evicted(c);
    }
    for (const c of this.caches.ingress.cablesOf(identity)) {
      if (c.dstText !== identity) continue;
      const moved = new Cable(c.direction, c.src, c.dst, Drop.VmMoved, `${c.dstText} left this host`, null, now);
      moved.localPort = -1;
      moved.peerAddr = c.peerAddr;
      moved.peerHost = c.peerHost;
      moved.lasts(now, Infinity, now + graceMs);
      moved.packets = c.packets;
      moved.bytes = c.bytes;
      moved.drops = c.drops;
      moved.epoch = c.epoch;
      this.caches.ingress.insert(moved);
      this.sas.movedAway(c, moved, now + graceMs);
    }
  }

  private push(c: Cable, now: number): number {
    c.refreshTick = tickOf(now);
    this.refresh(c);
    return 1;
  }

  /**
   * The decision for `c` under the new policy. A cable that stays plugged the same way keeps
   * its SA, flows and counters under the new rule; one that is newly allowed, or changes
   * encapsulation or flow mode, expires so that its next packet plugs it from scratch.
   */
  private reevaluate(cache: CableCache, c: Cable, now: number): void {
    const d = this.policy.decide(c.srcText, c.dstText, now);
    const reshaped = d.drop === Drop.None && (c.decision === null || d.encrypt !== c.decision.encrypt || d.flow !== c.decision.flow);
    if (!c.plugged || reshaped) {
      c.expiresTick = tickOf(now);
      return;
    }
    const next = new Cable(c.direction, c.src, c.dst, d.drop, d.rule, d, now);
    next.srcPort = c.srcPort;
    next.localPort = c.localPort;
    next.peerAddr = c.peerAddr;
    next.peerHost = c.peerHost;
    next.outer = c.outer;
    next.sa = c.sa;
    next.flows = c.flows;
    next.epoch = c.epoch;
    if (d.drop === Drop.None) {
      next.refreshTick = c.refreshTick;
      next.expiresTick = earlier(c.expiresTick, deadline(now, d.validUntil));
    } else {
      next.lasts(now, Infinity, now + this.negativeTtl * 1000);
    }
    next.packets = c.packets;
    next.bytes = c.bytes;
    next.drops = c.drops;
    cache.insert(next);
    if (c.direction === CableDirection.Ingress) this.replaced(c, next);
  }
}

/** The cables with either end among `identities`, each once. */
function cablesOfAny(cache: CableCache, identities: ReadonlySet<string>): Cable[] {
  const out = new Set<Cable>();
  for (const id of identities) for (const c of cache.cablesOf(id)) out.add(c);
  return [...out];
}
