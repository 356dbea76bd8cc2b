// The cable cache: cables by (src, dst) identity pair, bounded, with second-chance (CLOCK)
// eviction. Keyed by pairHash (a 30-bit integer, no string per lookup) in an open-addressing
// table with linear probing: a probe reads the slot's hash from one Int32Array and touches a
// cable only when the hash is equal; pairs with the same hash sit in neighbouring slots and
// are told apart by their words (Cable.matches). So a hit costs the hash word, the slot and
// the cable: no Map, no recency list to relink.
// Lifetimes (TTL, time-window edges) live in each cable and are checked against the batch
// clock by the lookup stage.
//
// Eviction: a lookup that finds a cable marks it used; when a full cache takes a new cable, a
// hand sweeps the slots, clearing the mark of used cables and evicting the first unmarked one
// (a cable is evicted only if it went unused, since it was cached or last found, for a whole
// turn of the hand). One eviction looks at EVICT_SCAN slots at most: if every cable there
// was used, the last one goes anyway, so a miss into a full cache of busy cables costs a
// bounded walk.
//
// A second index, by identity (either end), serves the control plane: when the store says an
// identity moved, exactly its cables are found, and a host without one does no work. It is
// keyed by the identity's 30-bit key (Cable.srcKey, dstKey), not its text, so that it holds no
// string per cable; identities that share a key share an entry, told apart by their words.
// A third, by source port, serves the per-port quota.

import { BATCH_MAX, Next, type Batch } from './batch.js';
import { CableDirection, identityKeyOf, type Cable } from './cable.js';
import { pairHash } from './pair-hash.js';
import { reached, tickOf } from '../base/ticks.js';
import { IPV6_OFF_DST, IPV6_OFF_SRC } from '../wire/ipv6.js';
import { parseIpv6Address } from '../base/address.js';

/** The hash of an empty slot (pair hashes are non-negative). */
const EMPTY = -1;
const FIRST_SLOTS = 64;
/** Slots the eviction hand looks at, at most, for one eviction. */
export const EVICT_SCAN = 256;

/** What findBatch() found, by packet index: a stage's own, reused for every batch. */
export class BatchLookup {
  readonly hashes = new Int32Array(BATCH_MAX);
  readonly slots = new Int32Array(BATCH_MAX);
  readonly cables: (Cable | undefined)[] = new Array<Cable | undefined>(BATCH_MAX).fill(undefined);
}

export class CableCache {
  /** Cables removed because the cache was full. */
  evictions = 0;
  /** What findBatch's pass over the cables read (Cable.touch), kept so that the reads are made. */
  touched = 0;
  /** Slots: 2^k, at least twice the cables it may hold, so a probe always ends at an empty slot. */
  private hashes = new Int32Array(FIRST_SLOTS).fill(EMPTY);
  private slots: (Cable | null)[] = new Array<Cable | null>(FIRST_SLOTS).fill(null);
  private mask = FIRST_SLOTS - 1;
  private count = 0;
  /** The eviction hand: the next slot it looks at. */
  private hand = 0;
  /** Where removeExpired goes on, and what it gathers before it removes. */
  private sweepAt = 0;
  private readonly expired: Cable[] = [];
  /** Cables by identity key: the cable itself while it is the only one (most are), a Set from the second on. */
  private readonly byIdentity = new Map<number, Cable | Set<Cable>>();
  /** Egress cables by source port, oldest first (the per-port quota). */
  private readonly byPort = new Map<number, Set<Cable>>();

  constructor(
    readonly max: number,
    private readonly onEvict: (c: Cable) => void = () => {},
    /** Called with every cable the cache takes (new, or replacing one of its pair). */
    private readonly onInsert: (c: Cable) => void = () => {},
  ) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`a cable cache holds at least 1 cable, not ${max}`);
  }

  /** The cable for the pair at buf[s..s+16), buf[d..d+16) with hash `hash`, if any. Marks it used. */
  find(hash: number, buf: Uint8Array, s: number, d: number): Cable | undefined {
    return this.findFrom(this.firstSlot(hash), hash, buf, s, d);
  }

  /**
   * find() for every active packet of `b` without a flag of `skipFlags`, in passes, each
   * reaching one step further into memory (the hash words, then the slots and cables), so
   * that the cache misses of different packets overlap instead of waiting behind each other's.
   * Each such packet's pair hash and cable (or undefined) land in `out`.
   */
  findBatch(b: Batch, skipFlags: number, out: BatchLookup): void {
    const buf = b.data;
    const { hashes, slots, cables } = out;
    // The hashes first, so that the pass over the hash words does nothing else: the less
    // work between two loads that miss, the more of them the core has in flight at once
    // (the pass with the hashing inside it carried 1.30-1.51 Mpps of egress at 1M cables,
    // this one 1.54-1.57).
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & skipFlags) !== 0) continue;
      const ip = b.l3[i];
      hashes[i] = pairHash(buf, ip + IPV6_OFF_SRC, buf, ip + IPV6_OFF_DST);
    }
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & skipFlags) !== 0) continue;
      slots[i] = this.firstSlot(hashes[i]);
    }
    // The slot's cable pointer alone, then every line of the cable: two more steps whose
    // misses overlap, before the pass that compares the pair and the stages that use it.
    const table = this.slots;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & skipFlags) !== 0 || slots[i] < 0) continue;
      cables[i] = table[slots[i]]!;
    }
    let touched = 0;
    for (let i = 0; i < b.count; i++) {
      const c = cables[i];
      if (c !== undefined) touched ^= c.touch();
    }
    this.touched = touched;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & skipFlags) !== 0) continue;
      const ip = b.l3[i];
      cables[i] = this.findFrom(slots[i], hashes[i], buf, ip + IPV6_OFF_SRC, ip + IPV6_OFF_DST);
    }
  }

  /** The first slot that holds `hash`, or -1. */
  private firstSlot(hash: number): number {
    const hashes = this.hashes;
    const mask = this.mask;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const h = hashes[i];
      if (h === hash) return i;
      if (h === EMPTY) return -1;
    }
  }

  /** The cable for the pair from `slot` (firstSlot's) on. */
  private findFrom(slot: number, hash: number, buf: Uint8Array, s: number, d: number): Cable | undefined {
    if (slot < 0) return undefined;
    const hashes = this.hashes;
    const mask = this.mask;
    for (let i = slot; ; i = (i + 1) & mask) {
      const h = hashes[i];
      if (h === EMPTY) return undefined;
      if (h !== hash) continue;
      const c = this.slots[i]!;
      if (c.matches(buf, s, d)) {
        if (!c.used) c.used = true;
        return c;
      }
    }
  }

  /** The cached cable for the same pair as `c` (c itself, or the one that replaced it). */
  findCable(c: Cable): Cable | undefined {
    const i = this.slotOfPair(c);
    return i < 0 ? undefined : this.slots[i]!;
  }

  /** Insert `cable`, replacing the cable of the same pair if there is one. Returns the replaced cable. */
  insert(cable: Cable): Cable | undefined {
    const same = this.slotOfPair(cable);
    if (same >= 0) {
      const replaced = this.slots[same]!;
      if (replaced === cable) return undefined;
      this.slots[same] = cable;
      cable.used = true;
      this.unindex(replaced);
      this.index(cable);
      this.onInsert(cable);
      return replaced;
    }
    if (this.count >= this.max) this.evictOne();
    if ((this.count + 1) * 2 > this.slots.length) this.resize(this.slots.length * 2);
    cable.used = true; // new: spared by the hand's next pass
    this.place(cable);
    this.index(cable);
    this.onInsert(cable);
    return undefined;
  }

  /** Remove exactly this cable object (if it is still cached). */
  remove(cable: Cable): boolean {
    const mask = this.mask;
    for (let i = cable.hash & mask; this.hashes[i] !== EMPTY; i = (i + 1) & mask) {
      if (this.slots[i] !== cable) continue;
      this.deleteAt(i);
      this.unindex(cable);
      return true;
    }
    return false;
  }

  /**
   * Take out every cable whose lifetime ended at `now` and that is not being verified again
   * (a lookup already treats it as a miss; this frees it and its SA). Returns how many.
   */
  removeExpired(now: number, removed: (c: Cable) => void, maxSlots = Infinity, maxRemovals = Infinity): number {
    // At most maxSlots slots from where the last call stopped, and no further than the slot of
    // the maxRemovals-th expired cable: a big cache is swept a slice at a time, so that the
    // sweep never holds the event loop for long, even when a burst of cables made together
    // ends together. Lookups check lifetimes themselves; the sweep only frees what ended.
    const out = this.expired;
    const slots = this.slots;
    const visit = Math.min(maxSlots, slots.length);
    let s = this.sweepAt & this.mask;
    const t = tickOf(now);
    for (let k = 0; k < visit && out.length < maxRemovals; k++, s = (s + 1) & this.mask) {
      const c = slots[s];
      if (c !== null && reached(t, c.expiresTick) && !c.refreshing) out.push(c);
    }
    this.sweepAt = s;
    const n = out.length;
    for (const c of out) {
      this.remove(c);
      removed(c);
    }
    out.length = 0;
    this.shrinkIfSparse();
    return n;
  }

  /** Slots of the table now (a power of two, at least twice the cables). */
  get slotCount(): number {
    return this.slots.length;
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

  /** The cables with `identity` (an IPv6 address's text) at either end. */
  cablesOf(identity: string): readonly Cable[] {
    let id: Buffer;
    try {
      id = parseIpv6Address(identity);
    } catch {
      return [];
    }
    const v = this.byIdentity.get(identityKeyOf(id));
    const has = (c: Cable): boolean => c.hasSrc(id) || c.hasDst(id);
    return v === undefined ? [] : v instanceof Set ? [...v].filter(has) : has(v) ? [v] : [];
  }

  /** Every cable, in table order. Do not insert or remove while iterating: copy first. */
  *all(): Generator<Cable> {
    for (const c of this.slots) if (c !== null) yield c;
  }

  get size(): number {
    return this.count;
  }

  clear(): void {
    this.hashes = new Int32Array(FIRST_SLOTS).fill(EMPTY);
    this.slots = new Array<Cable | null>(FIRST_SLOTS).fill(null);
    this.mask = FIRST_SLOTS - 1;
    this.count = 0;
    this.hand = 0;
    this.byIdentity.clear();
    this.byPort.clear();
  }

  /** The slot of the cached cable with the same pair as `c`, or -1. */
  private slotOfPair(c: Cable): number {
    const mask = this.mask;
    for (let i = c.hash & mask; this.hashes[i] !== EMPTY; i = (i + 1) & mask) {
      const x = this.slots[i]!;
      if (x === c || (this.hashes[i] === c.hash && x.samePair(c))) return i;
    }
    return -1;
  }

  /** Put `c` in the first empty slot from its hash's (there is one: the table is at most half full). */
  private place(c: Cable): void {
    let i = c.hash & this.mask;
    while (this.hashes[i] !== EMPTY) i = (i + 1) & this.mask;
    this.hashes[i] = c.hash;
    this.slots[i] = c;
    this.count++;
  }

  /** Empty slot i, moving back the cables after it that would no longer be reached (no tombstones). */
  private deleteAt(i: number): void {
    const { hashes, slots, mask } = this;
    for (let j = (i + 1) & mask; hashes[j] !== EMPTY; j = (j + 1) & mask) {
      const home = hashes[j] & mask;
      // The cable at j stays unless its home lies cyclically outside (i, j].
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      hashes[i] = hashes[j];
      slots[i] = slots[j];
      i = j;
    }
    hashes[i] = EMPTY;
    slots[i] = null;
    this.count--;
  }

  /** The cache is full: sweep the hand to the first cable not used since it last passed, and evict it. */
  private evictOne(): void {
    for (let looked = 1; ; looked++) {
      const i = this.hand;
      this.hand = (i + 1) & this.mask;
      const c = this.slots[i];
      if (c === null) continue;
      // Past EVICT_SCAN slots the hand takes the cable it is on, used or not: when every cable
      // is in use, one miss never sweeps the whole table (2M slots with 1M cables).
      if (c.used && looked < EVICT_SCAN) {
        c.used = false;
        continue;
      }
      this.deleteAt(i);
      this.unindex(c);
      this.evictions++;
      this.onEvict(c);
      return;
    }
  }

  /**
   * After a peak (fewer than one cable in 64 slots): as few slots as hold the cables at a
   * quarter full, so that the table does not grow again at once. One pass over the old slots,
   * once per peak: 2M slots to 128k with 30k cables placed again took 19 ms here, so it waits
   * until that few are left.
   */
  private shrinkIfSparse(): void {
    let n = this.slots.length;
    if (n <= FIRST_SLOTS || this.count * 64 >= n) return;
    while (n / 2 >= FIRST_SLOTS && this.count * 4 <= n / 2) n /= 2;
    this.resize(n);
  }

  /** `n` slots, every cable placed again. */
  private resize(n: number): void {
    const old = this.slots;
    this.hashes = new Int32Array(n).fill(EMPTY);
    this.slots = new Array<Cable | null>(n).fill(null);
    this.mask = n - 1;
    this.count = 0;
    this.hand = 0;
    for (const c of old) if (c !== null) this.place(c);
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
    this.indexIdentity(c.srcKey, c);
    this.indexIdentity(c.dstKey, c);
  }

  private indexIdentity(id: number, c: Cable): void {
    const v = this.byIdentity.get(id);
    if (v === undefined) this.byIdentity.set(id, c);
    else if (v instanceof Set) v.add(c);
    else if (v !== c) this.byIdentity.set(id, new Set([v, c]));
  }

  private unindexIdentity(id: number, c: Cable): void {
    const v = this.byIdentity.get(id);
    if (v === c) this.byIdentity.delete(id);
    else if (v instanceof Set && v.delete(c) && v.size === 1) this.byIdentity.set(id, v.values().next().value as Cable);
  }

  private unindex(c: Cable): void {
    const ports = this.byPort.get(c.srcPort);
    if (ports && ports.delete(c) && ports.size === 0) this.byPort.delete(c.srcPort);
    this.unindexIdentity(c.srcKey, c);
    this.unindexIdentity(c.dstKey, c);
  }
}
