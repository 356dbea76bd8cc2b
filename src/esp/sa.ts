// ESP security associations (RFC 4303), one per direction of a cable.
//
// Outbound: the 64-bit sequence number is two uint32 halves; it never repeats under a key
// (the IV is derived from it, RFC 4106 3.1): at the hard limit the SA refuses to send
// until a new SA replaces it. The soft limits (packets, bytes, age) ask for a rekey well
// before that.
// Inbound: the anti-replay window, the peer host it must come from, and what it carries
// (for the data path, the cable whose pair the inner packet must match).

import { MAX_AHEAD_MS, earlier, tickOf } from '../base/ticks.js';
import { ReplayWindow } from './replay-window.js';

/** Limits of an outbound SA. Packet and byte limits are below 2^53, so numbers count them exactly. */
export interface SaLimits {
  /** Ask for a rekey after this many packets, bytes or milliseconds. */
  readonly softPackets: number;
  readonly softBytes: number;
  readonly softAgeMs: number;
  /** Never send beyond this sequence number, given as [hi, lo] (default 2^64 - 1). */
  readonly hardSeq: readonly [number, number];
}

/** InboundSa's retire field while the SA is current: a tick no end of life takes (retireBy moves it on by 1 ms). */
const CURRENT = -0x80000000;

export const DEFAULT_HARD_SEQ: readonly [number, number] = [0xffffffff, 0xffffffff];

/** An outbound SA. The peer host it goes to, which chose the SPI, is its cable's (Cable.peerAddr): kept once, 8 B a pair. */
export class OutboundSa {
  /** Sequence number of the last packet sent; the first sent is 1. */
  seqHi = 0;
  seqLo = 0;
  bytes = 0;
  /** Set once a soft limit is crossed, so the rekey is asked for once. */
  rekeyRequested = false;
  /** When it was made, in ticks (src/base/ticks.ts). */
  readonly createdTick: number;

  constructor(
    readonly spi: number,
    /** Handle of the key in the EspCipher. */
    readonly key: number,
    createdAt: number,
    /** Shared by the host's SAs: read from here, the limits cost an SA no field of its own. */
    readonly limits: SaLimits,
  ) {
    this.createdTick = tickOf(createdAt);
  }

  /**
   * Packets sent under its key: the sequence numbers taken (each an IV used, whether its seal
   * succeeded or not), counted by the sequence number itself rather than a field of its own.
   */
  get packets(): number {
    return this.seqHi * 2 ** 32 + this.seqLo;
  }

  /** Carry on an SA another process sent on: its next packet goes out with sequence number (hi, lo) + 1. */
  resumeAfter(hi: number, lo: number): void {
    this.seqHi = hi >>> 0;
    this.seqLo = lo >>> 0;
  }

  /** Take the next sequence number; false when the hard limit is reached (nothing is sent). */
  advance(): boolean {
    const hard = this.limits.hardSeq;
    if (this.seqHi > hard[0] || (this.seqHi === hard[0] && this.seqLo >= hard[1])) return false;
    this.seqLo = (this.seqLo + 1) >>> 0;
    if (this.seqLo === 0) this.seqHi = (this.seqHi + 1) >>> 0;
    return true;
  }

  /** True when a soft limit is crossed at `now` (ms). An SA is rekeyed at 12.4 days of age at the latest (MAX_AHEAD_MS). */
  wantsRekey(now: number): boolean {
    const l = this.limits;
    return this.packets >= l.softPackets || this.bytes >= l.softBytes || ((tickOf(now) - this.createdTick) | 0) >= Math.min(l.softAgeMs, MAX_AHEAD_MS);
  }
}

/**
 * An inbound SA carrying `C` (the data path's cable). It is its own anti-replay window: the
 * window's fields lie in the SA object, so a packet follows one pointer fewer (and a pair
 * keeps one object fewer) than with a window object of its own.
 */
export class InboundSa<C> extends ReplayWindow {
  packets = 0;
  bytes = 0;
  /** CURRENT, or the tick it stops accepting packets at (one field for both, 8 B a pair). */
  private retire = CURRENT;
  /** The next older SA that carries the same cable (the SA table keeps them as a list from the cable). */
  older: InboundSa<C> | null = null;

  constructor(
    readonly spi: number,
    readonly key: number,
    /** Underlay IPv4 address (uint32) the packets must come from. */
    readonly peer: number,
    /** What the SA carries: the ingress cable (remote source -> local destination). */
    public cable: C,
  ) {
    super();
  }

  /**
   * Reads a field on each cache line of the SA (144 bytes with V8's header: the window's
   * fields, then these, 8 bytes apart; those read here lie at most 40 bytes apart), for a pass
   * that brings a batch's SAs in before they are used. Returns what it read, folded.
   */
  touch(): number {
    return this.touchWindow() ^ this.peer ^ this.retire;
  }

  /** The pair's current SA. After a rekey, the old one is no longer current and stays until retireTick for packets in flight. */
  get current(): boolean {
    return this.retire === CURRENT;
  }

  /** Not current: the tick it stops accepting packets at. */
  get retireTick(): number {
    return this.retire;
  }

  /** It is no longer current and accepts packets until tick `t` at the latest (an earlier end stays). */
  retireBy(t: number): void {
    const end = t === CURRENT ? t + 1 : t; // the one tick that means "current" ends a millisecond later
    this.retire = this.retire === CURRENT ? end : earlier(this.retire, end);
  }
}
