// Anti-replay window for ESP with 64-bit extended sequence numbers (RFC 4303 3.4.3 and
// Appendix A), kept as a bitmap of 32-bit blocks in the manner of RFC 6479: moving the
// window clears whole blocks, never shifts bits.
//
// A window takes its blocks only once its top reaches 32: until then every number it can
// still be asked about lies in block 0, which it keeps in a field of its own (`first`). An
// SA that carries fewer than 32 packets (most of a million idle cables) then costs no 256
// bytes of blocks, and the answers are the same as with the blocks from the start.
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

/**
 * The blocks of every window, 4096 windows to a 1 MB chunk, so that a window costs its
 * 256 bytes and not a typed array, an ArrayBuffer and a backing store of its own. A released
 * window's place is handed out again, zeroed (the window would not need it: it clears each
 * block as its top enters it, and it sets block 0 whole when it takes its place). After a
 * peak (a flush, a peer gone with its SAs) compact() moves the windows of the last chunks into the free
 * places of the others and drops those chunks, one at a time, so the memory goes back: a
 * chunk of 1 MB is mapped on its own by the allocator and unmapped when freed (64-KB chunks
 * stayed in glibc's heap: 1M windows released, RSS fell by 60 of 244 MB; 1 MB: by 290 MB).
 */
/** Windows to a chunk: 4096. */
const CHUNK_SHIFT = 12;

class BlockStore {
  static readonly PER_CHUNK = 1 << CHUNK_SHIFT;
  readonly chunks: Uint32Array[] = [];
  /** The window at each place (null: free), to move it when its chunk goes. */
  private readonly owners: (ReplayWindow | null)[] = [];
  /** Places released and not yet handed out again; places at or above `used` in it are stale (their chunk went). */
  private readonly free: number[] = [];
  private used = 0;
  private live = 0;

  /** A place for `w`'s blocks, zeroed. */
  take(w: ReplayWindow): number {
    let place = this.popFree(this.used);
    if (place < 0) {
      place = this.used++;
      if ((place % BlockStore.PER_CHUNK) === 0) this.chunks.push(new Uint32Array(BlockStore.PER_CHUNK * BLOCKS));
    } else {
      this.chunk(place).fill(0, this.base(place), this.base(place) + BLOCKS);
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
/** `place` of a window whose top is still below 32: it has no blocks yet, block 0 is `first`. */
const NOT_YET = -2;
/** `place` of a released window. */
const GONE = -1;

export class ReplayWindow {
  /** Highest authenticated sequence number (top). Starts at 0, which counts as seen. */
  private topHi = 0;
  private topLo = 0;
  /** Block 0 while the window has no blocks (NOT_YET). Bit 0 is set: sequence number 0 is never valid. */
  private first = 1;
  /**
   * Its place in the block store (its blocks are STORE.chunk(place) from STORE.base(place):
   * found from the place, they cost the SA no fields); NOT_YET before its top reaches 32,
   * GONE once released.
   */
  private place = NOT_YET;

  /** True once the window holds blocks in the store (its top reached 32). */
  get hasBlocks(): boolean {
    return this.place >= 0;
  }

  /** Take blocks in the store and carry block 0 over (the top is about to reach 32). */
  private store(): void {
    this.place = STORE.take(this);
    STORE.chunk(this.place)[STORE.base(this.place)] = this.first;
  }

  /**
   * Give the memory of windows released since a peak back, a chunk (1 MB, 4096 windows) or a
   * few at a time: at most `maxChunks` a call (the sweep calls it). Returns chunks dropped.
   */
  static compact(maxChunks: number): number {
    return STORE.compact(maxChunks);
  }

  /** Windows in use in this thread, and the 1-MB chunks that hold them. */
  static get stored(): { windows: number; chunks: number } {
    return STORE.size;
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
    if (this.place !== NOT_YET) STORE.give(this.place);
    this.place = GONE;
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
    // Without blocks the top is below 32, so (hi, lo), not right of it, lies in block 0.
    const place = this.place;
    const word = place === NOT_YET ? this.first : STORE.chunk(place)[STORE.base(place) + ((lo >>> 5) & BLOCK_MASK)];
    return (word >>> (lo & 31)) & 1 ? ReplayCheck.Replay : ReplayCheck.Ok;
  }

  /** Record (hi, lo) as received. Call only after check() said Ok and the ICV verified. */
  accept(hi: number, lo: number): void {
    if (this.place < 0) {
      if (this.place === GONE) return; // released: nothing is accepted any more
      if (hi === 0 && lo < 32) {
        this.first |= 1 << lo;
        if (lo > this.topLo) this.topLo = lo;
        return;
      }
      this.store();
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

  /** The highest sequence number accepted, as [hi, lo]. */
  top(): [number, number] {
    return [this.topHi, this.topLo];
  }

  /** The whole window, for the process that takes the SA over (handover.ts). */
  save(): WindowState {
    const p = this.place;
    const bits = p >= 0 ? Array.from(STORE.chunk(p).subarray(STORE.base(p), STORE.base(p) + BLOCKS)) : [p === NOT_YET ? this.first : 0, ...new Array<number>(BLOCKS - 1).fill(0)];
    return { hi: this.topHi, lo: this.topLo, bits };
  }

  /** Take over a window save() gave. */
  load(s: WindowState): void {
    if (s.bits.length !== BLOCKS) throw new Error(`replay window of ${s.bits.length} blocks, expected ${BLOCKS}`);
    if (this.place === GONE) throw new Error('replay window released: it cannot take over a saved one');
    if (this.place === NOT_YET) this.store();
    this.topHi = s.hi;
    this.topLo = s.lo;
    STORE.chunk(this.place).set(s.bits, STORE.base(this.place));
  }
}

export interface WindowState {
  readonly hi: number;
  readonly lo: number;
  readonly bits: readonly number[];
}
