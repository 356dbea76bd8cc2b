// `explain`: how the switch decides SRC -> DST, step by step, by running the real code with
// a Trace attached: SDN Algorithm 1 on the sender's host (lookup, certificate and signature
// checks, policy, where the cable would go) and Algorithm 2 on the receiver's host (lookup
// of SRC, its binding checked against the sending host, policy at the receiver). Asked
// about a packet, it runs the real cable-filter stage on a one-packet batch holding that
// packet (a first packet of a new flow from SRC). Nothing is installed, no key exchange
// runs, and the question opens no flow of the live switch (the cable gets flows of its own).

import { Drop, dropName } from '../base/drops.js';
import { parseIpv6Address } from '../base/address.js';
import { Trace, type TraceStep } from '../base/trace.js';
import { Batch, FRAME_OFFSET, Next } from '../dataplane/batch.js';
import type { Cable } from '../dataplane/cable.js';
import { CableFilter, settledBy } from '../dataplane/cable-filter.js';
import { ETH_HLEN } from '../wire/ethernet.js';
import { ICMP6_ECHO_REQUEST } from '../wire/icmpv6.js';
import { IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_NEXT, IPV6_OFF_PLEN, IPV6_OFF_SRC, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from '../wire/ipv6.js';
import type { Host } from './host.js';

/** The source port assumed for a TCP/UDP question "may SRC reach DST's port P?". */
export const EPHEMERAL_PORT = 49152;
const TCP_SYN = 0x02;

export interface Packet {
  readonly proto: number;
  /** Destination port for TCP/UDP, the ICMPv6 type for ICMPv6 (default echo request). */
  readonly port?: number;
}

export interface Explanation {
  readonly side: 'sender' | 'receiver';
  readonly host: string;
  readonly steps: readonly TraceStep[];
  /** Drop.None: plugged (and the packet, if one was asked about, passes). */
  readonly drop: Drop;
  readonly rule: string;
}

/** Algorithm 1 on `host`, where SRC runs. */
export async function explainSender(host: Host, src: string, dst: string, packet?: Packet): Promise<Explanation> {
  const port = host.portIndex(src);
  if (port === undefined) throw new Error(`${src} is not a VM of ${host.name}`);
  const trace = new Trace();
  const dstBytes = parseIpv6Address(dst);
  const cable = await host.sender.plug(port, dstBytes, undefined, { negotiate: false, trace, privateFlows: true });
  if (cable.drop !== Drop.None || !packet) return { side: 'sender', host: host.name, steps: trace.steps, drop: cable.drop, rule: cable.rule };
  const p = runFilter('egress-filter', cable, packet, host.ports.at(port).mtu, trace);
  return { side: 'sender', host: host.name, steps: trace.steps, ...p };
}

/** Algorithm 2 on `host`, where DST runs, for a request from `fromHost` at `fromAddress`. */
export async function explainReceiver(host: Host, src: string, dst: string, fromHost: string, fromAddress: number, packet?: Packet): Promise<Explanation> {
  const trace = new Trace();
  const r = await host.receiver.accept({ initiatorHost: fromHost, initiatorAddress: fromAddress, src, dst }, trace, true);
  if (!r.ok) {
    trace.step('decision', `unplug at the receiver: ${dropName(r.drop)} (${r.detail})`, 'fail');
    return { side: 'receiver', host: host.name, steps: trace.steps, drop: r.drop, rule: r.detail };
  }
  if (!packet) return { side: 'receiver', host: host.name, steps: trace.steps, drop: Drop.None, rule: r.cable.rule };
  const p = runFilter('ingress-filter', r.cable, packet, host.ports.at(r.cable.localPort).mtu, trace);
  return { side: 'receiver', host: host.name, steps: trace.steps, ...p };
}

/** The real per-packet policy stage on a batch of one packet: SRC -> DST, a new flow. */
function runFilter(name: string, cable: Cable, packet: Packet, mtu: number, trace: Trace): { drop: Drop; rule: string } {
  const b = new Batch();
  const ip = FRAME_OFFSET + ETH_HLEN;
  const { proto, l4Len, sport, dport } = writeProbe(b.data, ip, cable, packet);
  b.count = 1;
  b.init(0, ip, Math.min(IPV6_HLEN + l4Len, mtu), 0, 0);
  b.l3[0] = ip;
  b.l4[0] = ip + IPV6_HLEN;
  b.proto[0] = proto;
  b.ref[0] = cable;
  const filter = new CableFilter(name);
  filter.trace = trace;
  filter.process(b, Date.now());
  if (b.next[0] !== Next.Drop) return { drop: Drop.None, rule: cable.rule };
  const drop = b.reason[0] as Drop;
  return { drop, rule: settledBy(cable.decision!, drop, proto, sport, dport) };
}

/** An IPv6 packet from the cable's SRC to its DST: a TCP SYN, a UDP datagram, an ICMPv6 message (echo request by default). */
function writeProbe(buf: Buffer, ip: number, cable: Cable, p: Packet): { proto: number; l4Len: number; sport: number; dport: number } {
  const l4 = ip + IPV6_HLEN;
  const tcpUdp = p.proto === PROTO_TCP || p.proto === PROTO_UDP;
  const sport = tcpUdp ? EPHEMERAL_PORT : -1;
  const dport = p.port ?? (p.proto === PROTO_ICMPV6 ? ICMP6_ECHO_REQUEST : -1);
  const l4Len = p.proto === PROTO_TCP ? 20 : 8;
  buf.fill(0, ip, l4 + l4Len);
  buf[ip] = 0x60;
  buf.writeUInt16BE(l4Len, ip + IPV6_OFF_PLEN);
  buf[ip + IPV6_OFF_NEXT] = p.proto;
  cable.src.copy(buf, ip + IPV6_OFF_SRC);
  cable.dst.copy(buf, ip + IPV6_OFF_DST);
  if (tcpUdp) {
    buf.writeUInt16BE(sport, l4);
    buf.writeUInt16BE(Math.max(dport, 0), l4 + 2);
    if (p.proto === PROTO_TCP) {
      buf[l4 + 12] = 5 << 4; // data offset: 5 words
      buf[l4 + 13] = TCP_SYN;
    }
  } else if (p.proto === PROTO_ICMPV6) {
    buf[l4] = dport;
    buf.writeUInt16BE(1, l4 + 4); // echo identifier
  }
  return { proto: p.proto, l4Len, sport, dport };
}

export function protoName(proto: number): string {
  return proto === PROTO_TCP ? 'tcp' : proto === PROTO_UDP ? 'udp' : proto === PROTO_ICMPV6 ? 'icmp' : `protocol ${proto}`;
}

/** Text of an explanation: numbered steps, then the verdict. */
export function formatExplanation(e: Explanation): string {
  const t = new Trace();
  t.steps.push(...e.steps);
  const verdict = e.drop === Drop.None ? `PLUG (${e.rule})` : `UNPLUG: ${dropName(e.drop)} (${e.rule})`;
  return `${e.side} ${e.host}:\n${t.format()}\n  => ${verdict}\n`;
}
