// The responder's half of a spare SA (spares.ts): packets on the SPI of a spare wait while the
// pair they carry is checked. The first one is opened on a copy (only the initiating host has
// the key, so an impostor's packet fails here and is dropped, the spare kept); its inner
// (source, destination) goes through Algorithm 2 as an INIT's pair would (Receiver.accept, the
// initiating host named by the spare). Accepted, the spare becomes the pair's inbound SA and
// the packets that waited run through the ingress pipeline again, from their outer header:
// the SA opens them with its replay window as any packet of it. Refused, the spare and its key
// go, and so do the packets, as packets on an unknown SPI (counted, and the initiator is told,
// so that it asks by INIT and learns why).
// The first packet may be a bind-ahead probe (bind-probe.ts): a dummy packet naming the pair,
// sent before the initiator's own checks. It starts the same checks and is consumed.

import { Next, type Batch } from '../dataplane/batch.js';
import type { Cable } from '../dataplane/cable.js';
import type { HeldPacket } from '../dataplane/upcall.js';
import type { SpareHold } from '../dataplane/ingress/esp-decap.js';
import { settle } from '../dataplane/stage.js';
import { Drop } from '../base/drops.js';
import { formatIpv6 } from '../base/address.js';
import { EspJobs, type EspCipher } from '../esp/esp-cipher.js';
import { ESP_DUMMY, ESP_HLEN, ESP_ICV_LEN, espPayloadLength, readEspTrailer } from '../wire/esp.js';
import { IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_SRC } from '../wire/ipv6.js';
import type { AcceptRequest, AcceptResult } from './receiver.js';
import type { InboundSpare, InboundSpares } from './spares.js';

export interface SpareBinderLimits {
  /** Packets that may wait on one spare, and on all of them. */
  readonly perSpare: number;
  readonly total: number;
}

export class SpareBinder implements SpareHold {
  readonly counts = { held: 0, bound: 0, refused: 0, probes: 0 };
  /** Packets waiting now. */
  private queued = 0;
  /** Pairs being checked now. */
  inFlight = 0;
  /** The copy the first packet is opened in (an ESP packet fits an IPv4 packet). */
  private readonly scratch = Buffer.alloc(65_536);
  private readonly jobs = new EspJobs(1);

  constructor(
    private readonly spares: InboundSpares,
    private readonly cipher: EspCipher,
    private readonly limits: SpareBinderLimits,
    private readonly checks: {
      /** Algorithm 2 for the pair. */
      accept(req: AcceptRequest): Promise<AcceptResult>;
      /** The spare is the pair's inbound SA from now on. */
      bind(cable: Cable, spare: InboundSpare): void;
      /** After the packets that waited were released: work that may follow a bind (the reply's cable). */
      bound(cable: Cable): void;
      /** Runs packets that waited through the ingress pipeline, from their outer header. */
      release(packets: HeldPacket[]): void;
      /** A pair refused, by reason. */
      refused(drop: Drop): void;
      /** A check broke its contract (a bug, never a packet's fault). */
      bug(err: unknown): void;
    },
  ) {}

  hold(b: Batch, i: number, spi: number): Drop {
    const spare = this.spares.get(spi);
    if (spare === undefined) return Drop.EspUnknownSpi;
    if (b.peer[i] !== spare.peer) return Drop.EspWrongPeer;
    if (spare.held === null) {
      const pair = this.open(b, i, spare);
      if (typeof pair === 'number') return pair;
      spare.held = [];
      this.check(spare, pair);
      if (pair.probe) {
        this.counts.probes++;
        settle(b, i, Next.Consumed); // a replay of it is opened as a dummy on the SA once bound, then refused as a replay
        return Drop.None;
      }
    } else if (spare.held.length >= this.limits.perSpare || this.queued >= this.limits.total) {
      return Drop.UpcallQueueFull;
    }
    spare.held.push({ data: Buffer.from(b.data.subarray(b.start[i], b.start[i] + b.len[i])), port: b.port[i], timeUs: b.time[i], peer: b.peer[i], tag: b.tag[i] });
    this.queued++;
    this.counts.held++;
    settle(b, i, Next.Held);
    return Drop.None;
  }

  /** Open a copy of packet i with the spare's key: its inner pair (the probe's: bind-probe.ts), or why it does not count. */
  private open(b: Batch, i: number, spare: InboundSpare): { src: string; dst: string; probe: boolean } | Drop {
    const esp = b.l3[i];
    const len = b.start[i] + b.len[i] - esp;
    const text = len - ESP_HLEN - ESP_ICV_LEN;
    if (text < 0 || len > this.scratch.length) return Drop.EspTruncated;
    this.scratch.set(b.data.subarray(esp, esp + len), 0);
    this.jobs.count = 0;
    this.jobs.add(spare.key, 0, text, 0, 0); // a spare's first packets: the sequence number's high half is 0
    this.cipher.open(this.scratch, this.jobs);
    if (this.jobs.ok[0] !== 1) return Drop.EspAuthFailed;
    const trailer = readEspTrailer(this.scratch, ESP_HLEN, ESP_HLEN + text);
    const probe = trailer === ESP_DUMMY;
    const payload = probe ? espPayloadLength(this.scratch, ESP_HLEN, ESP_HLEN + text) : trailer;
    if (payload < 0) return payload === -2 ? Drop.EspBadNextHeader : Drop.EspBadTrailer;
    if (payload < IPV6_HLEN) return Drop.Ipv6Truncated;
    return { src: formatIpv6(this.scratch, ESP_HLEN + IPV6_OFF_SRC), dst: formatIpv6(this.scratch, ESP_HLEN + IPV6_OFF_DST), probe };
  }

  private check(spare: InboundSpare, pair: { readonly src: string; readonly dst: string }): void {
    this.inFlight++;
    this.checks.accept({ initiatorHost: spare.peerHost, initiatorAddress: spare.peer, src: pair.src, dst: pair.dst }).then(
      (r) => {
        const held = this.done(spare);
        if (this.spares.get(spare.spi) !== spare) {
          this.checks.release(held); // forgotten meanwhile (the host closed): packets on an unknown SPI
          return;
        }
        this.spares.remove(spare, !r.ok);
        if (r.ok) {
          this.checks.bind(r.cable, spare);
          this.counts.bound++;
        } else {
          this.checks.refused(r.drop);
          this.counts.refused++;
        }
        this.checks.release(held);
        if (r.ok) this.checks.bound(r.cable);
      },
      (err) => {
        this.spares.remove(spare, true);
        this.checks.release(this.done(spare));
        this.checks.bug(err);
      },
    );
  }

  /** The packets that waited on `spare`, out of the count. */
  private done(spare: InboundSpare): HeldPacket[] {
    this.inFlight--;
    const held = spare.held ?? [];
    spare.held = null;
    this.queued -= held.length;
    return held;
  }
}
