// The key-exchange engine of one host (protocol: src/esp/handshake.ts).
//
// Initiator (establish): send INIT to the peer host, resend with exponential backoff until
// a valid ANSWER arrives or the tries run out; an ANSWER counts only if it is signed by
// the host the destination's binding names, at the address it names. Answers that fail
// are ignored (an attacker cannot make us give up by sending garbage), so only silence or
// a signed refusal ends a handshake unsuccessfully.
// Responder (on INIT): rate-limit per source address; answer a retransmitted INIT with the
// same ANSWER (no second SA); check the INIT's age and signature; run SDN Algorithm 2
// (Receiver.accept) before installing anything; then choose the SPI, derive the key,
// install the inbound SA, answer.
// Spares (spares.ts): with `spares` set, the initiator keeps that many SAs ready with each
// peer host it has asked for one, negotiated by INITs that name no pair (src = dst = ::); a
// new pair's request (SaRequest.spare) takes one at once. The responder answers such an INIT
// after the same checks but Algorithm 2, which runs when the first packet shows the pair.

import type { KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Cable } from '../dataplane/cable.js';
import { Drop, DROP_COUNT, dropName, isDrop } from '../base/drops.js';
import { formatIpv4 } from '../base/address.js';
import { formatIpv6, parseIpv6Address } from '../base/address.js';
import type { VmPort } from '../dataplane/vm-port.js';
import type { EspAlgorithm, EspCipher } from '../esp/esp-cipher.js';
import {
  answerRequestId, decodeAnswer, decodeInit, decodeNotify, encodeAnswer, encodeInit, encodeNotify, espKeyOf, x25519Shared,
  KX_ANSWER, KX_INIT, KX_NOTIFY, NotifyReason, verifySignature, type Init, type Notify,
} from '../esp/handshake.js';
import { EphemeralPool } from '../esp/ephemeral-pool.js';
import { OutboundSa, type SaLimits } from '../esp/sa.js';
import type { Trace } from '../base/trace.js';
import type { Clock, Random } from '../base/clock.js';
import { TokenBucket } from '../base/token-bucket.js';
import { spiForShard, type Shard } from './workers/shard.js';
import { OutboundSpares } from './spares.js';
import type { AcceptRequest, AcceptResult } from './receiver.js';

export interface SaRequest {
  readonly srcPort: VmPort;
  readonly dst: string;
  readonly peerHost: string;
  readonly peerAddress: number;
  /** A new pair's first packets wait for it: a spare SA may serve (not a rekey's). */
  readonly spare?: boolean;
}

export type SaResult =
  | { readonly ok: true; readonly sa: OutboundSa }
  | { readonly ok: false; readonly drop: Drop; readonly detail: string };

export interface KeyExchange {
  establish(req: SaRequest, trace?: Trace): Promise<SaResult>;
  /** An SA establish() gave that no cable will send on: its key goes. */
  discard(sa: OutboundSa): void;
  /** A new pair's request to `peerHost` at `peer` would take a spare now (no round trip to overlap). */
  hasSpare(peerHost: string, peer: number): boolean;
  /** A spare SA for the new pair `req`, taken now; undefined when none is ready (establish() then asks by INIT). */
  takeSpare(req: SaRequest, trace?: Trace): OutboundSa | undefined;
}

/** How handshake messages travel: UDP between hosts, or memory in an offline replay. */
export interface KxTransport {
  /** Sends `msg`; the peer's handler runs later, never inside send() (the responder installs its SA right after its ANSWER). */
  send(msg: Buffer, to: number): void;
  onMessage(handler: (msg: Buffer, from: number) => void): void;
  close(): void;
}

/** Verifies a host's certificate (chain, name, address) and gives its signing key. */
export interface HostAuthority {
  hostKey(host: string, address: string, trace?: Trace): Promise<{ readonly drop: Drop; readonly key?: KeyObject }>;
}

/** What the host does with an accepted cable: install the inbound SA and the ingress cable. */
export interface InboundInstaller {
  installInbound(cable: Cable, spi: number, key: number, peer: number): void;
  /** The ANSWER for `cable`'s SA has left: work that may follow it, off the initiator's wait. */
  answered?(cable: Cable): void;
  spiInUse(spi: number): boolean;
  /** This host sends on SA `spi` to `from` (a NOTIFY about it would unplug a cable). */
  sendsOn(spi: number, from: number): boolean;
  /** The initiator was told this SPI is unknown at `from`: plug that cable again. */
  spiRejected(spi: number, from: number): void;
  /** Why this host keeps no more spares from `from` (undefined: it takes one). */
  spareRefusal?(from: number): string | undefined;
  /** A spare accepted as responder: its key on its SPI, bound to no pair yet. */
  installSpare?(spi: number, key: number, peer: number, peerHost: string): void;
}

/** An SA's keys, for the debug export in Wireshark's ESP SA format (never on by default). */
export interface EspKeyExport {
  readonly spi: number;
  /** Underlay addresses the SA's packets go from and to (uint32). */
  readonly from: number;
  readonly to: number;
  readonly alg: EspAlgorithm;
  readonly key: Buffer;
  readonly salt: Buffer;
}

export interface KxSettings {
  readonly alg: EspAlgorithm;
  readonly limits: SaLimits;
  /** First resend after this many ms, doubling, `tries` sends in all. */
  readonly retryMs: number;
  readonly tries: number;
  /** INITs older or newer than this (ms) are refused as stale. */
  readonly maxSkewMs: number;
  /** INITs per second per source address, and the burst allowed. */
  readonly initsPerSecond: number;
  readonly initBurst: number;
  /** Debug only: receives the keys of every SA this host accepts as responder. */
  readonly exportKeys?: (k: EspKeyExport) => void;
  /** One of several data-path threads (workers/shard.ts): its SPIs and request ids name it. */
  readonly shard?: Shard;
  /** Spare SAs kept ready with each peer host a new pair asked for (0 or absent: none). */
  readonly spares?: number;
}

/** The key exchange's timing and limits (all of KxSettings but the cipher, SA limits and shard). */
export type KxTiming = Omit<KxSettings, 'alg' | 'limits' | 'exportKeys' | 'shard' | 'spares'>;

export const DEFAULT_KX: KxTiming = {
  retryMs: 250,
  tries: 5,
  maxSkewMs: 60_000,
  initsPerSecond: 200,
  initBurst: 400,
};

/** Where an INIT went: the peer host's name and underlay address. */
interface Peer {
  readonly host: string;
  readonly address: number;
}

/** The identities a spare's INIT names: none (::). */
const NO_PAIR = Buffer.alloc(16);
/** A pair whose spare SA the peer refused asks by INIT, for its refusal's reason, for this long (ms). */
const NO_SPARE_MS = 10_000;

interface Pending {
  readonly to: Peer;
  readonly init: Buffer;
  readonly fields: { src: Buffer; dst: Buffer };
  readonly ephemeral: KeyObject;
  readonly trace: Trace | undefined;
  readonly resolve: (r: SaResult) => void;
  timer: NodeJS.Timeout | undefined;
  sent: number;
  verifying: boolean;
}

export class KxCounters {
  initsSent = 0;
  resends = 0;
  answersAccepted = 0;
  answersRefused = 0;
  /** Answers ignored: unknown request, bad signature, wrong host. */
  answersIgnored = 0;
  timeouts = 0;
  initsReceived = 0;
  initsRateLimited = 0;
  initsMalformed = 0;
  initsStale = 0;
  initsRetransmitted = 0;
  accepted = 0;
  notifiesSent = 0;
  notifiesReceived = 0;
  /** NOTIFYs that said the VM moved away (a subset of notifiesReceived). */
  movedNotices = 0;
  /** NOTIFYs refused: malformed, stale, or not signed by the certified key of the host they name. */
  notifiesRefused = 0;
  /** NOTIFYs about an SPI this host does not send on to their sender: nothing to do, so not verified. */
  notifiesUnmatched = 0;
  /** Signed INITs and ANSWERs whose ephemeral key gives no shared secret (a low-order X25519 point): refused. */
  badKeys = 0;
  /** Refusals this host made as responder, by Drop reason. */
  readonly refusals = new Float64Array(DROP_COUNT);
  /** Spare INITs sent; spares a new pair took; of those, SPIs the peer then said it did not know (it refused the pair, or restarted). */
  sparesAsked = 0;
  sparesUsed = 0;
  sparesRejected = 0;
  /** Spare INITs refused or unanswered (the peer is left alone for a minute); spare INITs this host answered. */
  sparesFailed = 0;
  sparesGiven = 0;
}

export class KeyExchangeEngine implements KeyExchange {
  readonly counters = new KxCounters();
  private readonly pending = new Map<string, Pending>();
  private readonly answered: LRUCache<string, Buffer>;
  /** Ephemeral keys made ahead, off the first packet's path. */
  private readonly ephemerals = new EphemeralPool();
  private readonly buckets: LRUCache<number, TokenBucket>;
  private readonly notified: LRUCache<string, number>;
  /** The initiator's spares (none when settings.spares is 0). */
  readonly spares: OutboundSpares;
  /**
   * Spares new pairs took in the last minute, by SPI: the SA, its pair, its peer and when it was
   * made, for a NOTIFY that says the peer refused it and to take back one never sent on. Bounded:
   * nothing of it stays with a pair's SA for the SA's life.
   */
  private readonly sparesTaken: LRUCache<number, { readonly sa: OutboundSa; readonly pair: string; readonly to: Peer; readonly at: number }>;
  /** Pairs whose spare the peer refused: they ask by INIT for a while. */
  private readonly noSpare: LRUCache<string, number>;
  private closed = false;
  /** INITs being answered (the responder awaits verification and Algorithm 2). */
  private responding = 0;

  constructor(
    private readonly host: { readonly name: string; readonly address: number },
    private readonly hostKey: KeyObject,
    private readonly transport: KxTransport,
    private readonly authority: HostAuthority,
    private readonly responder: { accept(req: AcceptRequest, trace?: Trace): Promise<AcceptResult> },
    private readonly installer: InboundInstaller,
    private readonly cipher: EspCipher,
    private readonly settings: KxSettings,
    private readonly clock: Clock,
    private readonly random: Random,
  ) {
    this.answered = new LRUCache({ max: 16_384, ttl: 2 * settings.maxSkewMs, ttlAutopurge: true, perf: clock });
    this.buckets = new LRUCache({ max: 65_536 });
    this.notified = new LRUCache({ max: 16_384, ttl: 1000, ttlAutopurge: true, perf: clock });
    this.spares = new OutboundSpares(settings.spares ?? 0, (sa) => this.discard(sa));
    this.sparesTaken = new LRUCache({ max: 16_384, ttl: 60_000, perf: clock });
    this.noSpare = new LRUCache({ max: 16_384, ttl: NO_SPARE_MS, perf: clock });
    transport.onMessage((msg, from) => this.receive(msg, from));
  }

  establish(req: SaRequest, trace?: Trace): Promise<SaResult> {
    if (this.closed) return Promise.resolve({ ok: false, drop: Drop.SaNegotiationFailed, detail: 'key exchange closed' });
    const sa = this.takeSpare(req, trace);
    if (sa) return Promise.resolve({ ok: true, sa });
    return this.start({ host: req.peerHost, address: req.peerAddress }, { src: req.srcPort.identity, dst: parseIpv6Address(req.dst) }, trace);
  }

  takeSpare(req: SaRequest, trace?: Trace): OutboundSa | undefined {
    if (this.closed || !req.spare || this.spares.target === 0) return undefined;
    const to = { host: req.peerHost, address: req.peerAddress };
    const pair = `${req.srcPort.identityText} ${req.dst}`;
    const spare = this.noSpare.has(pair) ? undefined : this.spares.take(to.host, to.address, this.clock.now());
    setImmediate(() => this.keepSpares(to)); // after this pair's packet (or INIT) has left: signing an INIT takes ~0.1 ms
    if (!spare) return undefined;
    const { sa, at } = spare;
    this.counters.sparesUsed++;
    this.sparesTaken.set(sa.spi, { sa, pair, to, at });
    trace?.step('sa', `spare SA 0x${sa.spi.toString(16)} with ${to.host}, keyed ahead: ${to.host} checks the pair on its first packet`, 'ok');
    return sa;
  }

  hasSpare(peerHost: string, peer: number): boolean {
    return this.spares.has(peerHost, peer, this.clock.now());
  }

  /** Ask `to` for spares until its pool holds settings.spares (or is asked for that many). */
  private keepSpares(to: Peer): void {
    if (this.closed) return;
    for (let n = this.spares.wanted(to.host, to.address, this.clock.now()); n > 0; n--) {
      this.counters.sparesAsked++;
      void this.start(to, { src: NO_PAIR, dst: NO_PAIR }).then((r) => {
        if (r.ok) this.spares.answered(to.host, to.address, r.sa, this.clock.now());
        else {
          this.counters.sparesFailed++;
          this.spares.failed(to.host, to.address, this.clock.now());
        }
      });
    }
  }

  /** Send an INIT for the pair `fields` (NO_PAIR: a spare) to `to`; resolves with its SA or why not. */
  private start(to: Peer, fields: { src: Buffer; dst: Buffer }, trace?: Trace): Promise<SaResult> {
    return new Promise((resolve) => {
      const eph = this.ephemerals.take();
      const requestId = this.random.bytes(8);
      if (this.settings.shard) requestId[0] = this.settings.shard.index; // its ANSWER comes back to this worker
      const init = encodeInit(
        { alg: this.settings.alg, requestId, timeMs: this.clock.now(), src: fields.src, dst: fields.dst, ephemeral: eph.publicRaw, host: this.host.name },
        this.hostKey,
      );
      const p: Pending = { to, init, fields, ephemeral: eph.privateKey, trace, resolve, timer: undefined, sent: 0, verifying: false };
      this.pending.set(requestId.toString('hex'), p);
      trace?.step('sa', `INIT ${requestId.toString('hex')} to ${to.host} (${formatIpv4(to.address)}): X25519, ${this.settings.alg}`);
      this.sendInit(requestId.toString('hex'), p);
    });
  }

  discard(sa: OutboundSa): void {
    if (!this.reclaim(sa)) this.cipher.removeKey(sa.key);
  }

  /**
   * A spare a pair took goes back to its pool if nothing was sent on it, not even a probe (its
   * cable went first: flushed, evicted, refused here after all): the peer never bound it. True: taken back.
   */
  reclaim(sa: OutboundSa): boolean {
    const taken = this.sparesTaken.get(sa.spi);
    if (taken === undefined || taken.sa !== sa || sa.seqLo !== 0 || sa.seqHi !== 0) return false;
    this.sparesTaken.delete(sa.spi);
    return this.spares.giveBack(taken.to.host, taken.to.address, sa, taken.at, this.clock.now());
  }

  /**
   * Tell `to` to stop using `spi` (unknown here, or its VM moved away): a signed NOTIFY, at
   * most once a second per SPI and peer, so that it looks the destination up again at once.
   */
  notifySpi(spi: number, to: number, moved: boolean): void {
    const key = `${to}:${spi}`;
    if (this.notified.has(key)) return;
    this.notified.set(key, 1);
    this.counters.notifiesSent++;
    const reason = moved ? NotifyReason.Moved : NotifyReason.UnknownSpi;
    this.transport.send(encodeNotify({ reason, spi, timeMs: this.clock.now(), host: this.host.name }, this.hostKey), to);
  }

  /** True while a handshake is in progress in either role. */
  get busy(): boolean {
    return this.pending.size > 0 || this.responding > 0;
  }

  close(): void {
    this.closed = true;
    this.ephemerals.close(); // the spares stay, for the process that takes over (handover-state.ts)
    for (const [id, p] of this.pending) this.finish(id, p, { ok: false, drop: Drop.SaNegotiationFailed, detail: 'key exchange closed' });
    this.transport.close();
  }

  private sendInit(id: string, p: Pending): void {
    if (p.sent > 0) this.counters.resends++;
    else this.counters.initsSent++;
    p.sent++;
    this.transport.send(p.init, p.to.address);
    const wait = this.settings.retryMs * 2 ** (p.sent - 1);
    p.timer = setTimeout(() => {
      if (p.verifying) return;
      if (p.sent >= this.settings.tries) {
        this.counters.timeouts++;
        this.finish(id, p, { ok: false, drop: Drop.SaNegotiationFailed, detail: `${p.to.host} did not answer ${p.sent} INITs` });
      } else {
        this.sendInit(id, p);
      }
    }, wait);
    p.timer.unref?.();
  }

  private finish(id: string, p: Pending, r: SaResult): void {
    if (p.timer) clearTimeout(p.timer);
    this.pending.delete(id);
    if (!r.ok) p.trace?.step('sa', r.detail, 'fail');
    p.resolve(r);
  }

  private receive(msg: Buffer, from: number): void {
    if (this.closed || msg.length < 2) return;
    if (msg[0] === KX_INIT) {
      this.responding++;
      void this.respond(msg, from).finally(() => this.responding--);
    }
    else if (msg[0] === KX_ANSWER) void this.complete(msg, from);
    else if (msg[0] === KX_NOTIFY) void this.onNotify(msg, from);
  }

  // ---- Responder ----------------------------------------------------------------------

  private async respond(msg: Buffer, from: number): Promise<void> {
    this.counters.initsReceived++;
    if (!this.admit(from)) {
      this.counters.initsRateLimited++;
      return;
    }
    let init: Init;
    try {
      init = decodeInit(msg);
    } catch {
      this.counters.initsMalformed++;
      return;
    }
    const id = init.requestId.toString('hex');
    const again = this.answered.get(`${from}:${id}`);
    if (again) {
      this.counters.initsRetransmitted++;
      this.transport.send(again, from);
      return;
    }
    const now = this.clock.now();
    if (Math.abs(now - init.timeMs) > this.settings.maxSkewMs) {
      this.counters.initsStale++;
      return;
    }
    const auth = await this.authority.hostKey(init.host, formatIpv4(from));
    if (auth.drop !== Drop.None || !auth.key || !verifySignature(init.signed, init.signature, auth.key)) {
      this.counters.initsMalformed++; // not worth an answer: we cannot tell it from noise
      return;
    }
    if (init.alg !== this.settings.alg) {
      this.refuse(init, from, id, Drop.SaNegotiationFailed);
      return;
    }
    if (init.src.equals(NO_PAIR) && init.dst.equals(NO_PAIR)) {
      this.answerSpare(init, from, id);
      return;
    }
    const result = await this.responder.accept({
      initiatorHost: init.host,
      initiatorAddress: from,
      src: formatIpv6(init.src),
      dst: formatIpv6(init.dst),
    });
    if (!result.ok) {
      this.refuse(init, from, id, result.drop);
      return;
    }
    const sa = this.accepting(init, from, id);
    if (!sa) return;
    this.installer.installInbound(result.cable, sa.spi, sa.key, from);
    this.counters.accepted++;
    this.installer.answered?.(result.cable);
  }

  /**
   * A spare: the INIT's signature and age were checked as for any; Algorithm 2 waits for the
   * first packet (spare-binder.ts). Refused where the host keeps no spares, or no more from `from`.
   */
  private answerSpare(init: Init, from: number, id: string): void {
    const refusal = this.installer.installSpare === undefined ? 'this host keeps no spare SAs' : this.installer.spareRefusal?.(from);
    if (refusal !== undefined) {
      this.refuse(init, from, id, Drop.SaNegotiationFailed);
      return;
    }
    const sa = this.accepting(init, from, id);
    if (!sa) return;
    this.installer.installSpare!(sa.spi, sa.key, from, init.host);
    this.counters.sparesGiven++;
  }

  /**
   * An INIT accepted: choose the SPI, send the ANSWER, then derive the key (the initiator works
   * on the ANSWER meanwhile). Returns the SPI and the key's handle for the caller to install in
   * this same turn, before this thread reads any packet, so none on the SA comes first; or
   * undefined when the INIT's key gives no shared secret (refused).
   */
  private accepting(init: Init, from: number, id: string): { spi: number; key: number } | undefined {
    const eph = this.ephemerals.take();
    const spi = this.newSpi();
    const shared = sharedOrNot(eph.privateKey, init.ephemeral);
    if (!shared) {
      this.counters.badKeys++;
      this.refuse(init, from, id, Drop.SaNegotiationFailed);
      return undefined;
    }
    const answer = encodeAnswer({ status: 0, requestId: init.requestId, spi, ephemeral: eph.publicRaw, host: this.host.name }, init.raw, this.hostKey);
    this.answered.set(`${from}:${id}`, answer);
    this.transport.send(answer, from);
    const { key, salt } = espKeyOf(init.alg, shared, init.raw, spi, init.src, init.dst);
    const handle = this.cipher.addKey(init.alg, key, salt);
    this.settings.exportKeys?.({ spi, from, to: this.host.address, alg: init.alg, key: Buffer.from(key), salt: Buffer.from(salt) });
    key.fill(0);
    return { spi, key: handle };
  }

  private refuse(init: Init, from: number, id: string, drop: Drop): void {
    this.counters.refusals[drop]++;
    const answer = encodeAnswer({ status: drop, requestId: init.requestId, spi: 0, ephemeral: Buffer.alloc(32), host: this.host.name }, init.raw, this.hostKey);
    this.answered.set(`${from}:${id}`, answer);
    this.transport.send(answer, from);
  }

  /** A token bucket per source address. */
  private admit(from: number): boolean {
    const now = this.clock.now();
    let b = this.buckets.get(from);
    if (!b) {
      b = new TokenBucket(this.settings.initsPerSecond, this.settings.initBurst, now);
      this.buckets.set(from, b);
    }
    return b.take(now);
  }

  /**
   * A fresh SPI: random in [256, 2^30). 1-255 are reserved (RFC 4303 2.1); staying below
   * 2^30 keeps every SPI a small integer in V8, so the per-packet SPI lookup never boxes one.
   * A worker's SPIs are those the kernel steers to it (SPI mod count = its index).
   */
  private newSpi(): number {
    const shard = this.settings.shard;
    for (;;) {
      const random = this.random.bytes(4).readUInt32BE(0) >>> 2;
      const spi = shard ? spiForShard(random, shard) : random;
      if (spi >= 256 && !this.installer.spiInUse(spi)) return spi;
    }
  }

  // ---- Initiator ----------------------------------------------------------------------

  private async complete(msg: Buffer, from: number): Promise<void> {
    const id = answerRequestId(msg);
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || from !== p.to.address || p.verifying) {
      this.counters.answersIgnored++;
      return;
    }
    let answer;
    try {
      answer = decodeAnswer(msg, p.init);
    } catch {
      this.counters.answersIgnored++;
      return;
    }
    if (answer.host !== p.to.host) {
      this.counters.answersIgnored++;
      p.trace?.step('sa', `answer signed as ${answer.host}, expected ${p.to.host}: ignored`, 'fail');
      return;
    }
    p.verifying = true;
    const auth = await this.authority.hostKey(answer.host, formatIpv4(from), p.trace);
    p.verifying = false;
    if (!this.pending.has(id!)) return;
    if (auth.drop !== Drop.None || !auth.key || !verifySignature(answer.signed, answer.signature, auth.key)) {
      this.counters.answersIgnored++;
      p.trace?.step('sa', `answer from ${answer.host} not signed by its certified key: ignored`, 'fail');
      return;
    }
    if (answer.status !== 0) {
      this.counters.answersRefused++;
      const reason = isDrop(answer.status) ? dropName(answer.status) : `code ${answer.status}`;
      this.finish(id!, p, { ok: false, drop: Drop.SaNegotiationFailed, detail: `${answer.host} refused: ${reason}` });
      return;
    }
    const shared = sharedOrNot(p.ephemeral, answer.ephemeral);
    if (!shared) {
      this.counters.badKeys++;
      this.finish(id!, p, { ok: false, drop: Drop.SaNegotiationFailed, detail: `${answer.host} answered with an X25519 key that gives no shared secret` });
      return;
    }
    const { key, salt } = espKeyOf(this.settings.alg, shared, p.init, answer.spi, p.fields.src, p.fields.dst);
    const handle = this.cipher.addKey(this.settings.alg, key, salt);
    key.fill(0);
    this.counters.answersAccepted++;
    this.finish(id!, p, { ok: true, sa: new OutboundSa(answer.spi, handle, this.clock.now(), this.settings.limits) });
  }

  private async onNotify(msg: Buffer, from: number): Promise<void> {
    let n: Notify;
    try {
      n = decodeNotify(msg);
    } catch {
      this.counters.notifiesRefused++;
      return;
    }
    if (Math.abs(this.clock.now() - n.timeMs) > this.settings.maxSkewMs) {
      this.counters.notifiesRefused++;
      return;
    }
    // A lookup first: a signature check (~0.1 ms) only for a NOTIFY that would unplug something.
    if (!this.installer.sendsOn(n.spi, from)) {
      this.counters.notifiesUnmatched++;
      return;
    }
    const auth = await this.authority.hostKey(n.host, formatIpv4(from));
    if (auth.drop !== Drop.None || !auth.key || !verifySignature(n.signed, n.signature, auth.key)) {
      this.counters.notifiesRefused++;
      return;
    }
    this.counters.notifiesReceived++;
    if (n.reason === NotifyReason.Moved) this.counters.movedNotices++;
    const taken = this.sparesTaken.get(n.spi);
    if (taken !== undefined && taken.to.address === from) {
      // The peer did not bind the spare to the pair (or restarted without it): the pair asks by INIT, whose answer says why.
      this.sparesTaken.delete(n.spi);
      this.noSpare.set(taken.pair, 1);
      this.counters.sparesRejected++;
      // The peer may have restarted without its spares: none of them is sure. New ones, from it as it is now.
      this.spares.forget(from);
      this.keepSpares(taken.to);
    }
    this.installer.spiRejected(n.spi, from);
  }
}

/** x25519Shared, or undefined when their key gives no shared secret (a low-order point, or no X25519 key at all). */
function sharedOrNot(ours: KeyObject, theirsRaw: Buffer): Buffer | undefined {
  try {
    return x25519Shared(ours, theirsRaw);
  } catch {
    return undefined;
  }
}

