// The SAs of one host as the data path uses them. Inbound: SPI -> SA (esp-decap reads the
// table), one current SA per identity pair, the previous ones kept for `grace` after a rekey
// (make-before-break) and then retired with their key. Each ingress cable lists the SAs that
// carry it, newest first (Cable.inbound, then InboundSa.older): the first is the pair's
// current SA while it is marked current. So a cable that is replaced (a refresh, a policy
// change, a move) hands its SAs to the next one without a walk over every SA, and no key
// per pair is kept besides the cable cache's. Outbound SAs live in their egress cables; here
// they lose their key when the cable leaves the cache, is replaced, or the peer says it no
// longer knows the SPI (NOTIFY). For the NOTIFY, egress cables are indexed by (peer, SPI) as
// the egress cache takes them, so that a peer's word costs a lookup, not a walk over every
// cable (after a peer restarts, it may send one for each of its SAs).

import type { Clock } from '../base/clock.js';
import type { Logger } from '../base/log.js';
import { reached, tickOf } from '../base/ticks.js';
import { CableDirection, type Cable, type CableSa } from '../dataplane/cable.js';
import type { CableCache } from '../dataplane/cable-cache.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import { InboundSa, type OutboundSa } from '../esp/sa.js';
import { ReplayWindow } from '../esp/replay-window.js';
import { SpiTable } from '../esp/spi-table.js';
import type { InboundInstaller } from './key-exchange.js';

/** Replay-window chunks (4096 windows, 1 MB) one sweep may give back at most: 1 MB copied at most. */
const COMPACT_CHUNKS = 1;
/** Replay windows with blocks a sweep asks to give them back (each reads its 256 bytes): a million in about 4 minutes. */
export const SHRINK_WINDOWS = 1024;
/** Sweeps (250 ms each) a key may go unused before its cipher contexts go: 60 s. */
export const CONTEXT_IDLE_SWEEPS = 240;
/**
 * Keys a sweep looks at for idle contexts (a 64-byte entry each): a million in about a
 * minute. Freeing 4096 contexts and giving the memory back took 1.1 ms (3.1 at most).
 */
export const TRIM_KEYS = 4096;

export class SaTable implements InboundInstaller {
  /** Every inbound SA by SPI, current and in grace. */
  readonly spis = new SpiTable<CableSa>();
  readonly counts = { retiredSas: 0 };
  /** SAs whose grace time is over, gathered by sweep() before they are retired; where the next sweep goes on. */
  private readonly due: CableSa[] = [];
  private sweepAt = 0;
  /** Inbound SAs with no end of life set (current): one per pair with a current SA. */
  private current = 0;
  /** Egress cables with an SA, by the peer's address and the SPI it chose. */
  private readonly outbound = new Map<number, SpiTable<Cable>>();
  /** Takes back an outbound SA that goes unused (a spare never sent on: key-exchange.ts); true: its key stays. */
  reclaim: ((sa: OutboundSa) => boolean) | null = null;

  constructor(
    private readonly caches: { readonly egress: CableCache; readonly ingress: CableCache },
    private readonly cipher: EspCipher,
    private readonly clock: Clock,
    /** ms an SA replaced by a rekey still accepts packets in flight. */
    private readonly graceMs: number,
    private readonly log: Logger,
  ) {}

  /** An accepted key exchange: the new SA becomes the pair's current one, its ingress cable goes into the cache. */
  installInbound(cable: Cable, spi: number, key: number, peer: number): CableSa {
    const now = this.clock.now();
    const replaced = this.caches.ingress.insert(cable);
    // The pair's current SA so far (on the cable this one replaced, or on this very cable) goes into its grace time.
    for (const c of [replaced, cable]) {
      const old = c === undefined ? undefined : currentOf(c);
      if (old) this.retireBy(old, now + this.graceMs);
    }
    const sa = new InboundSa(spi, key, peer, cable);
    this.current++;
    sa.older = cable.inbound;
    cable.inbound = sa;
    this.spis.set(spi, sa);
    return sa;
  }

  /** Keys in the cipher, inbound and outbound (a leak shows here). */
  get cipherKeys(): number {
    return this.cipher.keyCount;
  }

  /** The cipher's per-key contexts alive (keys used in the last minute or so). */
  get cipherContexts(): number {
    return this.cipher.contexts;
  }

  /** Pairs with a current inbound SA. */
  get currentPairs(): number {
    return this.current;
  }

  spiInUse(spi: number): boolean {
    return this.spis.has(spi);
  }

  /** The inbound SA that carries `cable` as its pair's current one, if any (for `cables`). */
  inboundOf(cable: Cable): CableSa | undefined {
    return currentOf(cable);
  }

  /** The egress cable that sends on SA `spi` to `from` now, if any. */
  private sendingOn(spi: number, from: number): Cable | undefined {
    const indexed = this.outbound.get(from)?.get(spi);
    const c = indexed && this.caches.egress.findCable(indexed); // the pair's cable now
    return c && c.sa !== null && c.sa.spi === spi && c.peerAddr === from ? c : undefined;
  }

  sendsOn(spi: number, from: number): boolean {
    return this.sendingOn(spi, from) !== undefined;
  }

  /** A peer has no SA for `spi` any more: unplug the cable that uses it, the next packet plugs it again. */
  spiRejected(spi: number, from: number): void {
    const c = this.sendingOn(spi, from);
    if (!c || !c.sa) return;
    this.caches.egress.remove(c);
    this.dropOutbound(c, c.sa);
    this.log.info('spi-rejected', { spi, peer: c.peerHost, src: c.srcText, dst: c.dstText });
  }

  /** The egress cache took `c` (its cache's insert hook): its SA, if any, is found by (peer, SPI) from now on. */
  indexOutbound(c: Cable): void {
    if (c.direction !== CableDirection.Egress || c.sa === null) return;
    let t = this.outbound.get(c.peerAddr);
    if (!t) this.outbound.set(c.peerAddr, (t = new SpiTable<Cable>()));
    t.set(c.sa.spi, c);
  }

  /** Egress SAs in the (peer, SPI) index (a leak shows here). */
  get outboundIndexed(): number {
    let n = 0;
    for (const t of this.outbound.values()) n += t.size;
    return n;
  }

  /** A rekey gave egress cable `c` a new SA instead of `old`: the old key goes. */
  rekeyed(c: Cable, old: OutboundSa): void {
    this.indexOutbound(c);
    this.dropOutbound(c, old);
  }

  /** A cable left its cache (it was full, or the cable expired): its SAs go with it (those in grace at their time). */
  evicted(c: Cable): void {
    if (c.direction === CableDirection.Egress) {
      if (c.sa) this.dropOutbound(c, c.sa);
      return;
    }
    const sa = currentOf(c);
    if (sa) this.retire(sa);
  }

  /**
   * The upcall made egress cable `c` and did not install it (asked again instead): its SA's key
   * goes, unless `kept`, the cable left in its place, sends on the same SA. (Ingress cables
   * the upcall makes carry no SA: the responder installs its own.)
   */
  unused(c: Cable, kept: Cable | undefined): void {
    if (c.direction === CableDirection.Egress && c.sa !== null && c.sa !== kept?.sa) this.dropOutbound(c, c.sa);
  }

  /** An ingress cable was replaced because its VM left: its SAs carry the moved-away cable until `retireAt`. */
  movedAway(old: Cable, next: Cable, retireAt: number): void {
    for (let sa = old.inbound; sa !== null; sa = sa.older) this.retireBy(sa, retireAt);
    this.handOver(old, next);
  }

  /** A cable was replaced by a newer decision for the same pair. */
  replaced(old: Cable, next: Cable): void {
    if (old.direction === CableDirection.Egress) {
      if (old.sa && old.sa !== next.sa) this.dropOutbound(old, old.sa);
      return;
    }
    this.handOver(old, next);
  }

  /** Retire every inbound SA now (after a flush of the cables). */
  retireAll(): void {
    for (const sa of this.spis.values()) this.retire(sa);
  }

  /**
   * Retire inbound SAs whose grace time is over, looking at most at `maxSlots` slots of the SPI
   * table from where the last sweep stopped (Host.sweep calls it every 250 ms). (esp-decap refuses an SA
   * past its retireTick itself: the sweep frees it and its key.) Then up to SHRINK_WINDOWS
   * replay windows with blocks give them back if their holes are few again, and the windows'
   * memory left over from a peak goes back, COMPACT_CHUNKS chunk at most. Last, the cipher
   * gives back the contexts of keys idle for CONTEXT_IDLE_SWEEPS sweeps, TRIM_KEYS keys looked at.
   */
  sweep(maxSlots = Infinity): void {
    const now = tickOf(this.clock.now());
    const due = this.due;
    this.sweepAt = this.spis.scan(this.sweepAt, maxSlots, (sa) => {
      if (!sa.current && reached(now, sa.retireTick)) due.push(sa);
    });
    for (const sa of due) this.retire(sa);
    due.length = 0;
    ReplayWindow.shrink(SHRINK_WINDOWS);
    ReplayWindow.compact(COMPACT_CHUNKS);
    this.cipher.trim(CONTEXT_IDLE_SWEEPS, TRIM_KEYS);
  }

  /** The SAs that carry `old` carry `next` from now on, after any of its own. */
  private handOver(old: Cable, next: Cable): void {
    if (old.inbound === null || old === next) return;
    for (let sa: CableSa | null = old.inbound; sa !== null; sa = sa.older) sa.cable = next;
    if (next.inbound === null) next.inbound = old.inbound;
    else {
      let last = next.inbound;
      while (last.older !== null) last = last.older;
      last.older = old.inbound;
    }
    old.inbound = null;
  }

  /** `sa`, carried by egress cable `c` (or one of its pair before it) to c's peer, is done: its key and its index entry go. */
  private dropOutbound(c: Cable, sa: OutboundSa): void {
    if (this.reclaim?.(sa) !== true) this.cipher.removeKey(sa.key);
    const t = this.outbound.get(c.peerAddr);
    const indexed = t?.get(sa.spi);
    // Only this SA's entry goes: one of this pair whose cable carries this SA, or by now another
    // SPI (a rekey in place). Not one that another SA with the same SPI took over since.
    if (!indexed || !indexed.samePair(c) || (indexed.sa !== sa && indexed.sa?.spi === sa.spi)) return;
    t!.delete(sa.spi);
    if (t!.size === 0) this.outbound.delete(c.peerAddr);
  }

  /** `sa` accepts packets until `at` (ms since 1970, at most an hour or so ahead; Infinity: no end) at the latest. */
  retireBy(sa: CableSa, at: number): void {
    if (at === Infinity) return;
    if (sa.current) this.current--;
    sa.retireBy(tickOf(at));
  }

  private retire(sa: CableSa): void {
    if (sa.current) this.current--;
    this.spis.delete(sa.spi);
    // Out of its cable's list.
    const c = sa.cable;
    if (c.inbound === sa) c.inbound = sa.older;
    else for (let p = c.inbound; p !== null; p = p.older) if (p.older === sa) p.older = sa.older;
    sa.older = null;
    sa.release(); // its replay window's blocks go back
    this.cipher.removeKey(sa.key);
    this.counts.retiredSas++;
  }
}

/** The pair's current SA on `c`: the newest that carries it, unless that one is in its grace time. */
function currentOf(c: Cable): CableSa | undefined {
  const sa = c.inbound;
  return sa !== null && sa.current ? sa : undefined;
}
