// Egress stage 4: the switch is every VM's only neighbour and router. It answers Neighbour
// and Router Solicitations in place (RFC 4861), absorbs NA and MLD, refuses RA/Redirect
// from a VM, and never forwards multicast: nothing is flooded beyond the host.
//
// Replies are written into the request's own slot and go back out of the port they came
// from (Next.Reply), so answering costs no allocation.

import { Next, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { ETH_HLEN, writeEthIpv6 } from '../../wire/ethernet.js';
import {
  ALL_NODES, ICMP6_MLD2_REPORT, ICMP6_MLD_DONE, ICMP6_MLD_QUERY, ICMP6_MLD_REPORT, ICMP6_OFF_CODE,
  icmp6Checksum, ND_HOP_LIMIT, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, ND_REDIRECT, ND_ROUTER_ADVERT,
  ND_ROUTER_SOLICIT, NA_LEN, ndOptionsValid, RA_LEN, sealIcmp6, writeIcmp6Header, writeNeighborAdvert, writeRouterAdvert,
} from '../../wire/icmpv6.js';
import {
  addrEquals, IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_HOPS, IPV6_OFF_SRC, isMulticast, PROTO_ICMPV6,
} from '../../wire/ipv6.js';
import { drop, settle, type Stage } from '../stage.js';
import type { PortTable } from '../port-table.js';
import { ROUTER_LINK_LOCAL, ROUTER_MAC, type VmPort } from '../vm-port.js';

/** Router lifetime advertised to guests, seconds (RFC 4861 6.2.1 default is 3 x 600). */
const ROUTER_LIFETIME = 1800;

function isUnspecified(buf: Uint8Array, off: number): boolean {
  for (let k = 0; k < 16; k++) if (buf[off + k] !== 0) return false;
  return true;
}

/** ff02::1:ffXX:XXXX (RFC 4291 2.7.1). */
function isSolicitedNode(buf: Uint8Array, off: number): boolean {
  if (buf[off] !== 0xff || buf[off + 1] !== 0x02) return false;
  for (let k = 2; k < 11; k++) if (buf[off + k] !== 0) return false;
  return buf[off + 11] === 0x01 && buf[off + 12] === 0xff;
}

export class NdResponder implements Stage {
  readonly name = 'nd-responder';
  readonly drops = [Drop.NdMalformed, Drop.NdRouterOnly, Drop.NdMulticastNotForwarded];
  readonly outputs = [Next.Consumed, Next.Reply];
  /** Answers and absorptions by kind, for `stats`. */
  readonly counts = { ns: 0, dad: 0, rs: 0, na: 0, mld: 0 };
  private readonly peerAddr = Buffer.alloc(16);
  private readonly target = Buffer.alloc(16);

  constructor(private readonly ports: PortTable) {}

  process(b: Batch): void {
    const buf = b.data;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const ip = b.l3[i];
      if (b.proto[i] === PROTO_ICMPV6 && b.l4[i] >= 0) {
        const type = buf[b.l4[i]];
        if (type >= ND_ROUTER_SOLICIT && type <= ND_REDIRECT) {
          this.neighbourDiscovery(b, i, type);
          continue;
        }
        if (type === ICMP6_MLD_QUERY || type === ICMP6_MLD_REPORT || type === ICMP6_MLD_DONE || type === ICMP6_MLD2_REPORT) {
          this.counts.mld++;
          settle(b, i, Next.Consumed);
          continue;
        }
      }
      if (isMulticast(buf, ip + IPV6_OFF_DST)) drop(b, i, Drop.NdMulticastNotForwarded);
    }
  }

  private neighbourDiscovery(b: Batch, i: number, type: number): void {
    if (type === ND_ROUTER_ADVERT || type === ND_REDIRECT) {
      drop(b, i, Drop.NdRouterOnly);
      return;
    }
    const buf = b.data;
    const ip = b.l3[i];
    const m = b.l4[i];
    const mlen = b.start[i] + b.len[i] - m;
    const minLen = type === ND_ROUTER_SOLICIT ? 8 : 24;
    const srcUnspecified = isUnspecified(buf, ip + IPV6_OFF_SRC);
    // RFC 4861 6.1.1 (RS), 7.1.1 (NS), 7.1.2 (NA).
    if (
      buf[ip + IPV6_OFF_HOPS] !== ND_HOP_LIMIT || buf[m + ICMP6_OFF_CODE] !== 0 || mlen < minLen ||
      icmp6Checksum(buf, ip, m, mlen) !== 0 ||
      !ndOptionsValid(buf, m + minLen, m + mlen, srcUnspecified) ||
      (type !== ND_ROUTER_SOLICIT && isMulticast(buf, m + 8))
    ) {
      drop(b, i, Drop.NdMalformed);
      return;
    }
    if (type === ND_NEIGHBOR_ADVERT) {
      this.counts.na++;
      settle(b, i, Next.Consumed);
      return;
    }
    const port = this.ports.at(b.port[i]);
    if (type === ND_NEIGHBOR_SOLICIT) {
      if (srcUnspecified) {
        // Duplicate address detection: never answered, so the guest keeps its address.
        if (!isSolicitedNode(buf, ip + IPV6_OFF_DST)) drop(b, i, Drop.NdMalformed);
        else {
          this.counts.dad++;
          settle(b, i, Next.Consumed);
        }
        return;
      }
      if (addrEquals(buf, m + 8, port.identity)) {
        this.counts.dad++; // the guest asking for its own address: nobody else has it
        settle(b, i, Next.Consumed);
        return;
      }
      this.answerNs(b, i, port);
      return;
    }
    this.answerRs(b, i, port, srcUnspecified);
  }

  /** Neighbor Advertisement for the solicited target, from the switch's MAC. */
  private answerNs(b: Batch, i: number, port: VmPort): void {
    const buf = b.data;
    const ip = b.l3[i];
    buf.copy(this.peerAddr, 0, ip + IPV6_OFF_SRC, ip + IPV6_OFF_SRC + 16);
    buf.copy(this.target, 0, b.l4[i] + 8, b.l4[i] + 24);
    const at = b.start[i];
    const isRouter = this.target.equals(ROUTER_LINK_LOCAL);
    writeEthIpv6(buf, at, port.mac, ROUTER_MAC);
    const ipOut = at + ETH_HLEN;
    writeIcmp6Header(buf, ipOut, this.target, this.peerAddr, NA_LEN, ND_HOP_LIMIT);
    writeNeighborAdvert(buf, ipOut + IPV6_HLEN, this.target, ROUTER_MAC, true);
    if (!isRouter) buf[ipOut + IPV6_HLEN + 4] &= 0x7f; // R flag only for the router's own address
    sealIcmp6(buf, ipOut, NA_LEN);
    this.reply(b, i, at, ETH_HLEN + IPV6_HLEN + NA_LEN);
    this.counts.ns++;
  }

  /** Router Advertisement: default route via the switch, the MTU left after encapsulation. */
  private answerRs(b: Batch, i: number, port: VmPort, srcUnspecified: boolean): void {
    const buf = b.data;
    const ip = b.l3[i];
    if (srcUnspecified) ALL_NODES.copy(this.peerAddr);
    else buf.copy(this.peerAddr, 0, ip + IPV6_OFF_SRC, ip + IPV6_OFF_SRC + 16);
    const at = b.start[i];
    writeEthIpv6(buf, at, port.mac, ROUTER_MAC);
    const ipOut = at + ETH_HLEN;
    writeIcmp6Header(buf, ipOut, ROUTER_LINK_LOCAL, this.peerAddr, RA_LEN, ND_HOP_LIMIT);
    writeRouterAdvert(buf, ipOut + IPV6_HLEN, ROUTER_MAC, port.mtu, ROUTER_LIFETIME);
    sealIcmp6(buf, ipOut, RA_LEN);
    this.reply(b, i, at, ETH_HLEN + IPV6_HLEN + RA_LEN);
    this.counts.rs++;
  }

  private reply(b: Batch, i: number, at: number, len: number): void {
    b.start[i] = at;
    b.len[i] = len;
    b.outPort[i] = b.port[i];
    settle(b, i, Next.Reply);
  }
}
