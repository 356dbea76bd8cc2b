// One line per cable of a host, for `nvi-switch cables`: the pair (and VM names), where it
// goes, its state and the rule that decided it, its SA, counters and age.

import { dropName } from '../base/drops.js';
import { formatIpv4 } from '../base/address.js';
import { msOf } from '../base/ticks.js';
import { CableDirection, type Cable } from '../dataplane/cable.js';
import { FlowMode } from '../dataplane/decision.js';
import type { Host } from './host.js';

export interface CableInfo {
  readonly direction: 'egress' | 'ingress';
  readonly src: string;
  readonly dst: string;
  readonly srcVm?: string;
  readonly dstVm?: string;
  readonly peer: string;
  readonly state: string;
  readonly rule: string;
  readonly revision?: number;
  /** The far end's binding epoch the cable was verified against. */
  readonly epoch?: number;
  readonly sa?: string;
  readonly packets: number;
  readonly bytes: number;
  readonly drops: number;
  readonly ageSeconds: number;
}

/** Every cable of `host`, egress then ingress; `vmOf` names identities. */
export function cableInfo(host: Host, vmOf: ReadonlyMap<string, string>, now: number): CableInfo[] {
  const info = (c: Cable): CableInfo => {
    const inbound = host.sas.inboundOf(c);
    return {
      direction: c.direction === CableDirection.Egress ? 'egress' : 'ingress',
      src: c.srcText,
      dst: c.dstText,
      srcVm: vmOf.get(c.srcText),
      dstVm: vmOf.get(c.dstText),
      peer: c.localPort >= 0 && c.direction === CableDirection.Egress ? 'this host' : c.peerHost || (c.peerAddr ? formatIpv4(c.peerAddr) : '-'),
      state: state(c),
      rule: c.rule,
      revision: c.decision?.revision,
      epoch: c.epoch || undefined,
      sa: c.sa ? `0x${c.sa.spi.toString(16)} seq ${c.sa.seqHi * 2 ** 32 + c.sa.seqLo}` : inbound && `0x${inbound.spi.toString(16)} in, ${inbound.packets} packets`,
      packets: c.packets,
      bytes: c.bytes,
      drops: c.drops,
      ageSeconds: Math.round((now - msOf(now, c.plugTick)) / 1000),
    };
  };
  return [...host.egressCables.all(), ...host.ingressCables.all()].map(info);
}

function state(c: Cable): string {
  if (!c.plugged) return `unplugged: ${dropName(c.drop)}`;
  if (c.decision?.flow === FlowMode.Opens) return 'plugged, opens flows';
  if (c.decision?.flow === FlowMode.RepliesOnly) return 'plugged, replies only';
  return 'plugged';
}
