// The cable cache: cables by (src, dst) identity pair, bounded, least recently used out.
// Keyed by pairHash (a 30-bit integer, no string per lookup); pairs with the same hash are
// chained and told apart by their bytes. Lifetimes (TTL, time-window edges) live in each
// cable and are checked against the batch clock by the lookup stage.
//
// A second index, by identity (either end), serves the control plane: when the store says an
// identity moved, exactly its cables are found, and a host without one does no work.

import { LRUCache } from 'lru-cache';
import { CableDirection, type Cable } from './cable.js';

/** Options for every lookup: one shared object, so a get() allocates nothing (lru-cache defaults a new one). */
const GET: LRUCache.GetOptions<number, Cable, unknown> = {};

export class CableCache {
  private readonly lru: LRUCache<number, Cable>;
  /** Cables removed because the cache was full. */
  evictions = 0;
  /** Cables by identity: the cable itself while it is the only one (most are), a Set from the second on. */
  private readonly byIdentity = new Map<string, Cable | Set<Cable>>();
  /** Egress cables by source port, oldest first (the per-port quota). */
  private readonly byPort = new Map<number, Set<Cable>>();

  constructor(readonly max: number, private readonly onEvict: (c: Cable) => void = () => {}) {
    this.lru = new LRUCache<number, Cable>({
      max,
      dispose: (head, _key, reason) => {
        if (reason !== 'evict') return;
        for (let c: Cable | null = head; c; c = c.chain) {
          this.evictions++;
          this.unindex(c);
          this.onEvict(c);
        }
      },
    });
  }

  /** The cable for the pair at buf[s..s+16), buf[d..d+16) with hash `hash`, if any. */
  find(hash: number, buf: Uint8Array, s: number, d: number): Cable | undefined {
    for (let c = this.lru.get(hash, GET) ?? null; c; c = c.chain) if (c.matches(buf, s, d)) return c;
    return undefined;
  }

  /** The cached cable for the same pair as `c` (c itself, or the one that replaced it). */
  findCable(c: Cable): Cable | undefined {
    for (let x = this.lru.peek(c.hash) ?? null; x; x = x.chain) if (x.src.equals(c.src) && x.dst.equals(c.dst)) return x;
    return undefined;
  }

  /** Insert `cable`, replacing the cable of the same pair if there is one. Returns the replaced cable. */
  insert(cable: Cable): Cable | undefined {
    let replaced: Cable | undefined;
    const others = this.unlink(this.lru.peek(cable.hash) ?? null, (c) => {
      const same = c !== cable && c.src.equals(cable.src) && c.dst.equals(cable.dst);
      if (same) replaced = c;
      return same || c === cable;
    });
    cable.chain = others;
    this.lru.set(cable.hash, cable, { noDisposeOnSet: true });
    if (replaced) this.unindex(replaced);
    this.index(cable);
    return replaced;
  }

  /** Remove exactly this cable object (if it is still cached). */
  remove(cable: Cable): boolean {
    let found = false;
    const others = this.unlink(this.lru.peek(cable.hash) ?? null, (c) => {
      if (c === cable) found = true;
      return c === cable;
    });
    if (!found) return false;
    this.unindex(cable);
    cable.chain = null;
    if (others) this.lru.set(cable.hash, others, { noDisposeOnSet: true });
    else this.lru.delete(cable.hash);
    return true;
  }

  /**
   * Take out every cable whose lifetime ended at `now` and that is not being verified again
   * (a lookup already treats it as a miss; this frees it and its SA). Returns how many.
   */
  removeExpired(now: number, removed: (c: Cable) => void): number {
    const out: Cable[] = [];
    for (const c of this.all()) if (now >= c.expiresAt && !c.refreshing) out.push(c);
    for (const c of out) {
      this.remove(c);
      removed(c);
    }
    return out.length;
  }

  /** Egress cables from the VM on port `port` cached now. */
  portCount(port: number): number {
    return this.byPort.get(port)?.size ?? 0;
  }

  /** Take out the longest-cached cable from port `port` (its quota is full), as an eviction. */
  evictOldestOfPort(port: number): Cable | undefined {
    const set = this.byPort.get(port);
    const oldest = set?.values().next().value as Cable | undefined;
    if (!oldest) return undefined;
    if (!this.remove(oldest)) set!.delete(oldest); // an index entry whose cable is gone: dropped, so the quota's loop always moves on
    this.evictions++;
    this.onEvict(oldest);
    return oldest;
  }

  /** The cables with `identity` (canonical text) at either end. */
  cablesOf(identity: string): readonly Cable[] {
    const v = this.byIdentity.get(identity);
    return v === undefined ? [] : v instanceof Set ? [...v] : [v];
  }

  private index(c: Cable): void {
    if (c.direction === CableDirection.Egress && c.srcPort >= 0) {
      let ports = this.byPort.get(c.srcPort);
      if (!ports) {
        ports = new Set();
        this.byPort.set(c.srcPort, ports);
      }
      ports.add(c);
    }
    this.indexIdentity(c.srcText, c);
    if (c.dstText !== c.srcText) this.indexIdentity(c.dstText, c);
  }

  private indexIdentity(id: string, c: Cable): void {
    const v = this.byIdentity.get(id);
    if (v === undefined) this.byIdentity.set(id, c);
    else if (v instanceof Set) v.add(c);
    else if (v !== c) this.byIdentity.set(id, new Set([v, c]));
  }

  private unindexIdentity(id: string, c: Cable): void {
    const v = this.byIdentity.get(id);
    if (v === c) this.byIdentity.delete(id);
    else if (v instanceof Set && v.delete(c) && v.size === 1) this.byIdentity.set(id, v.values().next().value as Cable);
  }

  private unindex(c: Cable): void {
    const ports = this.byPort.get(c.srcPort);
    if (ports && ports.delete(c) && ports.size === 0) this.byPort.delete(c.srcPort);
    this.unindexIdentity(c.srcText, c);
    if (c.dstText !== c.srcText) this.unindexIdentity(c.dstText, c);
  }

  /** The chain from `head` without the cables `out` selects (slow path: inserts and removals). */
  private unlink(head: Cable | null, out: (c: Cable) => boolean): Cable | null {
    const keep: Cable[] = [];
    for (let c = head; c; c = c.chain) if (!out(c)) keep.push(c);
    for (let k = 0; k < keep.length; k++) keep[k].chain = keep[k + 1] ?? null;
    return keep[0] ?? null;
  }

  /** Every cable, most recently used first. */
  *all(): Generator<Cable> {
    for (const head of this.lru.values()) for (let c: Cable | null = head; c; c = c.chain) yield c;
  }

  get size(): number {
    let n = 0;
    for (const head of this.lru.values()) for (let c: Cable | null = head; c; c = c.chain) n++;
    return n;
  }

  clear(): void {
    this.lru.clear();
    this.byIdentity.clear();
    this.byPort.clear();
  }
}
