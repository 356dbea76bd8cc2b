// The control plane behind the miss path: SDN Algorithms 1 and 2 of the paper.
//
// Algorithm 1 (sender, plugEgress), for a local VM SRC sending to DST:
//   1. look DST up in the mapping store (single-flight per identity, with a timeout);
//   2-3. verify Cert(DST) and Sign(DST, Physical-IP); on failure unplug at the sender;
//   4-5. evaluate the tenant policy for SRC -> DST; unplug or plug;
//   6. for a remote DST with encryption, negotiate the ESP SA with DST's host (which runs
//      Algorithm 2 before it installs anything); packets wait until it exists.
// Algorithm 2 (receiver): plugIngress for plain IPv6-in-IPv4 packets, accept() for the
// key exchange: look SRC up, verify it and that it is bound to the host the packet or
// request came from, evaluate the policy for SRC -> DST, plug or unplug at the receiver.
//
// Every failure becomes an unplugged cable carrying its Drop reason, so the promise never
// rejects and the data path counts each refused packet under the reason found here.

import { LRUCache } from 'lru-cache';
import { NviError } from '../base/errors.js';
import { Cable, CableDirection } from '../dataplane/cable.js';
import { Drop, dropName } from '../base/drops.js';
import { makeOuterTemplate } from '../wire/ipv4.js';
import { formatIpv4, parseIpv4Address } from '../base/address.js';
import { PROTO_ESP, PROTO_IPV6 } from '../wire/ipv6.js';
import { formatIpv6, parseIpv6Address } from '../base/address.js';
import { pairHash } from '../dataplane/pair-hash.js';
import type { MissResolver } from '../dataplane/upcall.js';
import type { VmPort } from '../dataplane/vm-port.js';
import { type Policy } from '../policy/decision.js';
import { FlowMode, type DirectionDecision } from '../dataplane/decision.js';
import { FlowTable } from '../policy/flow-table.js';
import type { MappingStore } from '../store/store.js';
import type { BindingRecord } from '../trust/records.js';
import type { Clock } from '../base/clock.js';
import type { Trace } from '../base/trace.js';
import type { KeyExchange } from './key-exchange.js';

export interface BindingVerifierLike {
  verify(record: BindingRecord, expect: { hostAddress?: string; host?: string }, trace?: Trace): Promise<Drop>;
}

export interface HostView {
  readonly name: string;
  /** Underlay address, uint32. */
  readonly address: number;
  readonly ports: readonly VmPort[];
  /** Port index of a local VM by identity text, or undefined. */
  portIndex(identityText: string): number | undefined;
}

export interface ResolverSettings {
  /** Seconds before a plugged cable is verified again (it keeps forwarding meanwhile). */
  readonly ttl: number;
  /** Seconds an unplug decision is remembered. */
  readonly negativeTtl: number;
  /** Milliseconds a store lookup may take. */
  readonly storeTimeoutMs: number;
  /** Flows an initiate-only pair may have open. */
  readonly maxFlows: number;
}

/** After a store error or a rate-limited verification, try again this soon (ms). */
const RETRY_MS = 1000;

export type AcceptResult =
  | { readonly ok: true; readonly cable: Cable }
  | { readonly ok: false; readonly drop: Drop; readonly detail: string };

export interface AcceptRequest {
  readonly initiatorHost: string;
  /** The underlay address the request came from (uint32). */
  readonly initiatorAddress: number;
  readonly src: string;
  readonly dst: string;
}

type Lookup = { readonly record: BindingRecord | undefined } | { readonly error: string };

export class Resolver implements MissResolver {
  private readonly inflight = new Map<string, Promise<Lookup>>();
  private readonly flows: LRUCache<string, FlowTable>;
  /** Outer IPv4 header templates, one per (peer host, protocol), shared by all its cables so it stays in cache. */
  private readonly outers = new Map<string, Buffer>();
  readonly counts = { lookups: 0, storeErrors: 0 };

  constructor(
    private readonly host: HostView,
    private readonly store: MappingStore,
    private readonly verifier: BindingVerifierLike,
    /** The policy in force now (it changes when the store's policy changes). */
    private readonly policy: () => Policy,
    private readonly keys: KeyExchange,
    private readonly settings: ResolverSettings,
    private readonly clock: Clock,
  ) {
    this.flows = new LRUCache({ max: 65_536 });
  }

  plugEgress(port: number, dst: Buffer, hash: number, previous: Cable | undefined): Promise<Cable> {
    return this.egress(port, dst, hash, previous, { negotiate: true });
  }

  /**
   * SDN Algorithm 1 for the VM on `portIndex` -> dst. With negotiate false (explain), the
   * key exchange is only described, not run.
   */
  async egress(
    portIndex: number, dst: Buffer, hash: number, previous: Cable | undefined,
    opts: { negotiate: boolean; trace?: Trace },
  ): Promise<Cable> {
    const trace = opts.trace;
    const port = this.host.ports[portIndex];
    const now = this.clock.now();
    const dstText = formatIpv6(dst);
    const make = (drop: Drop, rule: string, decision: DirectionDecision | null): Cable => {
      const c = new Cable(hash, CableDirection.Egress, port.identity, dst, port.identityText, dstText, drop, rule, decision);
      c.srcPort = portIndex;
      c.plugTime = now;
      return c;
    };
    trace?.step('upcall', `miss for ${port.name} (${port.identityText}) -> ${dstText} on host ${this.host.name}`);

    const found = await this.lookup(dstText, trace);
    if ('error' in found) {
      if (previous?.plugged) return this.keepWhileStoreDown(previous, now, trace);
      return this.negative(make(Drop.ResolveStoreError, found.error, null), now, RETRY_MS, trace);
    }
    const rec = found.record;
    if (!rec) return this.negative(make(Drop.ResolveNotFound, `no binding for ${dstText}`, null), now, this.negMs(), trace);

    const verdict = await this.verifier.verify(rec, {}, trace);
    if (verdict !== Drop.None) {
      const ms = verdict === Drop.UpcallRateLimited ? RETRY_MS : this.negMs();
      return this.negative(make(verdict, `binding of ${dstText}: ${dropName(verdict)}`, null), now, ms, trace);
    }

    const decision = this.policy().decide(port.identityText, dstText, now, trace);
    if (decision.drop !== Drop.None) {
      return this.negative(make(decision.drop, decision.rule, decision), now, Math.min(this.negMs(), decision.validUntil - now), trace);
    }

    const cable = make(Drop.None, decision.rule, decision);
    if (rec.host === this.host.name) {
      const local = this.host.portIndex(dstText);
      if (local === undefined) {
        return this.negative(make(Drop.ResolveNotFound, `binding names this host but ${dstText} has no port here`, null), now, this.negMs(), trace);
      }
      cable.localPort = local;
      trace?.step('plug', `local cable to ${this.host.ports[local].name} on this host (receiver checks are the same policy)`, 'ok');
    } else {
      const peer = this.peerAddress(rec);
      if (peer === undefined) return this.negative(make(Drop.VerifyMalformed, `bad host address ${rec.hostAddress}`, null), now, this.negMs(), trace);
      cable.peerAddr = peer;
      cable.peerHost = rec.host;
      cable.outer = this.outerTemplate(peer, decision.encrypt ? PROTO_ESP : PROTO_IPV6);
      if (decision.encrypt) {
        const reuse = previous?.sa && previous.peerAddr === peer && !previous.sa.rekeyRequested ? previous.sa : null;
        if (reuse) {
          cable.sa = reuse;
          trace?.step('sa', `keeps SA 0x${reuse.spi.toString(16)} with ${rec.host}`, 'ok');
        } else if (!opts.negotiate) {
          trace?.step('sa', `would negotiate an ESP SA with ${rec.host} (${rec.hostAddress}), which runs SDN Algorithm 2`, 'info');
        } else {
          const r = await this.keys.establish({ srcPort: port, dst: dstText, peerHost: rec.host, peerAddress: peer }, trace);
          if (!r.ok) return this.negative(make(r.drop, `${rec.host} refused: ${r.detail}`, decision), now, this.negMs(), trace);
          cable.sa = r.sa;
          trace?.step('sa', `ESP SA 0x${r.sa.spi.toString(16)} with ${rec.host}`, 'ok');
        }
      } else {
        trace?.step('plug', `plain IPv6-in-IPv4 to ${rec.host} (${rec.hostAddress}): the rule turns encryption off`, 'info');
      }
    }
    cable.flows = this.flowsFor(decision, port.identityText, dstText);
    this.live(cable, now, decision, rec);
    trace?.step('decision', `plug ${port.identityText} -> ${dstText} by ${decision.rule}`, 'ok');
    return cable;
  }

  /** SDN Algorithm 2 for a plain IPv6-in-IPv4 packet from `outerSrc`. */
  plugIngress(src: Buffer, portIndex: number, outerSrc: number, hash: number, previous: Cable | undefined, trace?: Trace): Promise<Cable> {
    return this.ingress(src, portIndex, outerSrc, hash, previous, trace);
  }

  private async ingress(src: Buffer, portIndex: number, outerSrc: number, hash: number, previous: Cable | undefined, trace?: Trace): Promise<Cable> {
    const port = this.host.ports[portIndex];
    const now = this.clock.now();
    const srcText = formatIpv6(src);
    const r = await this.receiverChecks(srcText, port, formatIpv4(outerSrc), undefined, trace);
    const make = (drop: Drop, rule: string, decision: DirectionDecision | null): Cable => {
      const c = new Cable(hash, CableDirection.Ingress, src, port.identity, srcText, port.identityText, drop, rule, decision);
      c.localPort = portIndex;
      c.peerAddr = outerSrc;
      c.plugTime = now;
      return c;
    };
    if (r.kind === 'store-error') {
      if (previous?.plugged) return this.keepWhileStoreDown(previous, now, trace);
      return this.negative(make(Drop.ResolveStoreError, r.detail, null), now, RETRY_MS, trace);
    }
    if (r.kind === 'refused') {
      return this.negative(make(r.drop, r.detail, r.decision), now, r.drop === Drop.UpcallRateLimited ? RETRY_MS : this.negMs(), trace);
    }
    const cable = make(Drop.None, r.decision.rule, r.decision);
    cable.flows = this.flowsFor(r.decision, port.identityText, srcText);
    this.live(cable, now, r.decision, r.record);
    return cable;
  }

  /**
   * SDN Algorithm 2 for a key-exchange request: the initiating host asks to plug src -> dst.
   * Returns the ingress cable to install with the new inbound SA, or why not.
   */
  async accept(req: AcceptRequest, trace?: Trace): Promise<AcceptResult> {
    const now = this.clock.now();
    const portIndex = this.host.portIndex(req.dst);
    if (portIndex === undefined) return { ok: false, drop: Drop.InnerUnknownDestination, detail: `${req.dst} is not a VM of ${this.host.name}` };
    const port = this.host.ports[portIndex];
    const r = await this.receiverChecks(req.src, port, formatIpv4(req.initiatorAddress), req.initiatorHost, trace);
    if (r.kind === 'store-error') return { ok: false, drop: Drop.ResolveStoreError, detail: r.detail };
    if (r.kind === 'refused') return { ok: false, drop: r.drop, detail: r.detail };
    const src = parseIpv6Address(req.src);
    const cable = new Cable(pairHash(src, 0, port.identity, 0), CableDirection.Ingress, src, port.identity, req.src, port.identityText, Drop.None, r.decision.rule, r.decision);
    cable.localPort = portIndex;
    cable.peerAddr = req.initiatorAddress;
    cable.peerHost = req.initiatorHost;
    cable.plugTime = now;
    cable.flows = this.flowsFor(r.decision, port.identityText, req.src);
    this.live(cable, now, r.decision, r.record);
    return { ok: true, cable };
  }

  /** Steps 1-5 of Algorithm 2 for src -> the local VM on `port`, from `fromAddress` (and `fromHost`). */
  private async receiverChecks(
    srcText: string, port: VmPort, fromAddress: string, fromHost: string | undefined, trace?: Trace,
  ): Promise<
    | { kind: 'store-error'; detail: string }
    | { kind: 'refused'; drop: Drop; detail: string; decision: DirectionDecision | null }
    | { kind: 'plug'; record: BindingRecord; decision: DirectionDecision }
  > {
    trace?.step('upcall', `receiver check for ${srcText} -> ${port.name} (${port.identityText}) from ${fromHost ?? fromAddress}`);
    const found = await this.lookup(srcText, trace);
    if ('error' in found) return { kind: 'store-error', detail: found.error };
    if (!found.record) return { kind: 'refused', drop: Drop.ResolveNotFound, detail: `no binding for ${srcText}`, decision: null };
    const expect = fromHost === undefined ? { hostAddress: fromAddress } : { hostAddress: fromAddress, host: fromHost };
    const verdict = await this.verifier.verify(found.record, expect, trace);
    if (verdict !== Drop.None) return { kind: 'refused', drop: verdict, detail: `binding of ${srcText}: ${dropName(verdict)}`, decision: null };
    const decision = this.policy().decide(srcText, port.identityText, this.clock.now(), trace);
    if (decision.drop !== Drop.None) return { kind: 'refused', drop: decision.drop, detail: decision.rule, decision };
    trace?.step('decision', `plug ${srcText} -> ${port.identityText} at the receiver by ${decision.rule}`, 'ok');
    return { kind: 'plug', record: found.record, decision };
  }

  /** Store lookup, one in flight per identity, bounded in time. */
  private lookup(identity: string, trace?: Trace): Promise<Lookup> {
    let p = this.inflight.get(identity);
    if (!p) {
      this.counts.lookups++;
      p = withTimeout(this.store.lookup(identity), this.settings.storeTimeoutMs).then(
        (record): Lookup =>
          record && record.identity !== identity
            ? { error: `store answered ${identity} with the binding of ${record.identity}` }
            : { record },
        (err): Lookup => {
          this.counts.storeErrors++;
          return { error: err instanceof NviError ? err.message : `store lookup failed: ${String(err)}` };
        },
      );
      this.inflight.set(identity, p);
      p.finally(() => this.inflight.delete(identity)).catch(() => {});
    }
    return p.then((r) => {
      if ('error' in r) trace?.step('lookup', `mapping store: ${r.error}`, 'fail');
      else if (!r.record) trace?.step('lookup', `mapping store has no binding for ${identity}`, 'fail');
      else trace?.step('lookup', `${identity} is ${r.record.tenant}/${r.record.vm} on ${r.record.host} (${r.record.hostAddress}), epoch ${r.record.epoch}`, 'ok');
      return r;
    });
  }

  private peerAddress(rec: BindingRecord): number | undefined {
    try {
      return parseIpv4Address(rec.hostAddress);
    } catch {
      return undefined;
    }
  }

  /**
   * The flow table shared by both directions of an initiate-only pair on this host, keyed
   * by the unordered pair: A -> B and B -> A must find the same table, also when both VMs
   * are on this host (each direction is then an egress cable).
   */
  private flowsFor(decision: DirectionDecision, a: string, b: string): FlowTable | null {
    if (decision.flow === FlowMode.None) return null;
    const key = a < b ? `${a} ${b}` : `${b} ${a}`;
    let t = this.flows.get(key);
    if (!t) {
      t = new FlowTable(this.settings.maxFlows);
      this.flows.set(key, t);
    }
    return t;
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

  private negMs(): number {
    return this.settings.negativeTtl * 1000;
  }

  private negative(c: Cable, now: number, ms: number, trace?: Trace): Cable {
    c.refreshAt = Infinity;
    c.expiresAt = now + Math.max(ms, 0);
    trace?.step('decision', `unplug: ${dropName(c.drop)} (${c.rule})`, 'fail');
    return c;
  }

  /** Lifetimes of a plugged cable: verified again after ttl, never used beyond 2 ttl, a time-window edge or the binding's end. */
  private live(c: Cable, now: number, decision: DirectionDecision, rec: BindingRecord): void {
    const ttl = this.settings.ttl * 1000;
    c.refreshAt = now + ttl;
    const bindingEnd = Date.parse(rec.notAfter);
    c.expiresAt = Math.min(now + 2 * ttl, decision.validUntil, Number.isNaN(bindingEnd) ? Infinity : bindingEnd);
  }

  /** The store does not answer: keep a plugged cable until its hard expiry, ask again soon. */
  private keepWhileStoreDown(previous: Cable, now: number, trace?: Trace): Cable {
    previous.refreshAt = now + RETRY_MS;
    trace?.step('decision', 'store unreachable: the plugged cable stays until it expires', 'info');
    return previous;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new NviError('NVI_ERR_STORE_UNAVAILABLE', `mapping store did not answer within ${ms} ms`)), ms);
    t.unref?.();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
