// Anti-replay window for ESP with 64-bit extended sequence numbers (RFC 4303 3.4.3 and
// Appendix A), kept as a bitmap of 32-bit blocks in the manner of RFC 6479: moving the
// window clears whole blocks, never shifts bits.
//
// A window takes its blocks only when it needs them. Until then it is its top and its holes:
// the numbers inside the window, below the top, that were not received (at most MAX_HOLES).
// Every other number up to the top counts as received. An SA whose packets arrive in order,
// with a lost or late one now and then, never needs the 256 bytes of blocks (nor touches
// them on every packet); more holes than that at once, and the window writes itself into
// blocks and carries on there. Once its holes are MAX_HOLES or fewer again (the losses fell
// behind the window, or came late), the sweep gives its blocks back (shrink). The answers are
// the same either way.
//
// Invariants:
// - a sequence number is checked (check) before decryption and recorded (accept) only
//   after the ICV verified, so forged packets never move the window;
// - the 64-bit number is two uint32 halves, never one float;
// - sequence number 0 is never valid (RFC 4303 3.3.3: the first packet carries 1).

/** Blocks of 32 bits; the window covers (BLOCKS - 1) * 32 = 2016 packets. */
const BLOCKS_SHIFT = 6;
const BLOCKS = 1 << BLOCKS_SHIFT;
const BLOCK_MASK = BLOCKS - 1;
export const REPLAY_WINDOW = (BLOCKS - 1) * 32;

export const enum ReplayCheck {
  /** Never seen and inside or right of the window. */
  Ok = 0,
  /** Seen before. */
  Replay = 1,
  /** Too old: left of the window. */
  LeftOfWindow = 2,
}

const TWO32 = 0x1_0000_0000;

/** Windows to a chunk: 4096. */
const CHUNK_SHIFT = 12;

/**
 * The blocks of every window that needs them, 4096 windows to a 1 MB chunk, so that a window
 * costs its 256 bytes and not a typed array, an ArrayBuffer and a backing store of its own. A
 * released window's place is handed out again as it is: the window that takes it writes all
 * of its blocks. After a peak (a flush, a peer gone with its SAs) compact() moves the windows
 * of the last chunks into the free places of the others and drops those chunks, one at a
 * time, so the memory goes back: a chunk of 1 MB is mapped on its own by the allocator and
 * unmapped when freed (64-KB chunks stayed in glibc's heap: 1M windows released, RSS fell by
 * 60 of 244 MB; 1 MB: by 290 MB).
 */
class BlockStore {
  static readonly PER_CHUNK = 1 << CHUNK_SHIFT;
  readonly chunks: Uint32Array[] = [];
  /** The window at each place (null: free), to move it when its chunk goes. */
  private readonly owners: (ReplayWindow | null)[] = [];
  /** Places released and not yet handed out again; places at or above `used` in it are stale (their chunk went). */
  private readonly free: number[] = [];
  private used = 0;
  private live = 0;
  /** Where shrink() goes on. */
  private shrinkAt = 0;

  /** A place for `w`'s blocks (as the last window there left them: `w` writes them all). */
  take(w: ReplayWindow): number {
    let place = this.popFree(this.used);
    if (place < 0) {
      place = this.used++;
      if ((place % BlockStore.PER_CHUNK) === 0) this.chunks.push(new Uint32Array(BlockStore.PER_CHUNK * BLOCKS));
    }
    this.owners[place] = w;
    this.live++;
    return place;
  }

  give(place: number): void {
    this.owners[place] = null;
    this.free.push(place);
    this.live--;
  }

  /** The chunk that holds the blocks at `place`. */
  chunk(place: number): Uint32Array {
    return this.chunks[place >>> CHUNK_SHIFT];
  }

  /** Where in its chunk the blocks at `place` start. */
  base(place: number): number {
    return (place & (BlockStore.PER_CHUNK - 1)) << BLOCKS_SHIFT;
  }

  /** Windows in use, and chunks allocated. */
  get size(): { windows: number; chunks: number } {
    return { windows: this.live, chunks: this.chunks.length };
  }

  /**
   * Drop up to `maxChunks` last chunks while the windows would still fill less than half of
   * the chunks left, moving each window of a dropped chunk to a free place below it.
   */
  compact(maxChunks: number): number {
    const per = BlockStore.PER_CHUNK;
    let dropped = 0;
    while (dropped < maxChunks && this.chunks.length > 1 && this.live * 2 <= (this.chunks.length - 1) * per) {
      const last = (this.chunks.length - 1) * per;
      for (let p = last; p < this.used; p++) {
        const w = this.owners[p];
        if (w === null) continue;
        const to = this.popFree(last); // there is one: fewer windows than places below `last`
        if (to < 0) return dropped; // (were there none, the chunk would simply stay)
        const from = this.chunk(p);
        this.chunk(to).set(from.subarray(this.base(p), this.base(p) + BLOCKS), this.base(to));
        this.owners[to] = w;
        w.moved(to);
      }
      this.chunks.pop();
      this.owners.length = last;
      this.used = last;
      dropped++;
    }
    return dropped;
  }

  /**
   * Ask up to `maxWindows` windows, from where the last call stopped, to give their blocks
   * back (ReplayWindow.shrink). Returns how many did.
   */
  shrink(maxWindows: number): number {
    let asked = 0;
    let gave = 0;
    for (let n = 0; n < this.used && asked < maxWindows; n++) {
      if (this.shrinkAt >= this.used) this.shrinkAt = 0;
      const w = this.owners[this.shrinkAt++];
      if (w === null) continue;
      asked++;
      if (w.shrink()) gave++;
    }
    return gave;
  }

  /** A free place below `limit`, or -1; stale ones met on the way are forgotten. */
  private popFree(limit: number): number {
    while (this.free.length > 0) {
      const p = this.free.pop()!;
      if (p < limit && this.owners[p] === null) return p;
    }
    return -1;
  }
}

const STORE = new BlockStore();
/** `place` of a window kept as its top and its holes alone, without blocks. */
const HOLES = -2;
/** `place` of a released window. */
const GONE = -1;
/** Holes a window keeps in its own fields, two to a field; one more and it takes blocks. */
export const MAX_HOLES = 6;
/**
 * A hole is kept as the low 15 bits of its number: it lies less than the window (2016)
 * below the top, far less than 2^15, so those bits and the top's name it. Two make 30 bits,
 * a small integer in V8.
 */
const HOLE_BITS = 15;
const HOLE_MASK = (1 << HOLE_BITS) - 1;

export class ReplayWindow {
  /** Highest authenticated sequence number (top). Starts at 0, which counts as seen. */
  private topHi = 0;
  private topLo = 0;
  /**
   * Without blocks: the numbers inside the window below the top that were not received, as
   * the low HOLE_BITS of each (how far it lies below the top follows from the top's). The
   * first `holes` of them are in use, two to a field: holes 0 and 1 in holesA (hole 0 in
   * its low bits), 2 and 3 in holesB, 4 and 5 in holesC.
   */
  private holes = 0;
  private holesA = 0;
  private holesB = 0;
  private holesC = 0;
  /**
   * Its place in the block store (its blocks are STORE.chunk(place) from STORE.base(place):
   * found from the place, they cost the SA no fields); HOLES before it needs blocks, GONE
   * once released.
   */
  private place = HOLES;

  /** True once the window holds blocks in the store (it had more than MAX_HOLES holes). */
  get hasBlocks(): boolean {
    return this.place >= 0;
  }

  /**
   * Give the memory of windows released since a peak back, a chunk (1 MB, 4096 windows) or a
   * few at a time: at most `maxChunks` a call (the sweep calls it). Returns chunks dropped.
   */
  static compact(maxChunks: number): number {
    return STORE.compact(maxChunks);
  }

  /**
   * Let up to `maxWindows` windows with blocks, from where the last call stopped, give them
   * back if they have MAX_HOLES holes or fewer again (the sweep calls it). Returns how many did.
   */
  static shrink(maxWindows: number): number {
    return STORE.shrink(maxWindows);
  }

  /** Windows with blocks in this thread, and the 1-MB chunks that hold them. */
  static get stored(): { windows: number; chunks: number } {
    return STORE.size;
  }

  /** Reads the window's first and last fields (for a pass that brings an SA in: sa.ts). */
  protected touchWindow(): number {
    return this.topLo ^ this.place;
  }

  /** The block store moved this window's blocks to `place` (compact; the store's only). */
  moved(place: number): void {
    this.place = place;
  }

  /**
   * The SA is gone: its blocks go back to the store for another window. From now on this
   * window refuses every packet (left of the window) and accepts nothing, so a window kept by
   * mistake can never read or move another's blocks.
   */
  release(): void {
    if (this.place === GONE) return;
    if (this.place >= 0) STORE.give(this.place);
    this.place = GONE;
    this.holes = 0;
  }

  /**
   * Infer the high 32 bits of a received sequence number from its low 32 bits and the
   * window (RFC 4303 Appendix A2.2). Returns -1 when it lies below sequence number 0.
   *
   * One refinement: in case A, a low half below the window's bottom is taken for the next
   * 2^32 subspace only when that puts it less than 2^31 ahead of the top (serial-number
   * arithmetic, as RFC 1982); otherwise it is an old packet, left of the window. A literal
   * A2.2 would guess the next subspace for every old packet and report it as an ICV
   * failure; no real sender jumps 2^31 packets ahead.
   */
  inferHigh(seqLo: number): number {
    const th = this.topHi;
    const tl = this.topLo;
    const bottom = (tl - REPLAY_WINDOW + 1) >>> 0;
    if (tl >= REPLAY_WINDOW - 1) {
      // Case A: the window lies within one 2^32 subspace.
      if (seqLo >= bottom) return th;
      return ((seqLo - tl) >>> 0) < 0x8000_0000 ? th + 1 : th;
    }
    // Case B: the window spans two subspaces.
    if (seqLo >= bottom) return th - 1; // -1 when th is 0: below the first packet
    return th;
  }

  /** Would (hi, lo) be accepted? Does not change the window. */
  check(hi: number, lo: number): ReplayCheck {
    if (hi < 0 || this.place === GONE) return ReplayCheck.LeftOfWindow;
    const ahead = (hi - this.topHi) * TWO32 + (lo - this.topLo); // exact: |value| < 2^34
    if (ahead > 0) return ReplayCheck.Ok;
    if (-ahead >= REPLAY_WINDOW) return ReplayCheck.LeftOfWindow;
    const place = this.place;
    if (place === HOLES) return this.holeIndex(lo) >= 0 ? ReplayCheck.Ok : ReplayCheck.Replay;
    const word = STORE.chunk(place)[STORE.base(place) + ((lo >>> 5) & BLOCK_MASK)];
    return (word >>> (lo & 31)) & 1 ? ReplayCheck.Replay : ReplayCheck.Ok;
  }

  /** Record (hi, lo) as received. Call only after check() said Ok and the ICV verified. */
  accept(hi: number, lo: number): void {
    if (this.place < 0) {
      if (this.place === GONE) return; // released: nothing is accepted any more
      if (this.acceptWithoutBlocks(hi, lo)) return;
      this.takeBlocks();
    }
    const bits = STORE.chunk(this.place);
    const base = STORE.base(this.place);
    const ahead = (hi - this.topHi) * TWO32 + (lo - this.topLo);
    if (ahead > 0) {
      // Clear the blocks the top moves over, at most all of them. The block number of a
      // 64-bit sequence is hi * 2^27 + (lo >>> 5); its index in the ring depends on lo only.
      const topBlock = this.topLo >>> 5;
      const steps = Math.min((hi - this.topHi) * 0x800_0000 + ((lo >>> 5) - topBlock), BLOCKS);
      for (let s = 1; s <= steps; s++) bits[base + ((topBlock + s) & BLOCK_MASK)] = 0;
      this.topHi = hi;
      this.topLo = lo;
    }
    bits[base + ((lo >>> 5) & BLOCK_MASK)] |= 1 << (lo & 31);
  }

  /**
   * accept() of a window without blocks: a late number fills its hole; a number right of the
   * top becomes the top, and the numbers it skips, inside the window, become holes. False,
   * changing nothing, when that would make more than MAX_HOLES holes: the window needs blocks.
   */
  private acceptWithoutBlocks(hi: number, lo: number): boolean {
    const ahead = (hi - this.topHi) * TWO32 + (lo - this.topLo);
    if (ahead <= 0) {
      this.removeHole(this.holeIndex(lo)); // check() said Ok: it is a hole
      return true;
    }
    const skipped = Math.min(ahead - 1, REPLAY_WINDOW - 1);
    let kept = 0; // holes still inside the window once (hi, lo) is the top
    for (let k = 0; k < this.holes; k++) if (this.behind(hi, lo, this.hole(k)) < REPLAY_WINDOW) kept++;
    if (kept + skipped > MAX_HOLES) return false;
    for (let k = this.holes - 1; k >= 0; k--) if (this.behind(hi, lo, this.hole(k)) >= REPLAY_WINDOW) this.removeHole(k);
    for (let k = skipped; k >= 1; k--) this.setHole(this.holes++, (lo - k) & HOLE_MASK);
    this.topHi = hi;
    this.topLo = lo;
    return true;
  }

  /** How far hole `h` (HOLE_BITS of it) lies behind (hi, lo), a number at or right of the top. */
  private behind(hi: number, lo: number, h: number): number {
    return (hi - this.topHi) * TWO32 + (lo - this.topLo) + this.below(h);
  }

  /** How far hole `h` (HOLE_BITS of it) lies below the top: 1 to REPLAY_WINDOW - 1. */
  private below(h: number): number {
    return (this.topLo - h) & HOLE_MASK;
  }

  /** The index of the hole for a number with low half `lo` inside the window, or -1. */
  private holeIndex(lo: number): number {
    const l = lo & HOLE_MASK;
    for (let k = 0; k < this.holes; k++) if (this.hole(k) === l) return k;
    return -1;
  }

  /** Hole k's HOLE_BITS. */
  private hole(k: number): number {
    const pair = k < 2 ? this.holesA : k < 4 ? this.holesB : this.holesC;
    return (k & 1) === 0 ? pair & HOLE_MASK : pair >>> HOLE_BITS;
  }

  private setHole(k: number, h: number): void {
    const shift = (k & 1) * HOLE_BITS;
    const keep = ~(HOLE_MASK << shift);
    if (k < 2) this.holesA = (this.holesA & keep) | (h << shift);
    else if (k < 4) this.holesB = (this.holesB & keep) | (h << shift);
    else this.holesC = (this.holesC & keep) | (h << shift);
  }

  /** Remove hole k (the last one takes its index). */
  private removeHole(k: number): void {
    if (k < 0) return;
    this.holes--;
    this.setHole(k, this.hole(this.holes));
  }

  /** Write the window as blocks at bits[base, base + BLOCKS): every number up to the top received, but the holes. */
  private writeBlocks(bits: Uint32Array, base: number): void {
    bits.fill(0xffff_ffff, base, base + BLOCKS);
    const top = this.topLo & 31;
    bits[base + ((this.topLo >>> 5) & BLOCK_MASK)] = top === 31 ? 0xffff_ffff : (1 << (top + 1)) - 1; // none above the top
    for (let k = 0; k < this.holes; k++) {
      const h = (this.topLo - this.below(this.hole(k))) >>> 0; // its low half
      bits[base + ((h >>> 5) & BLOCK_MASK)] &= ~(1 << (h & 31));
    }
  }

  /** Take blocks in the store and write the window into them. */
  private takeBlocks(): void {
    const place = STORE.take(this);
    this.writeBlocks(STORE.chunk(place), STORE.base(place));
    this.place = place;
    this.holes = 0;
  }

  /**
   * Back to the top and its holes, giving the blocks back to the store, when the blocks hold
   * MAX_HOLES holes or fewer: the holes that made it take them fell behind the window or were
   * filled. Between packets only. True if it did. The answers stay the same (as load()).
   */
  shrink(): boolean {
    const p = this.place;
    if (p < 0) return false;
    const holes = holesOf(STORE.chunk(p), STORE.base(p), this.topHi, this.topLo);
    if (holes === null) return false;
    STORE.give(p);
    this.place = HOLES;
    this.holes = 0;
    for (const h of holes) this.setHole(this.holes++, h & HOLE_MASK);
    return true;
  }

  /** The highest sequence number accepted, as [hi, lo]. */
  top(): [number, number] {
    return [this.topHi, this.topLo];
  }

  /** The whole window, for the process that takes the SA over (handover.ts). */
  save(): WindowState {
    const p = this.place;
    let bits: number[];
    if (p >= 0) {
      bits = Array.from(STORE.chunk(p).subarray(STORE.base(p), STORE.base(p) + BLOCKS));
    } else {
      const blocks = new Uint32Array(BLOCKS);
      if (p === HOLES) this.writeBlocks(blocks, 0);
      bits = Array.from(blocks);
    }
    return { hi: this.topHi, lo: this.topLo, bits };
  }

  /** Take over a window save() gave: without blocks when it has MAX_HOLES holes or fewer. */
  load(s: WindowState): void {
    if (s.bits.length !== BLOCKS) throw new Error(`replay window of ${s.bits.length} blocks, expected ${BLOCKS}`);
    if (this.place === GONE) throw new Error('replay window released: it cannot take over a saved one');
    this.topHi = s.hi;
    this.topLo = s.lo;
    if (this.place === HOLES) {
      const holes = holesOf(s.bits, 0, s.hi, s.lo);
      if (holes !== null) {
        this.holes = 0;
        for (const h of holes) this.setHole(this.holes++, h & HOLE_MASK);
        return;
      }
      this.takeBlocks();
    }
    STORE.chunk(this.place).set(s.bits, STORE.base(this.place));
  }
}

/**
 * The low halves of the numbers inside the window of top (hi, lo) whose blocks are
 * bits[base, base + BLOCKS), below the top, not received; null when there are more than
 * MAX_HOLES. Whole blocks received are passed over at once.
 */
function holesOf(bits: ArrayLike<number>, base: number, hi: number, lo: number): number[] | null {
  const holes: number[] = [];
  const t = lo & 31;
  for (let j = 0; j < BLOCKS; j++) {
    const word = bits[base + (((lo >>> 5) - j) & BLOCK_MASK)] >>> 0;
    if (word === 0xffff_ffff) continue;
    for (let b = 0; b < 32; b++) {
      const behind = t - b + 32 * j; // how far bit b of this block lies behind the top
      if (behind < 1 || behind >= REPLAY_WINDOW) continue; // the top, above it, or left of the window
      if (hi === 0 && lo <= behind) continue; // sequence number 0 and below: no packet has it
      if ((word >>> b) & 1) continue;
      if (holes.length === MAX_HOLES) return null;
      holes.push((lo - behind) >>> 0);
    }
  }
  return holes;
}

export interface WindowState {
  readonly hi: number;
  readonly lo: number;
  readonly bits: readonly number[];
}
