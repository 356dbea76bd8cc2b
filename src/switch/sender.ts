// SDN Algorithm 1, at the sender's hypervisor, for a local VM SRC sending to DST:
//   1. look DST up in the mapping store (binding-lookup.ts);
//   2-3. verify Cert(DST) and Sign(DST, Physical-IP); on failure unplug at the sender;
//   4-5. evaluate the tenant policy for SRC -> DST; unplug or plug;
//   6. for a remote DST with encryption, negotiate the ESP SA with DST's host (which runs
//      Algorithm 2, receiver.ts, before it installs anything); packets wait until it exists.
// Step 6 needs only DST's host and its address: on the live miss path its INIT leaves right
// after step 1 (once that host's certificate is checked for that address), and its round trip
// overlaps 2-5 (startEarly()). Its SA is used only if every check passes; otherwise its key
// goes at once. The checks, their order and their verdicts are the same either way.
//
// Every failure becomes an unplugged cable carrying its Drop reason, so plug() never
// rejects and the data path counts each refused packet under the reason found here.

import { Drop, dropName } from '../base/drops.js';
import { formatIpv6, parseIpv4Address } from '../base/address.js';
import type { Clock } from '../base/clock.js';
import type { Trace } from '../base/trace.js';
import { Cable, CableDirection } from '../dataplane/cable.js';
import type { DirectionDecision } from '../dataplane/decision.js';
import type { VmPort } from '../dataplane/vm-port.js';
import type { OutboundSa } from '../esp/sa.js';
import type { Policy } from '../policy/decision.js';
import type { BindingRecord } from '../trust/records.js';
import { makeOuterTemplate } from '../wire/ipv4.js';
import { PROTO_ESP, PROTO_IPV6 } from '../wire/ipv6.js';
import type { BindingLookup } from './binding-lookup.js';
import { gone, RETRY_MS, type CableMaker } from './cable-maker.js';
import type { HostView, BindingVerifierLike } from './host-view.js';
import type { KeyExchange, SaResult } from './key-exchange.js';

export interface PlugOptions {
  /** false (explain): describe the key exchange instead of running it. */
  readonly negotiate: boolean;
  readonly trace?: Trace;
  /** A flow table of its own (explain), not the live one of the pair. */
  readonly privateFlows?: boolean;
  /** The SA the process before this one sent on to `peer` (handover.ts): used instead of a key exchange if the peer is still its host. */
  readonly handedOver?: { readonly sa: OutboundSa; readonly peer: number };
}

/** A key exchange under way (step 6 started early). */
interface Negotiation {
  readonly result: Promise<SaResult>;
}

/** A miss being answered: what steps 2-6 need of it. */
interface Miss {
  readonly port: VmPort;
  readonly dst: Buffer;
  readonly dstText: string;
  readonly now: number;
  /** The cable being verified again, if any. */
  readonly previous: Cable | undefined;
  readonly opts: PlugOptions;
  /** A cable of the pair: plugged (Drop.None) or unplugged with `drop`, by `rule`. */
  make(drop: Drop, rule: string, decision: DirectionDecision | null): Cable;
}

export class Sender {
  /** Outer IPv4 header templates, one per (peer host, protocol), shared by all its cables so it stays in cache. */
  private readonly outers = new Map<string, Buffer>();

  constructor(
    private readonly host: HostView,
    private readonly lookup: BindingLookup,
    private readonly verifier: BindingVerifierLike,
    /** The policy in force now (it changes when the store's policy changes). */
    private readonly policy: () => Policy,
    private readonly keys: KeyExchange,
    private readonly maker: CableMaker,
    private readonly clock: Clock,
  ) {}

  /** The cable for the VM on `portIndex` -> dst, plugged or not; `previous` is the cable being verified again. */
  async plug(portIndex: number, dst: Buffer, previous: Cable | undefined, opts: PlugOptions = { negotiate: true }): Promise<Cable> {
    const { trace } = opts;
    const maker = this.maker;
    if (!this.host.ports.has(portIndex)) return gone(previous!, this.clock.now());
    const port = this.host.ports.at(portIndex);
    const activating = this.host.whenActive(portIndex);
    if (activating) {
      trace?.step('upcall', `${port.name} has just arrived: waiting for its binding to be published`, 'info');
      await activating;
    }
    const now = this.clock.now();
    const dstText = formatIpv6(dst);
    const make = (drop: Drop, rule: string, decision: DirectionDecision | null): Cable => {
      const c = new Cable(CableDirection.Egress, port.identity, dst, drop, rule, decision, now);
      c.srcPort = portIndex;
      return c;
    };
    trace?.step('upcall', `miss for ${port.name} (${port.identityText}) -> ${dstText} on host ${this.host.name}`);

    if (activating && this.host.ports.at(portIndex) !== port) {
      return maker.unplugged(make(Drop.PortGone, 'the VM port was detached', null), now, 0, trace); // its activation failed
    }

    // 1. Where does DST live?
    const found = await this.lookup.find(dstText, trace);
    if ('error' in found) {
      if (previous?.plugged) return maker.keepWhileStoreDown(previous, now, trace);
      return maker.unplugged(make(found.drop, found.error, null), now, RETRY_MS, trace);
    }
    const rec = found.record;
    if (!rec) return maker.unplugged(make(Drop.ResolveNotFound, `no binding for ${dstText}`, null), now, maker.negativeMs, trace);

    const miss: Miss = { port, dst, dstText, now, previous, opts, make };
    const early = await this.startEarly(miss, rec);
    const cable = await this.checkAndPlug(miss, rec, early);
    if (early) void early.result.then((r) => r.ok && r.sa !== cable.sa && this.keys.discard(r.sa));
    return cable;
  }

  /** Steps 2-6 for the binding found; `early`: step 6 already under way. */
  private async checkAndPlug(miss: Miss, rec: BindingRecord, early: Negotiation | undefined): Promise<Cable> {
    const { port, dstText, now, previous, opts, make } = miss;
    const { trace } = opts;
    const maker = this.maker;

    // 2-3. Cert(DST) and Sign(DST, Physical-IP).
    const verdict = await this.verifier.verify(rec, {}, trace);
    if (verdict === Drop.VerifyOldEpoch && previous?.plugged) return maker.keepVerified(previous, now, trace);
    if (verdict !== Drop.None) {
      const ms = verdict === Drop.UpcallRateLimited ? RETRY_MS : maker.negativeMs;
      return maker.unplugged(make(verdict, `binding of ${dstText}: ${dropName(verdict)}`, null), now, ms, trace);
    }

    // 4-5. The tenants' policy.
    const decision = this.policy().decide(port.identityText, dstText, now, trace);
    if (decision.drop !== Drop.None) {
      return maker.unplugged(make(decision.drop, decision.rule, decision), now, Math.min(maker.negativeMs, decision.validUntil - now), trace);
    }

    // Plug: to a VM of this host, or (6) to DST's host over ESP or plain IPv6-in-IPv4.
    const cable = make(Drop.None, decision.rule, decision);
    if (this.isLocal(rec, miss.dst)) {
      const local = this.host.portIndex(dstText);
      if (local === undefined) {
        return maker.unplugged(make(Drop.ResolveNotFound, `binding names this host but ${dstText} has no port here`, null), now, maker.negativeMs, trace);
      }
      cable.localPort = local;
      trace?.step('plug', `local cable to ${this.host.ports.at(local).name} on this host (receiver checks are the same policy)`, 'ok');
    } else {
      const failed = await this.remote(cable, rec, decision, miss, early);
      if (failed) return maker.unplugged(make(failed.drop, failed.rule, decision), now, maker.negativeMs, trace);
    }
    cable.flows = maker.flowsFor(decision, port.identityText, dstText, opts.privateFlows);
    maker.plugged(cable, now, decision, rec);
    trace?.step('decision', `plug ${port.identityText} -> ${dstText} by ${decision.rule}`, 'ok');
    return cable;
  }

  /**
   * Step 6 ahead of 2-5, where the live miss path would negotiate anyway: DST is on another
   * host, the policy plugs the pair with encryption, no SA is handed over or kept, and the
   * verifier has a token for the binding if it must check it afresh (a flood of misses then
   * costs no more key exchanges than the verification rate allows). The INIT goes only to a
   * host whose certificate names the binding's address (step 9, done first): never to an
   * address a forged binding names. Resolves once the INIT has left, with the exchange's result.
   * With a spare SA ready and DST's binding to verify afresh, the pair takes the spare now and
   * sends the bind-ahead probe on it (bind-probe.ts): DST's host checks the pair meanwhile, and
   * nothing but the probe leaves before 2-5 pass. A binding verified before is checked in
   * microseconds: then step 6 takes the spare, and DST's host checks the pair on its first packet.
   */
  private async startEarly(miss: Miss, rec: BindingRecord): Promise<Negotiation | undefined> {
    const { port, dstText, now, previous, opts } = miss;
    if (!opts.negotiate || opts.handedOver || this.isLocal(rec, miss.dst) || !this.verifier.mayVerify(rec)) return undefined;
    let peer: number;
    try {
      peer = parseIpv4Address(rec.hostAddress);
    } catch {
      return undefined;
    }
    if (peer === this.host.address || reusable(previous, peer)) return undefined; // this host's own address: plain, no key exchange
    if (this.verifier.verified(rec) && this.keys.hasSpare(rec.host, peer)) return undefined; // 2-5 take microseconds: no probe, step 6 takes the spare
    const d = this.policy().decide(port.identityText, dstText, now);
    if (d.drop !== Drop.None || !d.encrypt) return undefined;
    const req = { srcPort: port, dst: dstText, peerHost: rec.host, peerAddress: peer, spare: true };
    // A spare's pool is that of the host authenticated at this address when the spare was keyed: step 9 holds already.
    const spare = this.keys.takeSpare(req, opts.trace);
    if (spare !== undefined) {
      const sent = this.host.probe(spare, this.outerTemplate(peer, PROTO_ESP), peer, port.identity, miss.dst);
      opts.trace?.step('sa', sent ? `bind-ahead probe on it: ${rec.host} checks the pair while this host does` : 'its bind-ahead probe did not leave', 'info');
      return { result: Promise.resolve({ ok: true, sa: spare }) };
    }
    if ((await this.verifier.hostKey(rec.host, rec.hostAddress)).drop !== Drop.None) return undefined;
    return { result: this.keys.establish(req, opts.trace) };
  }

  /**
   * DST is a VM of this host whose frames this thread writes. With several data-path threads,
   * a VM of this host that another thread owns is reached as a remote one, through this host's
   * own underlay address (workers/shard.ts): its worker keeps the pair's state there.
   */
  private isLocal(rec: BindingRecord, dst: Buffer): boolean {
    return rec.host === this.host.name && this.host.owns(dst);
  }

  /** Step 6: the peer host, its outer header and (with ESP) the SA, from `early` if it was started. Returns why not, or undefined. */
  private async remote(
    cable: Cable, rec: BindingRecord, decision: DirectionDecision, miss: Miss, early: Negotiation | undefined,
  ): Promise<{ drop: Drop; rule: string } | undefined> {
    const { previous, opts } = miss;
    const { trace } = opts;
    let peer: number;
    try {
      peer = parseIpv4Address(rec.hostAddress);
    } catch {
      return { drop: Drop.VerifyMalformed, rule: `bad host address ${rec.hostAddress}` };
    }
    cable.peerAddr = peer;
    cable.peerHost = rec.host;
    const encrypt = decision.encrypt && peer !== this.host.address;
    cable.outer = this.outerTemplate(peer, encrypt ? PROTO_ESP : PROTO_IPV6);
    if (!encrypt) {
      const why = decision.encrypt ? 'a VM of another data-path thread of this host: the packets never leave it' : 'the rule turns encryption off';
      trace?.step('plug', `plain IPv6-in-IPv4 to ${rec.host} (${rec.hostAddress}): ${why}`, 'info');
      return undefined;
    }
    if (opts.handedOver && opts.handedOver.peer === peer) {
      cable.sa = opts.handedOver.sa;
      trace?.step('sa', `takes over SA 0x${opts.handedOver.sa.spi.toString(16)} with ${rec.host} from the process before`, 'ok');
      return undefined;
    }
    const reuse = reusable(previous, peer);
    if (reuse) {
      cable.sa = reuse;
      trace?.step('sa', `keeps SA 0x${reuse.spi.toString(16)} with ${rec.host}`, 'ok');
      return undefined;
    }
    if (!opts.negotiate) {
      const how = this.keys.hasSpare(rec.host, peer)
        ? `would send on a spare ESP SA with ${rec.host} (${rec.hostAddress}), keyed ahead, which runs SDN Algorithm 2 on its first packet`
        : `would negotiate an ESP SA with ${rec.host} (${rec.hostAddress}), which runs SDN Algorithm 2`;
      trace?.step('sa', how, 'info');
      return undefined;
    }
    const port = this.host.ports.at(cable.srcPort);
    const r = await (early?.result ?? this.keys.establish({ srcPort: port, dst: miss.dstText, peerHost: rec.host, peerAddress: peer, spare: true }, trace));
    if (!r.ok) return { drop: r.drop, rule: `${rec.host} refused: ${r.detail}` };
    cable.sa = r.sa;
    trace?.step('sa', `ESP SA 0x${r.sa.spi.toString(16)} with ${rec.host}`, 'ok');
    return undefined;
  }

  private outerTemplate(peer: number, proto: number): Buffer {
    const key = `${peer}:${proto}`;
    let t = this.outers.get(key);
    if (!t) {
      t = makeOuterTemplate(this.host.address, peer, proto);
      this.outers.set(key, t);
    }
    return t;
  }
}

/** The SA of the cable being verified again, if the pair may keep sending on it to `peer`. */
function reusable(previous: Cable | undefined, peer: number): OutboundSa | null {
  return previous?.sa && previous.peerAddr === peer && !previous.sa.rekeyRequested ? previous.sa : null;
}
