// The SAs of one host as the data path uses them. Inbound: SPI -> SA (esp-decap reads the
// map), one current SA per identity pair, the previous one kept for `grace` after a rekey
// (make-before-break) and then retired with its key. Outbound SAs live in their egress
// cables; here they lose their key when the cable leaves the cache, is replaced, or the
// peer says it no longer knows the SPI (NOTIFY).

import type { Clock } from '../base/clock.js';
import type { Logger } from '../base/log.js';
import { CableDirection, type Cable, type CableSa } from '../dataplane/cable.js';
import type { CableCache } from '../dataplane/cable-cache.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import { InboundSa } from '../esp/sa.js';
import { SpiTable } from '../esp/spi-table.js';
import type { InboundInstaller } from './key-exchange.js';

export class SaTable implements InboundInstaller {
  /** Every inbound SA by SPI, current and in grace. */
  readonly spis = new SpiTable<CableSa>();
  readonly counts = { retiredSas: 0 };
  private readonly current = new Map<string, CableSa>();

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
    const sa = new InboundSa(spi, key, peer, cable, now);
    const pair = pairKey(cable);
    const old = this.current.get(pair);
    if (old) old.retireAt = now + this.graceMs;
    this.current.set(pair, sa);
    this.spis.set(spi, sa);
    this.caches.ingress.insert(cable);
    return sa;
  }

  /** Keys in the cipher, inbound and outbound (a leak shows here). */
  get cipherKeys(): number {
    return this.cipher.keyCount;
  }

  /** Pairs with a current inbound SA. */
  get currentPairs(): number {
    return this.current.size;
  }

  spiInUse(spi: number): boolean {
    return this.spis.has(spi);
  }

  /** The inbound SA that carries `cable`, if any (for `cables`). */
  inboundOf(cable: Cable): CableSa | undefined {
    const sa = this.current.get(pairKey(cable));
    return sa && sa.cable === cable ? sa : undefined;
  }

  /** A peer has no SA for `spi` any more: unplug the cable that uses it, the next packet plugs it again. */
  spiRejected(spi: number, from: number): void {
    for (const c of this.caches.egress.all()) {
      if (c.sa && c.sa.spi === spi && c.peerAddr === from) {
        this.caches.egress.remove(c);
        this.cipher.removeKey(c.sa.key);
        this.log.info('spi-rejected', { spi, peer: c.peerHost, src: c.srcText, dst: c.dstText });
      }
    }
  }

  /** A cable left its cache (it was full, or the cable expired): its SAs go with it. */
  evicted(c: Cable): void {
    if (c.direction === CableDirection.Egress) {
      if (c.sa) this.cipher.removeKey(c.sa.key);
      return;
    }
    const pair = pairKey(c);
    const sa = this.current.get(pair);
    if (sa && sa.cable === c) {
      this.current.delete(pair);
      this.retire(sa);
    }
  }

  /** An ingress cable was replaced because its VM left: its SAs carry the moved-away cable until `retireAt`. */
  movedAway(old: Cable, next: Cable, retireAt: number): void {
    for (const sa of this.spis.values()) {
      if (sa.cable !== old) continue;
      sa.cable = next;
      sa.retireAt = Math.min(sa.retireAt, retireAt);
    }
    const pair = pairKey(old);
    if (this.current.get(pair)?.cable === next) this.current.delete(pair);
  }

  /** A cable was replaced by a newer decision for the same pair. */
  replaced(old: Cable, next: Cable): void {
    if (old.direction === CableDirection.Egress) {
      if (old.sa && old.sa !== next.sa) this.cipher.removeKey(old.sa.key);
      return;
    }
    for (const sa of this.spis.values()) if (sa.cable === old) sa.cable = next;
  }

  /** Retire every inbound SA now (after a flush of the cables). */
  retireAll(): void {
    for (const sa of this.spis.values()) this.retire(sa);
    this.current.clear();
  }

  /** Retire inbound SAs whose grace time is over. Call about once a second. */
  sweep(): void {
    const now = this.clock.now();
    for (const sa of this.spis.values()) if (now >= sa.retireAt) this.retire(sa);
  }

  private retire(sa: CableSa): void {
    this.spis.delete(sa.spi);
    sa.window.release();
    this.cipher.removeKey(sa.key);
    this.counts.retiredSas++;
  }
}

function pairKey(c: Cable): string {
  return `${c.srcText} ${c.dstText}`;
}
