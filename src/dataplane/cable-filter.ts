// The per-packet part of policy, for both directions: what a plug-time decision could not
// settle alone. The protocol/port filter, fragments on port-dependent cables, and the flow
// state of initiate-only pairs (the opener's packets open flows, the other side may only
// answer them). Cables whose decision passes every packet skip it at once.
//
// `explain` attaches a Trace and runs this same stage on a one-packet batch: each packet's
// verdict is then recorded with the rule that settled it. With no trace attached the
// recording costs one null check per packet on cables that filter.

import { Next, PacketFlag, type Batch } from './batch.js';
import type { Cable } from './cable.js';
import { Drop, dropName } from '../base/drops.js';
import type { Trace } from '../base/trace.js';
import { PROTO_ICMPV6, PROTO_TCP, PROTO_UDP } from '../wire/ipv6.js';
import { drop, type Stage } from './stage.js';
import { FlowMode, type DirectionDecision } from './decision.js';

const ICMP6_ECHO_REQUEST = 128;
const ICMP6_ECHO_REPLY = 129;
const TCP_OFF_FLAGS = 13;

export class CableFilter implements Stage {
  readonly drops = [Drop.PolicyProtoPort, Drop.PolicyUnplugRule, Drop.PolicyFragment, Drop.PolicyInitiateOnly, Drop.PolicyFlowTableFull];
  readonly outputs = [];
  /** Set by explain: every packet's verdict is recorded here. */
  trace: Trace | null = null;

  constructor(readonly name: string) {}

  process(b: Batch, now: number): void {
    const buf = b.data;
    const nowSec = Math.floor(now / 1000);
    for (let i = 0; i < b.count; i++) {
      if (b.next[i] !== Next.Active) continue;
      const c = b.ref[i] as Cable;
      const d = c.decision;
      if (d === null || (d.filter === null && d.flow === FlowMode.None)) {
        if (this.trace !== null) this.record(c, b.proto[i], -1, -1, Drop.None);
        continue;
      }
      const proto = b.proto[i];
      const l4 = b.l4[i];
      let sport = -1;
      let dport = -1;
      if ((b.flags[i] & PacketFlag.LaterFragment) === 0 && l4 >= 0) {
        if (proto === PROTO_TCP || proto === PROTO_UDP) {
          sport = (buf[l4] << 8) | buf[l4 + 1];
          dport = (buf[l4 + 2] << 8) | buf[l4 + 3];
        } else if (proto === PROTO_ICMPV6) {
          dport = buf[l4];
        }
      }
      let r = d.filter !== null ? d.filter.check(proto, sport, dport) : Drop.None;
      if (r === Drop.None && d.flow !== FlowMode.None && c.flows !== null) {
        r = d.flow === FlowMode.Opens
          ? this.open(c, buf, proto, l4, sport, dport, nowSec)
          : this.answer(c, buf, proto, l4, sport, dport, nowSec);
      }
      if (this.trace !== null) this.record(c, proto, sport, dport, r);
      if (r !== Drop.None) {
        c.drops++;
        drop(b, i, r);
      }
    }
  }

  /** Explain's record of one packet's verdict and the rule that settled it (slow path). */
  private record(c: Cable, proto: number, sport: number, dport: number, r: Drop): void {
    const d = c.decision;
    const what = `${protoText(proto)}${proto === PROTO_TCP || proto === PROTO_UDP ? ` port ${dport}` : proto === PROTO_ICMPV6 ? ` type ${dport}` : ''}`;
    const carries = d === null || d.filter === null ? 'every packet' : d.filter.describe();
    if (r === Drop.None) {
      this.trace!.step(this.name, `${what} passes (cable carries ${carries}${d?.flow === FlowMode.Opens ? '; opens a flow' : ''})`, 'ok');
      return;
    }
    const flowsOnly = d!.flow === FlowMode.RepliesOnly ? ', replies only' : '';
    this.trace!.step(this.name, `${what} refused by ${settledBy(d!, r, proto, sport, dport)}: ${dropName(r)} (cable carries ${carries}${flowsOnly})`, 'fail');
  }

  /** A packet from the side that may open flows: record the flow. */
  private open(c: Cable, buf: Uint8Array, proto: number, l4: number, sport: number, dport: number, nowSec: number): Drop {
    const flows = c.flows!;
    if (proto === PROTO_TCP || proto === PROTO_UDP) {
      return sport < 0 ? Drop.None : flows.opened(proto, sport, dport, nowSec);
    }
    if (proto === PROTO_ICMPV6 && l4 >= 0 && buf[l4] === ICMP6_ECHO_REQUEST) {
      return flows.opened(proto, (buf[l4 + 4] << 8) | buf[l4 + 5], 0, nowSec);
    }
    return Drop.None;
  }

  /** A packet from the side that may only answer: it must belong to a flow the other side opened. */
  private answer(c: Cable, buf: Uint8Array, proto: number, l4: number, sport: number, dport: number, nowSec: number): Drop {
    const flows = c.flows!;
    if (proto === PROTO_TCP || proto === PROTO_UDP) {
      if (sport < 0) return Drop.PolicyInitiateOnly; // a later fragment cannot be matched to a flow
      const tcpFlags = proto === PROTO_TCP ? buf[l4 + TCP_OFF_FLAGS] : 0;
      return flows.isReply(proto, sport, dport, tcpFlags, nowSec) ? Drop.None : Drop.PolicyInitiateOnly;
    }
    if (proto === PROTO_ICMPV6 && l4 >= 0 && buf[l4] === ICMP6_ECHO_REPLY) {
      return flows.isReply(proto, 0, (buf[l4 + 4] << 8) | buf[l4 + 5], 0, nowSec) ? Drop.None : Drop.PolicyInitiateOnly;
    }
    return Drop.PolicyInitiateOnly;
  }
}

/** The rule that refused a packet: the filter entry that matched, or the cable's rule for flow refusals. */
export function settledBy(d: DirectionDecision, r: Drop, proto: number, sport: number, dport: number): string {
  const flowRefusal = r === Drop.PolicyInitiateOnly || r === Drop.PolicyFlowTableFull;
  return d.filter !== null && !flowRefusal ? d.filter.decidingRule(proto, sport, dport) : d.rule;
}

function protoText(proto: number): string {
  return proto === PROTO_TCP ? 'tcp' : proto === PROTO_UDP ? 'udp' : proto === PROTO_ICMPV6 ? 'icmp' : `protocol ${proto}`;
}
