// Spare SAs: keyed between two hosts ahead of any pair of VMs, so that a new pair's first
// packet leaves at once instead of waiting for an INIT and its ANSWER (issue 13, the first
// packet). A spare is negotiated with the usual signed INIT and ANSWER, its INIT naming no
// pair (source and destination ::). The initiator keeps the outbound key in a pool per peer
// host (OutboundSpares); the responder keeps the inbound key on its SPI, bound to no pair yet
// (InboundSpares). On a new pair's miss the initiator makes its own checks (Algorithm 1) and
// sends on a spare; the responder opens the first packet on that SPI, reads the inner pair,
// makes its checks for it (Algorithm 2) and only then binds the SA to the pair
// (spare-binder.ts), or forgets the spare and tells the initiator the SPI is unknown.
// Nothing is skipped: the checks of both ends move, the round trip goes.

import type { OutboundSa } from '../esp/sa.js';
import type { HeldPacket } from '../dataplane/upcall.js';

/** A spare the initiator does not take within this time is discarded (its peer keeps it twice as long). */
export const SPARE_TTL_MS = 5 * 60_000;
/** After a refused or unanswered spare INIT, ask that peer again only after this. */
export const SPARE_BACKOFF_MS = 60_000;
/** Unbound spares a responder keeps from one peer host at most. */
export const MAX_SPARES_FROM_PEER = 16;

interface Pool {
  readonly host: string;
  /** Oldest first. */
  readonly sas: { readonly sa: OutboundSa; readonly at: number }[];
  /** Spare INITs in flight. */
  asking: number;
  /** No spare INIT to this peer before this time (ms). */
  quietUntil: number;
}

/** The initiator's spares: outbound SAs with each peer host, by its address. */
export class OutboundSpares {
  private readonly pools = new Map<number, Pool>();

  constructor(
    /** How many each peer host's pool keeps ready. */
    readonly target: number,
    /** Frees the key of a spare that goes unused. */
    private readonly discard: (sa: OutboundSa) => void,
  ) {}

  /** A spare for `peerHost` at `peer` and when it was made, if one is ready; expired ones go on the way. */
  take(peerHost: string, peer: number, now: number): { readonly sa: OutboundSa; readonly at: number } | undefined {
    const pool = this.pools.get(peer);
    if (!pool || pool.host !== peerHost) return undefined;
    this.expire(pool, now);
    return pool.sas.shift();
  }

  /** A spare for `peerHost` at `peer` is ready (take() would give one). */
  has(peerHost: string, peer: number, now: number): boolean {
    const pool = this.pools.get(peer);
    return pool !== undefined && pool.host === peerHost && pool.sas.some((s) => now - s.at <= SPARE_TTL_MS);
  }

  /**
   * A spare taken and never sent on, back into its pool while in time (the pool may hold up to
   * twice its target so: what its peer keeps unbound either way). False: its key is the caller's to free.
   */
  giveBack(peerHost: string, peer: number, sa: OutboundSa, at: number, now: number): boolean {
    const pool = this.pools.get(peer);
    if (!pool || pool.host !== peerHost || pool.sas.length >= 2 * this.target || now - at > SPARE_TTL_MS) return false;
    pool.sas.push({ sa, at });
    pool.sas.sort((x, y) => x.at - y.at);
    return true;
  }

  /** How many more spare INITs to send to `peer` now (counted as asking). */
  wanted(peerHost: string, peer: number, now: number): number {
    const pool = this.poolOf(peerHost, peer);
    if (now < pool.quietUntil) return 0;
    const n = Math.max(0, this.target - pool.sas.length - pool.asking);
    pool.asking += n;
    return n;
  }

  /** A spare INIT to `peer` was answered: keep its SA (unless the pool went meanwhile). */
  answered(peerHost: string, peer: number, sa: OutboundSa, now: number): void {
    const pool = this.pools.get(peer);
    if (!pool || pool.host !== peerHost) {
      this.discard(sa);
      return;
    }
    pool.asking--;
    pool.sas.push({ sa, at: now });
  }

  /** A spare INIT to `peer` was refused or never answered: leave that peer alone for a while. */
  failed(peerHost: string, peer: number, now: number): void {
    const pool = this.pools.get(peer);
    if (!pool || pool.host !== peerHost) return;
    pool.asking--;
    pool.quietUntil = now + SPARE_BACKOFF_MS;
  }

  /** Spares ready now, in all pools. */
  get ready(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.sas.length;
    return n;
  }

  /** Discard spares past their time (the host's sweep). */
  sweep(now: number): void {
    for (const pool of this.pools.values()) this.expire(pool, now);
  }

  /** Every spare, for the process that takes over (handover); the pools are left empty. */
  takeAll(): { peerHost: string; peer: number; sa: OutboundSa; at: number }[] {
    const out = [];
    for (const [peer, pool] of this.pools) for (const s of pool.sas.splice(0)) out.push({ peerHost: pool.host, peer, sa: s.sa, at: s.at });
    return out;
  }

  /** Spares another process negotiated (handover): into their peers' pools. */
  adopt(peerHost: string, peer: number, sa: OutboundSa, at: number): void {
    this.poolOf(peerHost, peer).sas.push({ sa, at });
  }

  /** Discard the spares with `peer` (its own may be gone); the next new pair asks for more. */
  forget(peer: number): void {
    const pool = this.pools.get(peer);
    if (pool) this.drop(pool);
  }

  /** The pool of `peerHost` at `peer`, new if there is none or the address now names another host (whose spares go). */
  private poolOf(peerHost: string, peer: number): Pool {
    let pool = this.pools.get(peer);
    if (!pool || pool.host !== peerHost) {
      if (pool) this.drop(pool);
      pool = { host: peerHost, sas: [], asking: 0, quietUntil: 0 };
      this.pools.set(peer, pool);
    }
    return pool;
  }

  private expire(pool: Pool, now: number): void {
    while (pool.sas.length > 0 && now - pool.sas[0].at > SPARE_TTL_MS) this.discard(pool.sas.shift()!.sa);
  }

  private drop(pool: Pool): void {
    for (const s of pool.sas.splice(0)) this.discard(s.sa);
  }
}

/** A responder's spare: an inbound key on its SPI, bound to no pair yet. */
export interface InboundSpare {
  readonly spi: number;
  /** Handle of the key in the EspCipher. */
  readonly key: number;
  /** The initiating host, its underlay address (uint32) and name. */
  readonly peer: number;
  readonly peerHost: string;
  /** When it was negotiated (ms). */
  readonly at: number;
  /** Packets that came on it while its pair is being checked (null: no check started). */
  held: HeldPacket[] | null;
}

/** The responder's spares, by SPI. */
export class InboundSpares {
  private readonly bySpi = new Map<number, InboundSpare>();
  private readonly fromPeer = new Map<number, number>();

  constructor(
    /** Frees the key of a spare that goes unbound. */
    private readonly discard: (key: number) => void,
  ) {}

  get size(): number {
    return this.bySpi.size;
  }

  get(spi: number): InboundSpare | undefined {
    return this.bySpi.get(spi);
  }

  has(spi: number): boolean {
    return this.bySpi.has(spi);
  }

  /** Unbound spares from `peer`. */
  countFrom(peer: number): number {
    return this.fromPeer.get(peer) ?? 0;
  }

  add(spare: InboundSpare): void {
    this.bySpi.set(spare.spi, spare);
    this.fromPeer.set(spare.peer, this.countFrom(spare.peer) + 1);
  }

  /** The spare is bound to a pair (its key now belongs to the SA) or forgotten (`discard`: its key goes too). */
  remove(spare: InboundSpare, discard: boolean): void {
    if (this.bySpi.get(spare.spi) !== spare) return;
    this.bySpi.delete(spare.spi);
    const n = this.countFrom(spare.peer) - 1;
    if (n > 0) this.fromPeer.set(spare.peer, n);
    else this.fromPeer.delete(spare.peer);
    if (discard) this.discard(spare.key);
  }

  /** Forget spares unbound past twice the initiator's time (none being checked). Returns how many went. */
  sweep(now: number): number {
    let n = 0;
    for (const s of [...this.bySpi.values()]) {
      if (s.held === null && now - s.at > 2 * SPARE_TTL_MS) {
        this.remove(s, true);
        n++;
      }
    }
    return n;
  }

  /** The unbound spares none is checking, for the process that takes over (handover). */
  all(): InboundSpare[] {
    return [...this.bySpi.values()].filter((s) => s.held === null);
  }

}
