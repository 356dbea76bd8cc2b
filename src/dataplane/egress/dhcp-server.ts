// Egress stage 3: the switch is every VM's DHCPv6 server (RFC 8415), so that an unmodified
// guest configures its identity by itself: the Router Advertisement carries the M flag, the
// guest asks, and the only address it is ever given is its identity, as a /128 with infinite
// lifetimes (the identity never changes, wherever the VM runs). A guest that then sends from
// any other address is refused by ip-guard as before.
//
// Only messages to the servers' multicast address (or the switch's link-local) on port 547 are
// taken; they never leave the host. A VM that speaks as a server or relay is refused
// (dhcp/server-only), a message that breaks the format is refused (dhcp/malformed), and a
// Request, Renew, Release or Decline for another server is absorbed (counts.ignored).
//
// The answer is built in a scratch buffer (it quotes the request), then written over the
// request's slot and sent back out of the port it came from (Next.Reply): no allocation.

import { Next, type Batch } from '../batch.js';
import { Drop } from '../../base/drops.js';
import { ETH_HLEN, ETH_OFF_SRC, writeEthIpv6 } from '../../wire/ethernet.js';
import {
  ALL_DHCP_SERVERS, DHCP_SERVER_PORT, DhcpMsg, DhcpOpt, DhcpStatus, DhcpWriter, newDhcpRequest, readDhcp, udp6Checksum,
} from '../../wire/dhcpv6.js';
import { addrEquals, IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_SRC, PROTO_UDP, writeIpv6Header } from '../../wire/ipv6.js';
import { drop, settle, type Stage } from '../stage.js';
import type { PortTable } from '../port-table.js';
import { ROUTER_LINK_LOCAL, ROUTER_MAC } from '../vm-port.js';

const UDP_HLEN = 8;
/** The switch's DUID: DUID-LL (type 3), Ethernet (hardware type 1), the switch's MAC. */
export const SERVER_DUID = Buffer.concat([Buffer.from([0, 3, 0, 1]), ROUTER_MAC]);
/** IA_NAs answered per message (the first gets the identity, the rest NoAddrsAvail). */
const MAX_IAS = 8;

export class DhcpServer implements Stage {
  readonly name = 'dhcp-server';
  readonly drops = [Drop.DhcpMalformed, Drop.DhcpServerOnly];
  readonly outputs = [Next.Consumed, Next.Reply];
  /** Messages answered by type, and those meant for another server. */
  readonly counts = { solicit: 0, request: 0, renew: 0, rebind: 0, confirm: 0, release: 0, decline: 0, information: 0, ignored: 0 };
  private readonly req = newDhcpRequest();
  private readonly out = Buffer.alloc(ETH_HLEN + IPV6_HLEN + UDP_HLEN + 4 + (4 + 130) + (4 + SERVER_DUID.length) + MAX_IAS * 44 + 16);
  private readonly w = new DhcpWriter(this.out, 0);

  constructor(private readonly ports: PortTable) {}

  process(b: Batch): void {
    const buf = b.data;
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active || b.proto[i] !== PROTO_UDP || b.l4[i] < 0) continue;
      const u = b.l4[i];
      const ip = b.l3[i];
      if (((buf[u + 2] << 8) | buf[u + 3]) !== DHCP_SERVER_PORT) continue;
      if (!addrEquals(buf, ip + IPV6_OFF_DST, ALL_DHCP_SERVERS) && !addrEquals(buf, ip + IPV6_OFF_DST, ROUTER_LINK_LOCAL)) continue;
      this.serve(b, i);
    }
  }

  private serve(b: Batch, i: number): void {
    const buf = b.data;
    const ip = b.l3[i];
    const u = b.l4[i];
    const udpLen = (buf[u + 4] << 8) | buf[u + 5];
    const end = b.start[i] + b.len[i];
    // A zero checksum is not allowed over IPv6 (RFC 8200 8.1); a wrong one is refused.
    if (udpLen < UDP_HLEN || u + udpLen > end || ((buf[u + 6] | buf[u + 7]) === 0) || udp6Checksum(buf, ip, u, udpLen) !== 0) {
      drop(b, i, Drop.DhcpMalformed);
      return;
    }
    const req = this.req;
    if (readDhcp(buf, u + UDP_HLEN, u + udpLen, req) !== null) {
      drop(b, i, Drop.DhcpMalformed);
      return;
    }
    const ours = req.serverId !== null && req.serverId.len === SERVER_DUID.length && SERVER_DUID.equals(buf.subarray(req.serverId.off, req.serverId.off + req.serverId.len));
    let reply: number;
    switch (req.type) {
      case DhcpMsg.Advertise: case DhcpMsg.Reply: case DhcpMsg.Reconfigure: case DhcpMsg.RelayForw: case DhcpMsg.RelayRepl:
        drop(b, i, Drop.DhcpServerOnly);
        return;
      case DhcpMsg.Solicit:
      case DhcpMsg.Rebind:
      case DhcpMsg.Confirm:
        // RFC 8415 16.2, 16.5, 16.7: a client ID, and no server ID.
        if (req.clientId === null || req.serverId !== null) {
          drop(b, i, Drop.DhcpMalformed);
          return;
        }
        reply = req.type === DhcpMsg.Solicit && !req.rapidCommit ? DhcpMsg.Advertise : DhcpMsg.Reply;
        break;
      case DhcpMsg.Request: case DhcpMsg.Renew: case DhcpMsg.Release: case DhcpMsg.Decline:
        // 16.4, 16.6, 16.9, 16.10: both IDs; one for another server is not ours to answer.
        if (req.clientId === null || req.serverId === null) {
          drop(b, i, Drop.DhcpMalformed);
          return;
        }
        if (!ours) {
          this.counts.ignored++;
          settle(b, i, Next.Consumed);
          return;
        }
        reply = DhcpMsg.Reply;
        break;
      case DhcpMsg.InformationRequest:
        if (req.serverId !== null && !ours) {
          this.counts.ignored++;
          settle(b, i, Next.Consumed);
          return;
        }
        reply = DhcpMsg.Reply;
        break;
      default:
        drop(b, i, Drop.DhcpMalformed);
        return;
    }
    this.answer(b, i, reply);
  }

  /** Build the answer to the request in slot i, then put it in the slot and send it back. */
  private answer(b: Batch, i: number, type: number): void {
    const buf = b.data;
    const req = this.req;
    const port = this.ports.at(b.port[i]);
    const out = this.out;
    const ip = b.l3[i];
    const u = b.l4[i];
    const w = this.w;
    w.at = ETH_HLEN + IPV6_HLEN + UDP_HLEN;
    w.header(type, req.xid);
    w.copy(DhcpOpt.ServerId, SERVER_DUID, 0, SERVER_DUID.length);
    if (req.clientId) w.copy(DhcpOpt.ClientId, buf, req.clientId.off, req.clientId.len);
    switch (req.type) {
      case DhcpMsg.Solicit: case DhcpMsg.Request: case DhcpMsg.Renew: case DhcpMsg.Rebind:
        this.counts[req.type === DhcpMsg.Solicit ? 'solicit' : req.type === DhcpMsg.Request ? 'request' : req.type === DhcpMsg.Renew ? 'renew' : 'rebind']++;
        if (req.iaids.length === 0) w.status(DhcpStatus.NoAddrsAvail);
        for (let k = 0; k < req.iaids.length && k < MAX_IAS; k++) {
          w.iaNa(req.iaids[k], k === 0 ? port.identity : null, DhcpStatus.NoAddrsAvail);
        }
        if (req.type === DhcpMsg.Solicit && req.rapidCommit) w.empty(DhcpOpt.RapidCommit);
        break;
      case DhcpMsg.Confirm: {
        this.counts.confirm++;
        // On link only if every address the client holds is its identity.
        let onLink = true;
        for (const a of req.iaAddr) if (a >= 0 && !addrEquals(buf, a, port.identity)) onLink = false;
        w.status(onLink ? DhcpStatus.Success : DhcpStatus.NotOnLink);
        break;
      }
      case DhcpMsg.Release: case DhcpMsg.Decline:
        this.counts[req.type === DhcpMsg.Release ? 'release' : 'decline']++;
        w.status(DhcpStatus.Success);
        break;
      default:
        this.counts.information++;
    }
    const udpLen = w.at - ETH_HLEN - IPV6_HLEN;
    // Headers: to the client's MAC and address, from the switch's, port 547 to its source port.
    writeEthIpv6(out, 0, buf.subarray(b.start[i] + ETH_OFF_SRC, b.start[i] + ETH_OFF_SRC + 6), ROUTER_MAC);
    const oip = ETH_HLEN;
    writeIpv6Header(out, oip, ROUTER_LINK_LOCAL, buf.subarray(ip + IPV6_OFF_SRC, ip + IPV6_OFF_SRC + 16), udpLen, PROTO_UDP, 64);
    const ou = oip + IPV6_HLEN;
    out[ou] = DHCP_SERVER_PORT >> 8;
    out[ou + 1] = DHCP_SERVER_PORT & 0xff;
    out[ou + 2] = buf[u];
    out[ou + 3] = buf[u + 1];
    out[ou + 4] = udpLen >> 8;
    out[ou + 5] = udpLen & 0xff;
    out[ou + 6] = 0;
    out[ou + 7] = 0;
    const c = udp6Checksum(out, oip, ou, udpLen) || 0xffff;
    out[ou + 6] = c >> 8;
    out[ou + 7] = c & 0xff;
    const at = b.start[i];
    out.copy(buf, at, 0, w.at);
    b.start[i] = at;
    b.len[i] = w.at;
    b.outPort[i] = b.port[i];
    settle(b, i, Next.Reply);
  }
}
