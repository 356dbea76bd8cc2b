// Flow state of an initiate-only pair: the flows the opener side opened, so that the other
// side's packets pass only as replies to them. One table per pair, shared by both cables.
//
// A flow is (protocol, opener port, responder port): for TCP and UDP the opener's source and
// destination ports; for an ICMPv6 echo (RFC 4443 4.1, 4.2) the echo identifier and 0. The
// caller passes only echo requests (type 128) to opened() and only echo replies (type 129)
// to isReply(), with sport = 0 and dport = the identifier, mirroring TCP and UDP: a reply's
// source port is the responder port and its destination port the opener port.
//
// Storage is an open-addressing hash table (linear probing, backward-shift deletion) in
// typed arrays: no allocation per packet, only when the table grows (doubling, up to twice
// maxFlows slots). Idle entries expire (tcp 300 s, udp 60 s, icmp 30 s): an expired entry is
// removed when a reply finds it, and all expired entries are swept when the table is full.

import { Drop } from '../base/drops.js';
import type { FlowState } from '../dataplane/decision.js';
import { PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from './model.js';

const enum FlowClass {
  Empty = 0,
  Tcp = 1,
  Udp = 2,
  Icmp = 3,
}

/** Idle timeout in seconds, by FlowClass. */
const IDLE_TIMEOUT = [0, 300, 60, 30];
const TCP_FLAG_SYN = 0x02;
const TCP_FLAG_ACK = 0x10;
const MIN_SLOTS = 16;

function classOf(proto: number): FlowClass {
  if (proto === PROTO_TCP) return FlowClass.Tcp;
  if (proto === PROTO_UDP) return FlowClass.Udp;
  if (proto === PROTO_ICMPV6) return FlowClass.Icmp;
  return FlowClass.Empty;
}

export class FlowTable implements FlowState {
  private classes: Uint8Array;
  private keys: Int32Array;
  /** Last time (seconds) the flow was seen from either side. */
  private seen: Float64Array;
  private shift: number;
  private count = 0;
  private readonly maxSlots: number;

  constructor(readonly maxFlows: number) {
    if (!Number.isInteger(maxFlows) || maxFlows < 1) throw new RangeError(`maxFlows must be a positive integer, got ${maxFlows}`);
    this.maxSlots = Math.max(MIN_SLOTS, 2 ** Math.ceil(Math.log2(maxFlows * 2)));
    const slots = Math.min(MIN_SLOTS, this.maxSlots);
    this.classes = new Uint8Array(slots);
    this.keys = new Int32Array(slots);
    this.seen = new Float64Array(slots);
    this.shift = 32 - Math.log2(slots);
  }

  /** Flows held now (expired ones included until they are removed). */
  get size(): number {
    return this.count;
  }

  /**
   * A packet from the opener side: open or refresh the flow. Drop.None, or
   * Drop.PolicyFlowTableFull when maxFlows live flows are open. Packets without ports
   * (later fragments, other protocols) open nothing and pass.
   */
  opened(proto: number, openerPort: number, responderPort: number, nowSec: number): Drop {
    const cls = classOf(proto);
    if (cls === FlowClass.Empty || openerPort < 0 || responderPort < 0) return Drop.None;
    const key = (openerPort << 16) | responderPort;
    const slot = this.find(cls, key);
    if (slot >= 0) {
      this.seen[slot] = nowSec;
      return Drop.None;
    }
    if (this.count >= this.maxFlows) {
      this.sweep(nowSec);
      if (this.count >= this.maxFlows) return Drop.PolicyFlowTableFull;
    }
    if ((this.count + 1) * 2 > this.classes.length && this.classes.length < this.maxSlots) this.grow();
    this.insert(cls, key, nowSec);
    return Drop.None;
  }

  /**
   * A packet from the responder side: is it a reply to a live flow? A TCP SYN without ACK
   * never is (the responder may not open connections). A reply refreshes the flow.
   */
  isReply(proto: number, sport: number, dport: number, tcpFlags: number, nowSec: number): boolean {
    const cls = classOf(proto);
    if (cls === FlowClass.Empty || sport < 0 || dport < 0) return false;
    if (cls === FlowClass.Tcp && (tcpFlags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) === TCP_FLAG_SYN) return false;
    const slot = this.find(cls, (dport << 16) | sport);
    if (slot < 0) return false;
    if (nowSec - this.seen[slot] > IDLE_TIMEOUT[cls]) {
      this.remove(slot);
      return false;
    }
    this.seen[slot] = nowSec;
    return true;
  }

  private home(cls: number, key: number): number {
    return Math.imul(key ^ Math.imul(cls, 0x85ebca6b), 0x9e3779b1) >>> this.shift;
  }

  private find(cls: number, key: number): number {
    const mask = this.classes.length - 1;
    for (let s = this.home(cls, key); this.classes[s] !== FlowClass.Empty; s = (s + 1) & mask) {
      if (this.classes[s] === cls && this.keys[s] === key) return s;
    }
    return -1;
  }

  private insert(cls: number, key: number, nowSec: number): void {
    const mask = this.classes.length - 1;
    let s = this.home(cls, key);
    while (this.classes[s] !== FlowClass.Empty) s = (s + 1) & mask;
    this.classes[s] = cls;
    this.keys[s] = key;
    this.seen[s] = nowSec;
    this.count++;
  }

  /** The flows held, as [class, key, last seen], for the process that takes over (handover.ts). */
  save(): [number, number, number][] {
    const out: [number, number, number][] = [];
    for (let s = 0; s < this.classes.length; s++) if (this.classes[s] !== FlowClass.Empty) out.push([this.classes[s], this.keys[s], this.seen[s]]);
    return out;
  }

  /** Take over flows save() gave (into an empty table). */
  load(flows: readonly (readonly [number, number, number])[]): void {
    for (const [cls, key, seen] of flows.slice(0, this.maxFlows)) {
      if (cls <= FlowClass.Empty || cls > FlowClass.Icmp || this.find(cls, key) >= 0) continue;
      if ((this.count + 1) * 2 > this.classes.length && this.classes.length < this.maxSlots) this.grow();
      this.insert(cls, key, seen);
    }
  }

  /** Linear-probing deletion without tombstones: pull later entries of the run back. */
  private remove(slot: number): void {
    const mask = this.classes.length - 1;
    let hole = slot;
    this.classes[hole] = FlowClass.Empty;
    this.count--;
    for (let j = (hole + 1) & mask; this.classes[j] !== FlowClass.Empty; j = (j + 1) & mask) {
      const home = this.home(this.classes[j], this.keys[j]);
      // The entry at j may stay if its home lies cyclically in (hole, j].
      const stays = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (stays) continue;
      this.classes[hole] = this.classes[j];
      this.keys[hole] = this.keys[j];
      this.seen[hole] = this.seen[j];
      this.classes[j] = FlowClass.Empty;
      hole = j;
    }
  }

  private sweep(nowSec: number): void {
    for (let s = 0; s < this.classes.length; ) {
      const cls = this.classes[s];
      // remove() may pull a later entry into s: look at s again before moving on.
      if (cls !== FlowClass.Empty && nowSec - this.seen[s] > IDLE_TIMEOUT[cls]) this.remove(s);
      else s++;
    }
  }

  private grow(): void {
    const { classes, keys, seen } = this;
    const slots = classes.length * 2;
    this.classes = new Uint8Array(slots);
    this.keys = new Int32Array(slots);
    this.seen = new Float64Array(slots);
    this.shift = 32 - Math.log2(slots);
    this.count = 0;
    for (let s = 0; s < classes.length; s++) if (classes[s] !== FlowClass.Empty) this.insert(classes[s], keys[s], seen[s]);
  }
}
