// A cable: the plugged (or unplugged) decision for one direction src -> dst of an identity
// pair, and everything the fast path needs to carry a packet along it, so that a cache
// hit touches nothing else. Cables are made by the upcall (src/switch/resolver.ts) and
// replaced, never edited, when a decision changes; only counters and the SA pointer
// (rekey) change in place.

import type { InboundSa, OutboundSa } from '../esp/sa.js';
import type { DirectionDecision, FlowState } from './decision.js';
import { Drop } from '../base/drops.js';
import { deadline, tickOf } from '../base/ticks.js';
import { formatIpv6 } from '../base/address.js';
import { identityKey, pairHashOfWords } from './pair-hash.js';

export const enum CableDirection {
  /** src is a VM on this host; packets leave through encap or go to a local VM. */
  Egress = 0,
  /** dst is a VM on this host; packets arrive from the underlay. */
  Ingress = 1,
}

/**
 * Cable.marks: the three flags, one bit each, then the direction and the drop reason, which
 * never change (one field instead of five: 32 B a cable less).
 */
const enum Mark {
  Used = 1,
  Refreshing = 2,
  RefreshAgain = 4,
  /** Set for CableDirection.Ingress. */
  Ingress = 8,
  /** The drop reason (Drop, below 256) from this bit on. */
  DropShift = 8,
}

export class Cable {
  /** Flags (Mark), read and set through used, refreshing and refreshAgain; the direction and drop, read through theirs. */
  private marks: number;

  // Where the packet goes (set at plug time).
  /** srcPort + 1 and localPort + 1, 15 bits each (a port index is below MAX_PORTS): one field instead of two, 16 B a pair. */
  private portBits = 0;
  /** Egress to another host: its underlay address (uint32) and name. */
  peerAddr = 0;
  peerHost = '';
  /** Egress to another host: outer IPv4 header template (protocol 50 or 41). */
  outer: Buffer | null = null;
  /** The SA of either direction, read through `sa` (egress) or `inbound` (ingress): one field instead of two, 16 B a pair. */
  private esp: OutboundSa | CableSa | null = null;
  /** The epoch of the far end's binding the cable was verified against (0: not verified, e.g. unplugged before that). */
  epoch = 0;
  /** Initiate-only flow state, shared with the cable of the reverse direction. */
  flows: FlowState | null = null;

  // Lifetime, in ticks (src/base/ticks.ts): int32 milliseconds, so no boxed number per time.
  /** When it was plugged. */
  plugTick = 0;
  /** From this tick on, the cable keeps forwarding while the upcall verifies it again. */
  refreshTick = 0;
  /** From this tick on, the cable is a miss (negative entries, time-window edges). */
  expiresTick = 0;

  // Counters.
  packets = 0;
  bytes = 0;
  drops = 0;

  // The pair as eight big-endian int32 words (small integers in V8), compared by matches():
  // a lookup then reads no memory beyond the cable itself. The pair is kept only this way: its
  // text is made when the control plane asks for it (the text of each cable cost 64 B).
  private readonly s0: number;
  private readonly s1: number;
  private readonly s2: number;
  private readonly s3: number;
  private readonly d0: number;
  private readonly d1: number;
  private readonly d2: number;
  private readonly d3: number;

  constructor(
    direction: CableDirection,
    /** Source and destination identities, 16 bytes each (kept as words). */
    src: Uint8Array,
    dst: Uint8Array,
    /** Drop.None when plugged; else why every packet on it is dropped. */
    drop: Drop,
    /** What decided: a policy rule, a verification step, a store lookup. */
    readonly rule: string,
    readonly decision: DirectionDecision | null,
    /** When it is plugged (ms since 1970). It is a miss from then on until lasts() gives it a life. */
    now: number,
  ) {
    this.marks = (direction === CableDirection.Ingress ? Mark.Ingress : 0) | (drop << Mark.DropShift);
    this.plugTick = tickOf(now);
    this.refreshTick = this.plugTick;
    this.expiresTick = this.plugTick;
    this.s0 = word(src, 0);
    this.s1 = word(src, 4);
    this.s2 = word(src, 8);
    this.s3 = word(src, 12);
    this.d0 = word(dst, 0);
    this.d1 = word(dst, 4);
    this.d2 = word(dst, 8);
    this.d3 = word(dst, 12);
  }

  /** The pair's hash (pairHash), made from the words: the cache finds a cable by the packet's, and keeps no field for it (8 B a cable, measured). */
  get hash(): number {
    return pairHashOfWords(this.s0, this.s1, this.s2, this.s3, this.d0, this.d1, this.d2, this.d3);
  }

  /** Egress: the port of the source VM; else -1. */
  get srcPort(): number {
    return (this.portBits & PORT_MASK) - 1;
  }

  set srcPort(port: number) {
    this.portBits = (this.portBits & ~PORT_MASK) | portField(port);
  }

  /** Egress to a VM of this host, or ingress: the destination VM's port index; else -1. */
  get localPort(): number {
    return (this.portBits >>> PORT_BITS) - 1;
  }

  set localPort(port: number) {
    this.portBits = (this.portBits & PORT_MASK) | (portField(port) << PORT_BITS);
  }

  /** Egress with ESP: the outbound SA (replaced in place by a rekey); null on an ingress cable. */
  get sa(): OutboundSa | null {
    return (this.marks & Mark.Ingress) === 0 ? (this.esp as OutboundSa | null) : null;
  }

  /** On an ingress cable only null may be set, and changes nothing. */
  set sa(sa: OutboundSa | null) {
    if ((this.marks & Mark.Ingress) === 0) this.esp = sa;
    else if (sa !== null) throw new Error('an ingress cable has no outbound SA');
  }

  /** Ingress with ESP: the newest inbound SA that carries this cable, then `.older` ones (src/switch/sa-table.ts); null on an egress cable. */
  get inbound(): CableSa | null {
    return (this.marks & Mark.Ingress) !== 0 ? (this.esp as CableSa | null) : null;
  }

  /** On an egress cable only null may be set, and changes nothing. */
  set inbound(sa: CableSa | null) {
    if ((this.marks & Mark.Ingress) !== 0) this.esp = sa;
    else if (sa !== null) throw new Error('an egress cable has no inbound SA');
  }

  get direction(): CableDirection {
    return (this.marks & Mark.Ingress) !== 0 ? CableDirection.Ingress : CableDirection.Egress;
  }

  /** Drop.None when plugged; else why every packet on it is dropped. */
  get drop(): Drop {
    return this.marks >>> Mark.DropShift;
  }

  /** Found since the cache's eviction hand last passed it (cable-cache.ts: second chance). */
  get used(): boolean {
    return (this.marks & Mark.Used) !== 0;
  }

  set used(on: boolean) {
    this.marks = on ? this.marks | Mark.Used : this.marks & ~Mark.Used;
  }

  /** Being verified again (it keeps forwarding meanwhile). */
  get refreshing(): boolean {
    return (this.marks & Mark.Refreshing) !== 0;
  }

  set refreshing(on: boolean) {
    this.marks = on ? this.marks | Mark.Refreshing : this.marks & ~Mark.Refreshing;
  }

  /** The far end's binding changed during the refresh: verify once more when it answers. */
  get refreshAgain(): boolean {
    return (this.marks & Mark.RefreshAgain) !== 0;
  }

  set refreshAgain(on: boolean) {
    this.marks = on ? this.marks | Mark.RefreshAgain : this.marks & ~Mark.RefreshAgain;
  }

  /** Verified again from `refreshAt`, a miss from `expiresAt` (ms since 1970; Infinity: never), told at `now`. */
  lasts(now: number, refreshAt: number, expiresAt: number): void {
    this.refreshTick = deadline(now, refreshAt);
    this.expiresTick = deadline(now, expiresAt);
  }

  /** The source identity, 16 bytes, made from the words (a new Buffer: for the control plane). */
  get src(): Buffer {
    return identityOf(this.s0, this.s1, this.s2, this.s3);
  }

  /** The destination identity, 16 bytes, made from the words (a new Buffer: for the control plane). */
  get dst(): Buffer {
    return identityOf(this.d0, this.d1, this.d2, this.d3);
  }

  /** The source identity's text (made from the words: for the control plane). */
  get srcText(): string {
    return formatIpv6(this.src);
  }

  /** The destination identity's text (made from the words: for the control plane). */
  get dstText(): string {
    return formatIpv6(this.dst);
  }

  /** The source identity's key (identityKey): for indexes that keep no text. */
  get srcKey(): number {
    return identityKey(this.s0, this.s1, this.s2, this.s3);
  }

  /** The destination identity's key (identityKey). */
  get dstKey(): number {
    return identityKey(this.d0, this.d1, this.d2, this.d3);
  }

  /** True when the 16 bytes at id[o..o+16) are the source identity. */
  hasSrc(id: Uint8Array, o = 0): boolean {
    return word(id, o + 12) === this.s3 && word(id, o + 8) === this.s2 && word(id, o + 4) === this.s1 && word(id, o) === this.s0;
  }

  /** True when the 16 bytes at id[o..o+16) are the destination identity. */
  hasDst(id: Uint8Array, o = 0): boolean {
    return word(id, o + 12) === this.d3 && word(id, o + 8) === this.d2 && word(id, o + 4) === this.d1 && word(id, o) === this.d0;
  }

  /** True when `o` is a cable of the same pair. */
  samePair(o: Cable): boolean {
    return o.s0 === this.s0 && o.s1 === this.s1 && o.s2 === this.s2 && o.s3 === this.s3 &&
      o.d0 === this.d0 && o.d1 === this.d1 && o.d2 === this.d2 && o.d3 === this.d3;
  }

  get plugged(): boolean {
    return this.marks >>> Mark.DropShift === Drop.None;
  }

  /**
   * Reads a field on each cache line of the cable, for a pass that brings a batch's cables
   * in before they are used, their misses overlapping. V8 lays the fields out 8 bytes apart in
   * the order they are first set (rule, decision, marks, ... d3: 216 bytes with the header),
   * and those read here lie at most 48 bytes apart, so no line of the cable is left out.
   * Returns what it read, folded, for the caller to keep (so that the reads are made).
   */
  touch(): number {
    return this.marks ^ this.plugTick ^ this.s0 ^ this.d0 ^ this.d3 ^ (this.esp === null ? 1 : 0);
  }

  /** True when 16 bytes at s and 16 bytes at d are this cable's pair. */
  matches(buf: Uint8Array, s: number, d: number): boolean {
    // Interface identifiers first: they are what tells most pairs apart.
    return word(buf, d + 12) === this.d3 && word(buf, s + 12) === this.s3 &&
      word(buf, d + 8) === this.d2 && word(buf, s + 8) === this.s2 &&
      word(buf, d + 4) === this.d1 && word(buf, s + 4) === this.s1 &&
      word(buf, d) === this.d0 && word(buf, s) === this.s0;
  }
}

/** Port indexes a cable can keep: 0 .. MAX_PORTS - 1 (PortTable refuses more ports). */
export const MAX_PORTS = 0x7fff;
const PORT_BITS = 15;
const PORT_MASK = 0x7fff;

/** A port index (or -1) as its 15-bit field: index + 1. */
function portField(port: number): number {
  if (!Number.isInteger(port) || port < -1 || port >= MAX_PORTS) throw new RangeError(`a cable's port index is -1 .. ${MAX_PORTS - 1}, not ${port}`);
  return port + 1;
}

/** identityKey (pair-hash.ts) of the 16 bytes at id[o..o+16). */
export function identityKeyOf(id: Uint8Array, o = 0): number {
  return identityKey(word(id, o), word(id, o + 4), word(id, o + 8), word(id, o + 12));
}

function identityOf(w0: number, w1: number, w2: number, w3: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeInt32BE(w0, 0);
  b.writeInt32BE(w1, 4);
  b.writeInt32BE(w2, 8);
  b.writeInt32BE(w3, 12);
  return b;
}

/** The big-endian int32 at buf[o..o+4). */
function word(buf: Uint8Array, o: number): number {
  return (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3];
}

/** An inbound SA of the data path: it carries one ingress cable. */
export type CableSa = InboundSa<Cable>;
