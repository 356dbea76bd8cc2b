// A bind-ahead probe (issue 13, the first packet of a pair): a new pair's miss that finds a
// spare SA with the destination's host (spares.ts) takes it before its own checks and sends on
// it at once a dummy packet (RFC 4303 2.6, next header 59) whose payload is an IPv6 header
// naming the pair and nothing after it. The peer opens it as it would the pair's first packet
// and checks the pair (SDN Algorithm 2, spare-binder.ts) while this host checks it (Algorithm
// 1): the two verifications overlap instead of following each other. The probe carries no
// data and is consumed there; the pair's packets leave only once this host's checks passed,
// and the peer delivers them only once its own did. A peer that does not know probes drops it
// (esp/bad-next-header) and checks the pair on its first packet, as before.
//
//   outer IPv4 | SPI | seq | IV | IPv6 header: version 6, payload length 0, next header 59,
//   source and destination the pair | padding | pad length | 59 | ICV

import { Batch, Next, UNDERLAY_OFFSET } from '../dataplane/batch.js';
import type { OutboundSa } from '../esp/sa.js';
import { EspJobs, type EspCipher } from '../esp/esp-cipher.js';
import { IPV4_HLEN, writeOuter } from '../wire/ipv4.js';
import { IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_SRC } from '../wire/ipv6.js';
import { ESP_HLEN, ESP_ICV_LEN, ESP_NEXT_HEADER_DUMMY, ESP_OFF_IV, ESP_OFF_SEQ, ESP_OFF_SPI, writeEspTrailer } from '../wire/esp.js';
import type { PacketSink } from './tx.js';

export class BindProbe {
  /** Probes sent; probes not sent (the SA used up, the seal or the underlay refused). */
  sent = 0;
  failed = 0;
  /** Made at the first probe: a host that never sends one keeps no batch for it. */
  private batch: Batch | undefined;
  private readonly jobs = new EspJobs(1);
  private readonly first = new Int32Array(1);

  constructor(
    private readonly cipher: EspCipher,
    /** Where underlay packets leave (undefined before the host is attached). */
    private readonly underlay: () => PacketSink | undefined,
  ) {}

  /** Send the probe for src -> dst on `sa` to `peer` (outer: the cable's IPv4 template); false if it did not leave. */
  send(sa: OutboundSa, outer: Uint8Array, peer: number, src: Uint8Array, dst: Uint8Array): boolean {
    const sink = this.underlay();
    if (sink === undefined || !sa.advance()) {
      this.failed++;
      return false;
    }
    const b = (this.batch ??= new Batch());
    const buf = b.data;
    const at = Batch.slot(0) + UNDERLAY_OFFSET;
    const esp = at + IPV4_HLEN;
    const ip = esp + ESP_HLEN;
    buf.fill(0, ip, ip + IPV6_HLEN);
    buf[ip] = 0x60;
    buf[ip + 6] = ESP_NEXT_HEADER_DUMMY; // the inner header's own next header: nothing follows it
    buf.set(src.subarray(0, 16), ip + IPV6_OFF_SRC);
    buf.set(dst.subarray(0, 16), ip + IPV6_OFF_DST);
    const ptLen = writeEspTrailer(buf, ip + IPV6_HLEN, IPV6_HLEN, ESP_NEXT_HEADER_DUMMY) - ip;
    buf.writeUInt32BE(sa.spi, esp + ESP_OFF_SPI);
    buf.writeUInt32BE(sa.seqLo, esp + ESP_OFF_SEQ);
    buf.writeUInt32BE(sa.seqHi, esp + ESP_OFF_IV);
    buf.writeUInt32BE(sa.seqLo, esp + ESP_OFF_IV + 4);
    const total = IPV4_HLEN + ESP_HLEN + ptLen + ESP_ICV_LEN;
    writeOuter(buf, at, outer, total, 0);
    this.jobs.count = 0;
    this.jobs.add(sa.key, esp, ptLen, sa.seqHi, 0);
    this.cipher.seal(buf, this.jobs);
    b.reset();
    b.init(0, at, total, -1, 0);
    b.count = 1;
    b.peer[0] = peer;
    b.next[0] = Next.Underlay;
    if (this.jobs.ok[0] !== 1 || sink.send(b, this.first, 1) !== 1) {
      this.failed++;
      return false;
    }
    this.sent++;
    return true;
  }
}
