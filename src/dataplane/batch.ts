// The batch is the unit of work: a vector of up to BATCH_MAX packets that every stage
// processes in one call before the next batch is read. Packets live in fixed slots of one
// preallocated arena; a stage moves `start`/`len` to strip or add headers in place.
//
// Slot layout (one slot per packet, SLOT_BYTES each):
//
//   slot+0 ........ slot+FRAME_OFFSET ..................................... slot+SLOT_BYTES
//   | headroom     | Ethernet | IPv6 ...                        | tailroom (ESP trailer+ICV) |
//
// Egress turns the frame into [IPv4][ESP][IV][IPv6 ...][pad][ICV] without moving the IPv6
// packet: the outer headers go into the headroom that the Ethernet header and FRAME_OFFSET
// leave, the trailer into the tailroom. Ingress reverses it and writes the Ethernet header
// for the VM into the room the outer headers free.
//
// Ownership: a stage that takes a packet out of the batch (queued for an upcall, handed to
// a port) must copy it or finish with it before process() returns; the arena is reused for
// the next batch.

export const BATCH_MAX = 256;
export const SLOT_BYTES = 2048;
/** Where a frame read from a VM port starts inside its slot. Leaves >= 36 bytes before the IPv6 header. */
export const FRAME_OFFSET = 66;
/** Where an underlay packet (outer IPv4) starts inside its slot. */
export const UNDERLAY_OFFSET = 44;
/** Largest frame or packet a slot carries (headroom and ESP tailroom kept free). */
export const MAX_PACKET = SLOT_BYTES - FRAME_OFFSET - 64;

/** Disposition of a packet in a batch. */
export const enum Next {
  /** Still going through the stages. */
  Active = 0,
  /** Dropped; `reason[i]` names why. */
  Drop = 1,
  /** Ready for the underlay port: an IPv4 packet at start..start+len, `peer[i]` holds its destination. */
  Underlay = 2,
  /** Ready for a VM port: an Ethernet frame, `outPort[i]` names the port. */
  VmPort = 3,
  /** Taken out of the batch (copied into an upcall queue); the stage that took it counts it. */
  Held = 4,
  /** Consumed by the switch itself (a neighbour-discovery message absorbed). */
  Consumed = 5,
  /**
   * Answered in place: the slot now holds the switch's reply (NA, RA, Packet Too Big) for
   * the VM port in `outPort`. With reason None the request was consumed; with a reason the
   * original packet counts as dropped for it (Packet Too Big).
   */
  Reply = 6,
}

/** Names of the fates, indexed by Next (for messages). */
export const NEXT_NAMES: readonly string[] = ['active', 'drop', 'underlay', 'vm-port', 'held', 'consumed', 'reply'];

export class Batch {
  /** The arena: BATCH_MAX slots of SLOT_BYTES. */
  readonly data: Buffer;
  count = 0;
  /** Offset in `data` of the first byte of the packet as it stands now. */
  readonly start = new Int32Array(BATCH_MAX);
  readonly len = new Int32Array(BATCH_MAX);
  /** Offset of the (inner) IPv6 header, set by the parse stages. */
  readonly l3 = new Int32Array(BATCH_MAX);
  /** Offset of the upper-layer header after the extension-header chain, or -1. */
  readonly l4 = new Int32Array(BATCH_MAX);
  /** Upper-layer protocol number after the extension-header chain (59 = none). */
  readonly proto = new Uint8Array(BATCH_MAX);
  /** Bit flags from parsing (PacketFlag). */
  readonly flags = new Uint8Array(BATCH_MAX);
  /** Index of the VM port the packet came from (egress) or goes to (ingress, ND replies). */
  readonly port = new Int32Array(BATCH_MAX);
  readonly outPort = new Int32Array(BATCH_MAX);
  /** Underlay IPv4 address (host order, uint32) of the peer, for underlay packets. */
  readonly peer = new Uint32Array(BATCH_MAX);
  readonly next = new Uint8Array(BATCH_MAX);
  readonly reason = new Uint16Array(BATCH_MAX);
  /** Row of the stage that settled the packet (its counters' row; 0 = not settled by a stage). */
  readonly by = new Uint8Array(BATCH_MAX);
  /** Counters' row of the stage running now; drop() and settle() record it in `by`. */
  stage = 0;
  /** Capture timestamp in microseconds (kept from pcap input, else the batch clock). */
  readonly time = new Float64Array(BATCH_MAX);
  /** Opaque to the pipeline: a tool's own number for the packet (replay follows verdicts by it). */
  readonly tag = new Int32Array(BATCH_MAX);
  /** The cable (or SA) a stage resolved for the packet; opaque to the batch. */
  readonly ref: unknown[] = new Array<unknown>(BATCH_MAX).fill(null);

  constructor() {
    this.data = Buffer.alloc(BATCH_MAX * SLOT_BYTES);
  }

  /** Offset of slot i. */
  static slot(i: number): number {
    return i * SLOT_BYTES;
  }

  /** Reset for a new round of input; slot contents are left as they are. */
  reset(): void {
    this.count = 0;
  }

  /**
   * Append one packet copied from `src` at `offset` inside its slot; returns its index or -1
   * when the batch is full or the packet does not fit a slot.
   */
  push(src: Uint8Array, offset: number, port: number, timeUs: number, tag = -1): number {
    const i = this.count;
    if (i >= BATCH_MAX || src.length > SLOT_BYTES - offset - 64) return -1;
    const at = i * SLOT_BYTES + offset;
    this.data.set(src, at);
    this.init(i, at, src.length, port, timeUs);
    this.tag[i] = tag;
    this.count = i + 1;
    return i;
  }

  /** Mark slot i as holding a packet of `len` bytes at absolute offset `at`. */
  init(i: number, at: number, len: number, port: number, timeUs: number): void {
    this.start[i] = at;
    this.len[i] = len;
    this.l3[i] = -1;
    this.l4[i] = -1;
    this.proto[i] = 0;
    this.flags[i] = 0;
    this.port[i] = port;
    this.outPort[i] = -1;
    this.peer[i] = 0;
    this.next[i] = Next.Active;
    this.reason[i] = 0;
    this.by[i] = 0;
    this.time[i] = timeUs;
    this.tag[i] = -1;
    this.ref[i] = null;
  }

  /** A view of packet i as it stands now (allocates a view: for tests, tools and slow paths). */
  view(i: number): Buffer {
    return this.data.subarray(this.start[i], this.start[i] + this.len[i]);
  }
}

/** Flags set by parsing. */
export const enum PacketFlag {
  /** The IPv6 packet carries a Fragment header. */
  Fragment = 1,
  /** Not the first fragment: no upper-layer header is present. */
  LaterFragment = 2,
  /** Underlay packet carried ESP (else plain IPv6-in-IPv4). */
  Esp = 4,
  /** Re-injected after an upcall: already counted as input once. */
  Reinjected = 8,
  /** Re-injected ingress packet that is already the inner IPv6 packet (held by the pair-check). */
  Inner = 16,
}
