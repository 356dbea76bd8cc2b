// The one explicit miss path. A packet whose pair has no valid cable is copied into a
// bounded queue and the resolver is asked, once per pair (single-flight), to resolve,
// verify and decide (SDN Algorithm 1 for egress, Algorithm 2 for plain ingress). When it
// answers, the cable goes into the cache and the held packets are released, in arrival
// order, back through the pipeline, before anything newer of the same pair: a miss never
// reorders a flow.
//
// Ownership: holding copies the packet out of the batch arena; the copy belongs to the
// pending entry until it is released to the host, which runs it through the pipeline.

import { performance } from 'node:perf_hooks';
import { Next, type Batch } from './batch.js';
import { CableDirection, type Cable } from './cable.js';
import type { CableCache } from './cable-cache.js';
import { Drop } from '../base/drops.js';
import { Histogram } from '../base/histogram.js';
import { TokenBucket } from '../base/token-bucket.js';
import { IPV6_OFF_DST, IPV6_OFF_SRC } from '../wire/ipv6.js';
import { settle } from './stage.js';
import { pairHash } from './pair-hash.js';

export interface HeldPacket {
  readonly data: Buffer;
  readonly port: number;
  readonly timeUs: number;
  /** Underlay source address, for held ingress packets. */
  readonly peer: number;
  readonly tag: number;
}

/** The control plane behind the miss path (src/switch/resolver.ts). Its promises never reject. */
export interface MissResolver {
  /** SDN Algorithm 1: local VM on `port` -> dst. Returns the cable to install, plugged or not. */
  plugEgress(port: number, dst: Buffer, previous: Cable | undefined): Promise<Cable>;
  /** SDN Algorithm 2 for plain IPv6-in-IPv4: remote src -> local VM on `port`, arrived from `outerSrc`. */
  plugIngress(src: Buffer, port: number, outerSrc: number, previous: Cable | undefined): Promise<Cable>;
}

export interface UpcallLimits {
  /** Packets that may wait for one pair. */
  readonly perCable: number;
  /** Packets that may wait in all. */
  readonly total: number;
  /** Pairs that may be resolving at once. */
  readonly maxPending: number;
  /** New egress misses a VM port may start a second (a flood of new destinations costs only its VM). */
  readonly portMissesPerSecond?: number;
  /** Egress cables of one VM port the cache may hold; past it the port's oldest goes. */
  readonly perPortCables?: number;
}

interface Pending {
  readonly direction: CableDirection;
  readonly hash: number;
  readonly src: Buffer;
  readonly dst: Buffer;
  readonly packets: HeldPacket[];
  /** performance.now() at the miss. */
  readonly since: number;
  /** Asks the resolver (again). */
  readonly start: () => Promise<Cable>;
  /** The far end's binding changed while the resolver worked: its answer may rest on the old one. */
  stale: boolean;
  /** Times the resolver was asked again for this miss. */
  restarts: number;
}

/** A miss whose far end keeps changing is asked again at most this often; then its answer stands. */
const MAX_RESTARTS = 3;

export class Upcall {
  private readonly pending = new Map<number, Pending[]>();
  private pendingCount = 0;
  /** Packets waiting now. */
  queued = 0;
  readonly counts = { misses: 0, prefetches: 0, plugs: 0, refreshes: 0, released: 0, restarted: 0, portEvictions: 0 };
  /** Per VM port: its budget of new misses. */
  private readonly portBudgets = new Map<number, TokenBucket>();
  /** Cables installed by a miss, by decision: plugged, or unplugged with the reason. */
  readonly decisions = { plugged: 0, unplugged: new Map<Drop, number>() };
  /** Miss to installed cable, seconds. */
  readonly latency = new Histogram();
  /** Sees every cable installed (the verdict stream); null: nobody. */
  onInstall: ((cable: Cable) => void) | null = null;

  constructor(
    private readonly resolver: MissResolver,
    private readonly caches: { readonly egress: CableCache; readonly ingress: CableCache },
    private readonly limits: UpcallLimits,
    /** Runs released packets through the pipeline of `direction` again. */
    private readonly release: (direction: CableDirection, packets: HeldPacket[]) => void,
    /** Reports a resolver that broke its contract (a bug, never a packet's fault). */
    private readonly onBug: (err: unknown) => void = (err) => { throw err; },
    /** A newly installed cable replaced an older one of the same pair (to release its SA). */
    private readonly onReplaced: (old: Cable, next: Cable) => void = () => {},
    /**
     * An answer that is not installed (its far end changed meanwhile: asked again), beside the
     * cable `kept` in its place if any: to release what only the answer holds (a new SA's key).
     */
    private readonly onUnused: (unused: Cable, kept: Cable | undefined) => void = () => {},
  ) {}

  /** Egress miss: hold packet i (a frame from a VM port). Returns Drop.None when held. */
  holdEgress(b: Batch, i: number, hash: number): Drop {
    const ip = b.l3[i];
    return this.hold(b, i, CableDirection.Egress, hash, ip + IPV6_OFF_SRC, ip + IPV6_OFF_DST, () =>
      this.resolver.plugEgress(b.port[i], Buffer.from(b.data.subarray(ip + IPV6_OFF_DST, ip + IPV6_OFF_DST + 16)), undefined));
  }

  /** Plain ingress miss: hold packet i (an underlay packet) for inner pair at `innerIp`, local VM `port`. */
  holdIngress(b: Batch, i: number, hash: number, innerIp: number, port: number): Drop {
    const peer = b.peer[i];
    return this.hold(b, i, CableDirection.Ingress, hash, innerIp + IPV6_OFF_SRC, innerIp + IPV6_OFF_DST, () =>
      this.resolver.plugIngress(Buffer.from(b.data.subarray(innerIp + IPV6_OFF_SRC, innerIp + IPV6_OFF_SRC + 16)), port, peer, undefined));
  }

  /**
   * Plug local VM `src` (on `port`) -> `dst` ahead of its first packet: a peer just plugged
   * dst -> src, so the answer is likely next (a reply that would otherwise wait for a miss of
   * its own). Packets of the pair that come meanwhile wait for it as for any miss. Nothing
   * happens when the pair has a cable (even one due for renewal: its next packet renews it)
   * or a miss already.
   */
  prefetchEgress(port: number, src: Buffer, dst: Buffer): boolean {
    const pair = Buffer.concat([src, dst]);
    const hash = pairHash(pair, 0, pair, 16);
    if (this.caches.egress.find(hash, pair, 0, 16) || this.find(CableDirection.Egress, hash, pair, 0, 16)) return false;
    if (this.pendingCount >= this.limits.maxPending) return false;
    const p: Pending = {
      direction: CableDirection.Egress, hash, src: Buffer.from(src), dst: Buffer.from(dst), packets: [], since: performance.now(),
      start: () => this.resolver.plugEgress(port, dst, undefined), stale: false, restarts: 0,
    };
    this.add(p);
    this.counts.prefetches++;
    this.ask(p);
    return true;
  }

  /** Verify a plugged cable again while it keeps forwarding (its refresh time passed). */
  refresh(cable: Cable): void {
    if (cable.refreshing) return;
    cable.refreshing = true;
    this.counts.refreshes++;
    const job = cable.direction === CableDirection.Egress
      ? this.resolver.plugEgress(cable.srcPort, cable.dst, cable)
      : this.resolver.plugIngress(cable.src, cable.localPort, cable.peerAddr, cable);
    job.then(
      (next) => {
        cable.refreshing = false;
        if (cable.refreshAgain) {
          cable.refreshAgain = false; // the answer may rest on the binding that just changed
          this.counts.restarted++;
          if (next !== cable) this.onUnused(next, cable);
          this.refresh(cable);
          return;
        }
        if (next !== cable) this.install(next);
      },
      (err) => {
        cable.refreshing = false;
        this.onBug(err);
      },
    );
  }

  /**
   * The binding of `identity` changed (the store's watch): the cables to or from it are
   * verified again by the caller; here, every miss and refresh already in flight for it is
   * asked again when it answers, as its answer may rest on the old binding (a migration seen
   * half-way: the old host refuses, and that refusal must not stand for the negative TTL).
   */
  bindingChanged(identity: Buffer, inCache: Iterable<Cable>): void {
    for (const list of this.pending.values()) {
      for (const p of list) if ((p.direction === CableDirection.Egress ? p.dst : p.src).equals(identity)) p.stale = true;
    }
    for (const c of inCache) if (c.refreshing) c.refreshAgain = true;
  }

  private hold(b: Batch, i: number, direction: CableDirection, hash: number, s: number, d: number, start: () => Promise<Cable>): Drop {
    const buf = b.data;
    let p = this.find(direction, hash, buf, s, d);
    if (!p && direction === CableDirection.Egress && !this.portAdmits(b.port[i])) return Drop.UpcallPortQuota;
    if (!p && this.pendingCount >= this.limits.maxPending) return Drop.UpcallRateLimited;
    if (this.queued >= this.limits.total || (p && p.packets.length >= this.limits.perCable)) return Drop.UpcallQueueFull;
    if (!p) {
      p = {
        direction,
        hash,
        src: Buffer.from(buf.subarray(s, s + 16)),
        dst: Buffer.from(buf.subarray(d, d + 16)),
        packets: [],
        since: performance.now(),
        start,
        stale: false,
        restarts: 0,
      };
      this.add(p);
      this.counts.misses++;
      this.ask(p);
    }
    p.packets.push({
      data: Buffer.from(buf.subarray(b.start[i], b.start[i] + b.len[i])),
      port: b.port[i],
      timeUs: b.time[i],
      peer: b.peer[i],
      tag: b.tag[i],
    });
    this.queued++;
    settle(b, i, Next.Held);
    return Drop.None;
  }

  private ask(p: Pending): void {
    p.start().then(
      (cable) => this.finish(p, cable),
      (err) => {
        this.remove(p);
        this.queued -= p.packets.length;
        this.onBug(err);
      },
    );
  }

  private finish(p: Pending, cable: Cable): void {
    if (p.stale && p.restarts < MAX_RESTARTS) {
      p.stale = false;
      p.restarts++;
      this.counts.restarted++;
      this.onUnused(cable, undefined);
      this.ask(p); // its packets stay held
      return;
    }
    this.remove(p);
    this.queued -= p.packets.length;
    this.install(cable);
    this.counts.plugs++;
    this.latency.observe((performance.now() - p.since) / 1000);
    if (cable.plugged) this.decisions.plugged++;
    else this.decisions.unplugged.set(cable.drop, (this.decisions.unplugged.get(cable.drop) ?? 0) + 1);
    this.counts.released += p.packets.length;
    if (p.packets.length > 0) this.release(p.direction, p.packets);
  }

  /** True when port `port` may start another miss now (its quota of misses a second). */
  private portAdmits(port: number): boolean {
    const rate = this.limits.portMissesPerSecond;
    if (rate === undefined) return true;
    let bucket = this.portBudgets.get(port);
    const now = performance.now();
    if (!bucket) {
      bucket = new TokenBucket(rate, rate, now);
      this.portBudgets.set(port, bucket);
    }
    return bucket.take(now);
  }

  /**
   * Put `cable` in its cache. A cable that replaces one of the same pair takes over its
   * counters: a re-plug (a new peer after a migration, a new SA) is the same cable to the
   * operator. A new egress pair of a port whose quota of cables is full evicts that port's
   * oldest cable, never another VM's.
   */
  private install(cable: Cable): void {
    this.onInstall?.(cable);
    const cache = this.cacheOf(cable.direction);
    const quota = this.limits.perPortCables;
    if (quota !== undefined && cable.direction === CableDirection.Egress && cable.srcPort >= 0 && cache.findCable(cable) === undefined) {
      while (cache.portCount(cable.srcPort) >= quota && cache.evictOldestOfPort(cable.srcPort)) this.counts.portEvictions++;
    }
    const old = cache.insert(cable);
    if (!old) return;
    cable.packets += old.packets;
    cable.bytes += old.bytes;
    cable.drops += old.drops;
    this.onReplaced(old, cable);
  }

  private cacheOf(direction: CableDirection): CableCache {
    return direction === CableDirection.Egress ? this.caches.egress : this.caches.ingress;
  }

  private find(direction: CableDirection, hash: number, buf: Uint8Array, s: number, d: number): Pending | undefined {
    const list = this.pending.get(hash);
    if (!list) return undefined;
    for (const p of list) {
      if (p.direction !== direction) continue;
      let same = true;
      for (let k = 0; k < 16 && same; k++) same = buf[s + k] === p.src[k] && buf[d + k] === p.dst[k];
      if (same) return p;
    }
    return undefined;
  }

  private add(p: Pending): void {
    const list = this.pending.get(p.hash);
    if (list) list.push(p);
    else this.pending.set(p.hash, [p]);
    this.pendingCount++;
  }

  private remove(p: Pending): void {
    const list = this.pending.get(p.hash);
    if (!list) return;
    const k = list.indexOf(p);
    if (k < 0) return;
    list.splice(k, 1);
    if (list.length === 0) this.pending.delete(p.hash);
    this.pendingCount--;
  }

  /** Pairs resolving now. */
  get inFlight(): number {
    return this.pendingCount;
  }
}
