// Ingress stage 2 (ESP packets): SPI -> inbound SA; the SA's peer must have sent it; the
// sequence number is checked against the anti-replay window BEFORE decryption; one cipher
// call verifies and decrypts the batch in place; the trailer is checked, and the inner
// (source, destination) must be exactly the pair of the SA's cable (a peer may not speak
// for identities it does not host). Only a packet that passed all of it moves the window,
// in packet order, so a duplicate inside one batch is still caught.
// A packet on an SPI no SA has may be on a spare's (src/switch/spares.ts): the SpareHold
// keeps it while its pair is checked, or names why it drops. A dummy packet (RFC 4303 2.6:
// next header 59) that passed every check is consumed, its number taken into the window.

import { BATCH_MAX, Next, PacketFlag, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { reached, tickOf } from '../../base/ticks.js';
import { readU32 } from '../../wire/ipv4.js';
import { IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_SRC } from '../../wire/ipv6.js';
import type { CableSa } from '../cable.js';
import { drop, settle, type Stage } from '../stage.js';
import { ESP_DUMMY, ESP_HLEN, ESP_ICV_LEN, ESP_OFF_SEQ, ESP_OFF_SPI, readEspTrailer } from '../../wire/esp.js';
import { EspJobs, type EspCipher } from '../../esp/esp-cipher.js';
import { ReplayCheck } from '../../esp/replay-window.js';
import type { SpiLookup } from '../../esp/spi-table.js';

/** Where packets on an SPI with no SA go: held or consumed (Drop.None, the packet settled) or dropped for the reason returned. */
export interface SpareHold {
  hold(b: Batch, i: number, spi: number): Drop;
}

/** Smallest ESP packet: header, IV, a minimal trailer (pad length, next header) rounded to 4, ICV. */
const ESP_MIN = ESP_HLEN + 4 + ESP_ICV_LEN;

export class EspDecap implements Stage {
  readonly name = 'esp-decap';
  readonly drops = [
    Drop.EspTruncated, Drop.EspUnknownSpi, Drop.EspWrongPeer, Drop.EspReplay, Drop.EspLeftOfWindow,
    Drop.EspAuthFailed, Drop.EspBadTrailer, Drop.EspBadNextHeader, Drop.Ipv6Truncated, Drop.InnerPairMismatch, Drop.UpcallQueueFull,
  ];
  readonly outputs = [Next.Held, Next.Consumed];
  private readonly jobs = new EspJobs(BATCH_MAX);
  private readonly seqLo = new Uint32Array(this.jobs.seqHi.length);
  /** What the passes over the SAs and cables read (touch()), kept so that the reads are made. */
  touched = 0;
  /** Each packet's slot in the SPI table (-1: none), found in the first pass. */
  private readonly slots = new Int32Array(BATCH_MAX);
  /** Each packet's SA, found in the second pass (undefined: none); emptied at the end of the passes. */
  private readonly sas: (CableSa | undefined)[] = new Array<CableSa | undefined>(BATCH_MAX).fill(undefined);

  constructor(private readonly spis: SpiLookup<CableSa>, private readonly cipher: EspCipher, private readonly spares?: SpareHold) {}

  process(b: Batch, now: number): void {
    const buf = b.data;
    const jobs = this.jobs;
    const t = tickOf(now);
    jobs.count = 0;
    // In passes, each reaching one step further into memory (the SA table's SPIs, its SAs, the
    // SA, its replay window's blocks), so that the cache misses of different packets overlap
    // instead of waiting behind each other's.
    const { sas, slots, spis } = this;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & PacketFlag.Esp) === 0) continue;
      const esp = b.l3[i];
      if (b.start[i] + b.len[i] - esp < ESP_MIN) drop(b, i, Drop.EspTruncated);
      else slots[i] = spis.find(readU32(buf, esp + ESP_OFF_SPI));
    }
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & PacketFlag.Esp) === 0) continue;
      sas[i] = slots[i] < 0 ? undefined : spis.valueAt(slots[i]);
    }
    // Every line of each SA (the next two passes read its end, then its window), in a pass of
    // its own: 1M-cable ingress 1.48 against 1.40 Mpps without it.
    let touched = 0;
    for (let i = 0; i < b.count; i++) {
      const sa = sas[i];
      if (sa !== undefined) touched ^= sa.touch();
    }
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & PacketFlag.Esp) === 0) continue;
      const sa = sas[i];
      if (sa === undefined) this.noSa(b, i);
      else if (!sa.current && reached(t, sa.retireTick)) drop(b, i, Drop.EspUnknownSpi);
      else if (sa.peer !== b.peer[i]) drop(b, i, Drop.EspWrongPeer);
    }
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || (b.flags[i] & PacketFlag.Esp) === 0) continue;
      const sa = sas[i]!;
      const esp = b.l3[i];
      const lo = readU32(buf, esp + ESP_OFF_SEQ);
      const hi = sa.inferHigh(lo);
      const seen = sa.check(hi, lo);
      if (seen !== ReplayCheck.Ok) {
        drop(b, i, seen === ReplayCheck.Replay ? Drop.EspReplay : Drop.EspLeftOfWindow);
        continue;
      }
      this.seqLo[jobs.count] = lo;
      jobs.add(sa.key, esp, b.start[i] + b.len[i] - esp - ESP_HLEN - ESP_ICV_LEN, hi, i);
      b.ref[i] = sa;
    }
    sas.fill(undefined, 0, b.count); // the batch holds what it needs (b.ref): keep no SA alive
    if (jobs.count === 0) return;
    // Every line of each SA's cable, which the checks after the cipher read: their misses
    // overlap here, and the cipher works while they come in.
    for (let j = 0; j < jobs.count; j++) touched ^= (b.ref[jobs.packet[j]] as CableSa).cable.touch();
    this.touched = touched;
    this.cipher.open(buf, jobs);
    for (let j = 0; j < jobs.count; j++) {
      const i = jobs.packet[j];
      const sa = b.ref[i] as CableSa;
      if (jobs.ok[j] === 0) {
        drop(b, i, Drop.EspAuthFailed);
        continue;
      }
      const inner = jobs.espOff[j] + ESP_HLEN;
      const payload = readEspTrailer(buf, inner, inner + jobs.ptLen[j]);
      if (payload === ESP_DUMMY) {
        this.dummy(b, i, sa, jobs.seqHi[j], this.seqLo[j]);
        continue;
      }
      if (payload < 0) {
        drop(b, i, payload === -2 ? Drop.EspBadNextHeader : Drop.EspBadTrailer);
        continue;
      }
      if (payload < IPV6_HLEN) {
        drop(b, i, Drop.Ipv6Truncated);
        continue;
      }
      if (!sa.cable.matches(buf, inner + IPV6_OFF_SRC, inner + IPV6_OFF_DST)) {
        drop(b, i, Drop.InnerPairMismatch);
        continue;
      }
      const hi = jobs.seqHi[j];
      const lo = this.seqLo[j];
      if (sa.check(hi, lo) !== ReplayCheck.Ok) {
        drop(b, i, Drop.EspReplay); // the same number twice in one batch
        continue;
      }
      sa.accept(hi, lo);
      sa.packets++;
      sa.bytes += payload;
      b.l3[i] = inner;
      b.start[i] = inner;
      b.len[i] = payload;
      b.ref[i] = sa.cable;
    }
  }

  /** Packet i is a genuine dummy on `sa`: its number counts as received (a replay of it is one), then it is consumed. */
  private dummy(b: Batch, i: number, sa: CableSa, hi: number, lo: number): void {
    if (sa.check(hi, lo) !== ReplayCheck.Ok) {
      drop(b, i, Drop.EspReplay);
      return;
    }
    sa.accept(hi, lo);
    settle(b, i, Next.Consumed);
  }

  /** Packet i's SPI has no SA: a spare's, or unknown. */
  private noSa(b: Batch, i: number): void {
    const r = this.spares === undefined ? Drop.EspUnknownSpi : this.spares.hold(b, i, readU32(b.data, b.l3[i] + ESP_OFF_SPI));
    if (r !== Drop.None) drop(b, i, r);
  }
}
