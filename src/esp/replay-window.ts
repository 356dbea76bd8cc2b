// Anti-replay window for ESP with 64-bit extended sequence numbers (RFC 4303 3.4.3 and
// Appendix A), kept as a bitmap of 32-bit blocks in the manner of RFC 6479: moving the
// window clears whole blocks, never shifts bits.
//
// Invariants:
// - a sequence number is checked (check) before decryption and recorded (accept) only
//   after the ICV verified, so forged packets never move the window;
// - the 64-bit number is two uint32 halves, never one float;
// - sequence number 0 is never valid (RFC 4303 3.3.3: the first packet carries 1).

/** Blocks of 32 bits; the window covers (BLOCKS - 1) * 32 = 2016 packets. */
const BLOCKS = 64;
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

export class ReplayWindow {
  /** Highest authenticated sequence number (top). Starts at 0, which counts as seen. */
  private topHi = 0;
  private topLo = 0;
  private readonly bits = new Uint32Array(BLOCKS);

  constructor() {
    this.bits[0] = 1; // sequence number 0: never valid
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
    if (hi < 0) return ReplayCheck.LeftOfWindow;
    const ahead = (hi - this.topHi) * TWO32 + (lo - this.topLo); // exact: |value| < 2^34
    if (ahead > 0) return ReplayCheck.Ok;
    if (-ahead >= REPLAY_WINDOW) return ReplayCheck.LeftOfWindow;
    const word = this.bits[(lo >>> 5) & BLOCK_MASK];
    return (word >>> (lo & 31)) & 1 ? ReplayCheck.Replay : ReplayCheck.Ok;
  }

  /** Record (hi, lo) as received. Call only after check() said Ok and the ICV verified. */
  accept(hi: number, lo: number): void {
    const ahead = (hi - this.topHi) * TWO32 + (lo - this.topLo);
    if (ahead > 0) {
      // Clear the blocks the top moves over, at most all of them. The block number of a
      // 64-bit sequence is hi * 2^27 + (lo >>> 5); its index in the ring depends on lo only.
      const topBlock = this.topLo >>> 5;
      const steps = Math.min((hi - this.topHi) * 0x800_0000 + ((lo >>> 5) - topBlock), BLOCKS);
      for (let s = 1; s <= steps; s++) this.bits[(topBlock + s) & BLOCK_MASK] = 0;
      this.topHi = hi;
      this.topLo = lo;
    }
    this.bits[(lo >>> 5) & BLOCK_MASK] |= 1 << (lo & 31);
  }

  /** The highest sequence number accepted, as [hi, lo]. */
  top(): [number, number] {
    return [this.topHi, this.topLo];
  }

  /** The whole window, for the process that takes the SA over (handover.ts). */
  save(): WindowState {
    return { hi: this.topHi, lo: this.topLo, bits: [...this.bits] };
  }

  /** Take over a window save() gave. */
  load(s: WindowState): void {
    if (s.bits.length !== BLOCKS) throw new Error(`replay window of ${s.bits.length} blocks, expected ${BLOCKS}`);
    this.topHi = s.hi;
    this.topLo = s.lo;
    this.bits.set(s.bits);
  }
}

export interface WindowState {
  readonly hi: number;
  readonly lo: number;
  readonly bits: readonly number[];
}
