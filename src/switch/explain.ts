// `explain`: how the switch decides SRC -> DST, step by step, by running the real miss
// path with a Trace attached: SDN Algorithm 1 on the sender's host (lookup, certificate
// and signature checks, policy, where the cable would go) and Algorithm 2 on the
// receiver's host (lookup of SRC, its binding checked against the sending host, policy
// at the receiver). Nothing is installed and no key exchange runs.

import { Drop, dropName } from '../base/drops.js';
import { PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from '../wire/ipv6.js';
import { parseIpv6Address } from '../base/address.js';
import { pairHash } from '../dataplane/pair-hash.js';
import { FlowMode, type DirectionDecision } from '../dataplane/decision.js';
import { Trace, type TraceStep } from '../base/trace.js';
import type { Host } from './host.js';

/** The source port assumed for a TCP/UDP question "may SRC reach DST's port P?". */
export const EPHEMERAL_PORT = 49152;

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
  const cable = await host.resolver.egress(port, dstBytes, pairHash(host.ports[port].identity, 0, dstBytes, 0), undefined, { negotiate: false, trace });
  if (cable.drop !== Drop.None || !packet) return { side: 'sender', host: host.name, steps: trace.steps, drop: cable.drop, rule: cable.rule };
  const p = packetCheck(cable.decision!, packet, 'sender', trace);
  return { side: 'sender', host: host.name, steps: trace.steps, drop: p.drop, rule: p.rule };
}

/** Algorithm 2 on `host`, where DST runs, for a request from `fromHost` at `fromAddress`. */
export async function explainReceiver(host: Host, src: string, dst: string, fromHost: string, fromAddress: number, packet?: Packet): Promise<Explanation> {
  const trace = new Trace();
  const r = await host.resolver.accept({ initiatorHost: fromHost, initiatorAddress: fromAddress, src, dst }, trace);
  if (!r.ok) {
    trace.step('decision', `unplug at the receiver: ${dropName(r.drop)} (${r.detail})`, 'fail');
    return { side: 'receiver', host: host.name, steps: trace.steps, drop: r.drop, rule: r.detail };
  }
  if (!packet) return { side: 'receiver', host: host.name, steps: trace.steps, drop: Drop.None, rule: r.cable.rule };
  const p = packetCheck(r.cable.decision!, packet, 'receiver', trace);
  return { side: 'receiver', host: host.name, steps: trace.steps, drop: p.drop, rule: p.rule };
}

/** The per-packet part of the decision for a first packet from SRC (a new flow), and the rule that settles it. */
function packetCheck(d: DirectionDecision, p: Packet, side: string, trace: Trace): { drop: Drop; rule: string } {
  const tcpUdp = p.proto === PROTO_TCP || p.proto === PROTO_UDP;
  const dport = p.port ?? (p.proto === PROTO_ICMPV6 ? 128 : -1);
  const sport = tcpUdp ? EPHEMERAL_PORT : -1;
  const what = `${protoName(p.proto)}${p.port !== undefined ? ` ${tcpUdp ? 'port' : 'type'} ${p.port}` : ''}`;
  let drop = d.filter ? d.filter.check(p.proto, sport, dport) : Drop.None;
  const rule = d.filter && drop !== Drop.None ? d.filter.decidingRule(p.proto, sport, dport) : d.rule;
  if (drop === Drop.None && d.flow === FlowMode.RepliesOnly) drop = Drop.PolicyInitiateOnly;
  const filter = d.filter ? d.filter.describe() : 'every packet';
  if (drop === Drop.None) {
    trace.step('packet', `${what} passes at the ${side} (cable carries ${filter}${d.flow === FlowMode.Opens ? '; opens a flow' : ''})`, 'ok');
  } else {
    trace.step('packet', `${what} refused at the ${side} by ${rule}: ${dropName(drop)} (cable carries ${filter}${d.flow === FlowMode.RepliesOnly ? ', replies only' : ''})`, 'fail');
  }
  return { drop, rule };
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
