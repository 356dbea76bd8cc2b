// SDN Algorithm 2, at the receiver's hypervisor, for a remote SRC sending to a local VM DST:
//   1. look SRC up in the mapping store;
//   2-3. verify Cert(SRC) and Sign(SRC, Physical-SIP), and that the binding places SRC at
//        the host the request or packet came from; on failure unplug at the receiver;
//   4-5. evaluate the tenant policy for SRC -> DST; unplug or plug at the receiver;
//   6. answer the key exchange (key-exchange.ts installs the SA for a plugged cable).
// Two entries: accept() for a key-exchange request, plug() for a plain IPv6-in-IPv4 packet
// whose pair has no cable yet. Neither rejects: a refusal is a reason.

import { Drop, dropName } from '../base/drops.js';
import { formatIpv4, formatIpv6, parseIpv6Address } from '../base/address.js';
import type { Clock } from '../base/clock.js';
import type { Trace } from '../base/trace.js';
import { Cable, CableDirection } from '../dataplane/cable.js';
import type { DirectionDecision } from '../dataplane/decision.js';
import type { VmPort } from '../dataplane/vm-port.js';
import type { Policy } from '../policy/decision.js';
import type { BindingRecord } from '../trust/records.js';
import type { BindingLookup } from './binding-lookup.js';
import { gone, RETRY_MS, type CableMaker } from './cable-maker.js';
import type { BindingVerifierLike, HostView } from './host-view.js';

export interface AcceptRequest {
  readonly initiatorHost: string;
  /** The underlay address the request came from (uint32). */
  readonly initiatorAddress: number;
  readonly src: string;
  readonly dst: string;
}

export type AcceptResult =
  | { readonly ok: true; readonly cable: Cable }
  | { readonly ok: false; readonly drop: Drop; readonly detail: string };

type Checked =
  | { readonly kind: 'store-error'; readonly drop: Drop; readonly detail: string }
  | { readonly kind: 'refused'; readonly drop: Drop; readonly detail: string; readonly decision: DirectionDecision | null }
  | { readonly kind: 'plug'; readonly record: BindingRecord; readonly decision: DirectionDecision };

export class Receiver {
  constructor(
    private readonly host: HostView,
    private readonly lookup: BindingLookup,
    private readonly verifier: BindingVerifierLike,
    private readonly policy: () => Policy,
    private readonly maker: CableMaker,
    private readonly clock: Clock,
  ) {}

  /**
   * A key-exchange request: the initiating host asks to plug src -> dst. Returns the ingress
   * cable to install with the new inbound SA, or why not. `privateFlows`: explain's question.
   */
  async accept(req: AcceptRequest, trace?: Trace, privateFlows = false): Promise<AcceptResult> {
    const now = this.clock.now();
    const portIndex = this.host.portIndex(req.dst);
    if (portIndex === undefined) return { ok: false, drop: Drop.InnerUnknownDestination, detail: `${req.dst} is not a VM of ${this.host.name}` };
    const port = this.host.ports.at(portIndex);
    const r = await this.checks(req.src, port, formatIpv4(req.initiatorAddress), req.initiatorHost, trace);
    if (r.kind === 'store-error') return { ok: false, drop: r.drop, detail: r.detail };
    if (r.kind === 'refused') return { ok: false, drop: r.drop, detail: r.detail };
    const src = parseIpv6Address(req.src);
    const cable = new Cable(CableDirection.Ingress, src, port.identity, Drop.None, r.decision.rule, r.decision, now);
    cable.localPort = portIndex;
    cable.peerAddr = req.initiatorAddress;
    cable.peerHost = req.initiatorHost;
    cable.flows = this.maker.flowsFor(r.decision, port.identityText, req.src, privateFlows);
    this.maker.plugged(cable, now, r.decision, r.record);
    return { ok: true, cable };
  }

  /**
   * A plain IPv6-in-IPv4 packet from `outerSrc`: the cable src -> the local VM on `portIndex`.
   * Also the refresh of a plugged cable (`previous`), plain or ESP: an ESP cable's SA was
   * negotiated with a host, which its binding must still name, and which the new cable keeps.
   */
  async plug(src: Buffer, portIndex: number, outerSrc: number, previous: Cable | undefined, trace?: Trace): Promise<Cable> {
    const maker = this.maker;
    if (!this.host.ports.has(portIndex)) return gone(previous!, this.clock.now());
    const port = this.host.ports.at(portIndex);
    const now = this.clock.now();
    const srcText = formatIpv6(src);
    const peerHost = previous?.peerHost ?? '';
    const r = await this.checks(srcText, port, formatIpv4(outerSrc), peerHost || undefined, trace);
    const make = (drop: Drop, rule: string, decision: DirectionDecision | null): Cable => {
      const c = new Cable(CableDirection.Ingress, src, port.identity, drop, rule, decision, now);
      c.localPort = portIndex;
      c.peerAddr = outerSrc;
      c.peerHost = peerHost;
      return c;
    };
    if (r.kind === 'store-error') {
      if (previous?.plugged) return maker.keepWhileStoreDown(previous, now, trace);
      return maker.unplugged(make(r.drop, r.detail, null), now, RETRY_MS, trace);
    }
    if (r.kind === 'refused') {
      if (r.drop === Drop.VerifyOldEpoch && previous?.plugged) return maker.keepVerified(previous, now, trace);
      return maker.unplugged(make(r.drop, r.detail, r.decision), now, r.drop === Drop.UpcallRateLimited ? RETRY_MS : maker.negativeMs, trace);
    }
    const cable = make(Drop.None, r.decision.rule, r.decision);
    cable.flows = maker.flowsFor(r.decision, port.identityText, srcText);
    return maker.plugged(cable, now, r.decision, r.record);
  }

  /** Steps 1-5 for src -> the local VM on `port`, from `fromAddress` (and `fromHost`). */
  private async checks(srcText: string, port: VmPort, fromAddress: string, fromHost: string | undefined, trace?: Trace): Promise<Checked> {
    trace?.step('upcall', `receiver check for ${srcText} -> ${port.name} (${port.identityText}) from ${fromHost ?? fromAddress}`);
    let found = await this.lookup.find(srcText, trace);
    if ('error' in found) return { kind: 'store-error', drop: found.drop, detail: found.error };
    if (!found.record) return { kind: 'refused', drop: Drop.ResolveNotFound, detail: `no binding for ${srcText}`, decision: null };
    const expect = fromHost === undefined ? { hostAddress: fromAddress } : { hostAddress: fromAddress, host: fromHost };
    let verdict = await this.verifier.verify(found.record, expect, trace);
    if (verdict === Drop.VerifyWrongHostAddress) {
      // SRC may have just moved to the asking host, and this host's replica not heard of it
      // yet: the store itself decides (a newer binding, or the same refusal).
      const again = await this.lookup.latest(srcText, trace);
      if (!('error' in again) && again.record && again.record.epoch > found.record.epoch) {
        found = again;
        verdict = await this.verifier.verify(again.record, expect, trace);
      }
    }
    if (verdict !== Drop.None) return { kind: 'refused', drop: verdict, detail: `binding of ${srcText}: ${dropName(verdict)}`, decision: null };
    const decision = this.policy().decide(srcText, port.identityText, this.clock.now(), trace);
    if (decision.drop !== Drop.None) return { kind: 'refused', drop: decision.drop, detail: decision.rule, decision };
    trace?.step('decision', `plug ${srcText} -> ${port.identityText} at the receiver by ${decision.rule}`, 'ok');
    return { kind: 'plug', record: found.record!, decision };
  }
}
