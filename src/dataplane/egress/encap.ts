// Egress stage 8: the packet leaves the VM's cable. To a VM of this host it becomes a frame
// for that VM's port; to another host it is wrapped in ESP (RFC 4303/4106, tunnel mode)
// and an outer IPv4 header, or in IPv4 alone (RFC 4213) when the policy turns encryption
// off. The IPv6 packet never moves: headers go into the headroom, the trailer after it,
// and one cipher call encrypts the whole batch in place.
// A packet is counted as sent (SA and cable) only once its seal succeeded: a job the cipher
// reports as failed (ok = 0) still holds plaintext behind its ESP header, so it is dropped
// as esp/seal-failed and never left for the underlay. Its sequence number stays used: a
// number is never reused under a key, whatever became of the packet (RFC 4106 3.1).
// A packet larger than the guest MTU is answered with ICMPv6 Packet Too Big (RFC 4443 3.2).

import { BATCH_MAX, Next, type Batch } from '../batch.js';
import type { Cable } from '../cable.js';
import { Drop } from '../../base/drops.js';
import { TokenBucket } from '../../base/token-bucket.js';
import { ETH_HLEN, writeEthIpv6 } from '../../wire/ethernet.js';
import { writePacketTooBig } from '../../wire/icmpv6.js';
import { IPV4_HLEN, writeOuter } from '../../wire/ipv4.js';
import { drop, settle, type Stage } from '../stage.js';
import type { PortTable } from '../port-table.js';
import { ROUTER_LINK_LOCAL, ROUTER_MAC, type VmPort } from '../vm-port.js';
import { ESP_HLEN, ESP_ICV_LEN, ESP_OFF_IV, ESP_OFF_SEQ, ESP_OFF_SPI, writeEspTrailer } from '../../wire/esp.js';
import { EspJobs, type EspCipher } from '../../esp/esp-cipher.js';

/** ICMPv6 errors the switch sends per second at most (RFC 4443 2.4 f). */
const ERRORS_PER_SECOND = 100;

function writeU32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

export class Encap implements Stage {
  readonly name = 'encap';
  readonly drops = [Drop.MtuTooBig, Drop.SaExhausted, Drop.EspSealFailed];
  readonly outputs = [Next.VmPort, Next.Underlay, Next.Reply];
  private readonly jobs = new EspJobs(BATCH_MAX);
  /** What the first pass read of each packet's SA (the reading is what counts). */
  private readonly seqSeen = new Uint32Array(BATCH_MAX);
  /** Inner IPv6 length of job j's packet, counted once the seal succeeded. */
  private readonly ipLen = new Int32Array(BATCH_MAX);
  /** ICMPv6 errors allowed (RFC 4443 2.4 f); the clock is the batch's. */
  private readonly errors = new TokenBucket(ERRORS_PER_SECOND, ERRORS_PER_SECOND, 0);

  constructor(
    private readonly ports: PortTable,
    private readonly cipher: EspCipher,
    /** Called once when an SA crosses a soft limit, or when it is used up. */
    private readonly wantRekey: (cable: Cable) => void,
  ) {}

  process(b: Batch, now: number): void {
    const buf = b.data;
    const jobs = this.jobs;
    jobs.count = 0;
    // A first pass reads each packet's SA (its sequence number), so that the cache misses of
    // different packets overlap instead of waiting behind each other's in the pass that uses it.
    const seen = this.seqSeen;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const sa = (b.ref[i] as Cable).sa;
      seen[i] = sa === null ? 0 : sa.seqLo;
    }
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const c = b.ref[i] as Cable;
      const port = this.ports.at(b.port[i]);
      const ip = b.l3[i];
      const ipLen = b.len[i] - ETH_HLEN;
      if (ipLen > port.mtu) {
        this.tooBig(b, i, port, now);
        continue;
      }
      if (c.localPort >= 0) {
        c.packets++;
        c.bytes += ipLen;
        writeEthIpv6(buf, b.start[i], this.ports.at(c.localPort).mac, ROUTER_MAC);
        b.outPort[i] = c.localPort;
        settle(b, i, Next.VmPort);
        continue;
      }
      const tos = (((buf[ip] & 0x0f) << 4) | (buf[ip + 1] >> 4)) & 0xfc; // inner DSCP, ECN not copied
      const sa = c.sa;
      if (sa === null) {
        const outer = ip - IPV4_HLEN;
        writeOuter(buf, outer, c.outer!, IPV4_HLEN + ipLen, tos);
        b.start[i] = outer;
        b.len[i] = IPV4_HLEN + ipLen;
      } else {
        if (!sa.advance()) {
          drop(b, i, Drop.SaExhausted);
          this.wantRekey(c);
          continue;
        }
        const esp = ip - ESP_HLEN;
        const outer = esp - IPV4_HLEN;
        writeU32(buf, esp + ESP_OFF_SPI, sa.spi);
        writeU32(buf, esp + ESP_OFF_SEQ, sa.seqLo);
        writeU32(buf, esp + ESP_OFF_IV, sa.seqHi);
        writeU32(buf, esp + ESP_OFF_IV + 4, sa.seqLo);
        const ptLen = writeEspTrailer(buf, ip + ipLen, ipLen) - ip;
        const total = IPV4_HLEN + ESP_HLEN + ptLen + ESP_ICV_LEN;
        writeOuter(buf, outer, c.outer!, total, tos);
        this.ipLen[jobs.count] = ipLen;
        jobs.add(sa.key, esp, ptLen, sa.seqHi, i);
        b.start[i] = outer;
        b.len[i] = total;
        b.peer[i] = c.peerAddr;
        settle(b, i, Next.Underlay); // undone in sealed() if its seal fails
        continue;
      }
      c.packets++;
      c.bytes += ipLen;
      b.peer[i] = c.peerAddr;
      settle(b, i, Next.Underlay);
    }
    if (jobs.count > 0) {
      this.cipher.seal(buf, jobs);
      this.sealed(b, now);
    }
  }

  /** After the seal: count each sealed packet on its SA and cable; drop each one that failed. */
  private sealed(b: Batch, now: number): void {
    const jobs = this.jobs;
    for (let j = 0; j < jobs.count; j++) {
      const i = jobs.packet[j];
      const c = b.ref[i] as Cable;
      if (jobs.ok[j] !== 1) {
        drop(b, i, Drop.EspSealFailed);
        c.drops++;
        continue;
      }
      const sa = c.sa!;
      const ipLen = this.ipLen[j];
      sa.bytes += ipLen; // its packets are its sequence numbers
      c.packets++;
      c.bytes += ipLen;
      if (!sa.rekeyRequested && sa.wantsRekey(now)) {
        sa.rekeyRequested = true;
        this.wantRekey(c);
      }
    }
  }

  /** Answer with Packet Too Big (rate-limited), the packet itself counted as dropped. */
  private tooBig(b: Batch, i: number, port: VmPort, now: number): void {
    if (!this.errors.take(now)) {
      drop(b, i, Drop.MtuTooBig);
      return;
    }
    const buf = b.data;
    const ip = b.l3[i];
    const ipLen = writePacketTooBig(buf, ip, b.len[i] - ETH_HLEN, port.mtu, ROUTER_LINK_LOCAL);
    writeEthIpv6(buf, b.start[i], port.mac, ROUTER_MAC);
    b.len[i] = ETH_HLEN + ipLen;
    b.outPort[i] = b.port[i];
    settle(b, i, Next.Reply);
    b.reason[i] = Drop.MtuTooBig;
  }
}
