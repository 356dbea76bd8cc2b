// One host's switch: its VM ports, cable caches, SA tables, the upcall with its resolver,
// the key exchange, and the two pipelines (src/dataplane/pipeline.ts). The I/O around it
// (TAP + raw sockets in `run`, pcap files in `replay`) reads batches, calls runEgress /
// runIngress, and receives the packets through the sinks it gave.

import type { KeyObject } from 'node:crypto';
import type { CloudConfig } from '../config/config.js';
import { vmsOnHost } from '../config/config.js';
import { Batch, BATCH_MAX, FRAME_OFFSET, Next, PacketFlag, UNDERLAY_OFFSET } from '../dataplane/batch.js';
import { Cable, CableDirection } from '../dataplane/cable.js';
import { CableCache } from '../dataplane/cable-cache.js';
import { Drop } from '../base/drops.js';
import { addrEquals } from '../wire/ipv6.js';
import { readU32 } from '../wire/ipv4.js';
import { egressPipeline, ingressPipeline, type Pipeline } from '../dataplane/pipeline.js';
import { Upcall, type HeldPacket } from '../dataplane/upcall.js';
import type { VmPort } from '../dataplane/vm-port.js';
import { espMaxPayload, ESP_OFF_SPI } from '../wire/esp.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import { InboundSa, DEFAULT_HARD_SEQ, type SaLimits } from '../esp/sa.js';
import type { Policy } from '../policy/decision.js';
import type { MappingStore } from '../store/store.js';
import type { Logger } from '../base/log.js';
import { DEFAULT_KX, KeyExchangeEngine, type EspKeyExport, type HostAuthority, type InboundInstaller, type KxTiming, type KxTransport } from './key-exchange.js';
import { Resolver, type BindingVerifierLike } from './resolver.js';
import type { Clock } from '../base/clock.js';

/** Where the pipelines hand their packets: the underlay port and each VM port. */
export interface PacketSink {
  /** Send packets b[idx[0..n)]; returns how many were sent, in order (the rest failed). */
  send(b: Batch, idx: Int32Array, n: number): number;
}

export interface HostParts {
  readonly config: CloudConfig;
  readonly host: string;
  readonly store: MappingStore;
  readonly verifier: BindingVerifierLike;
  readonly authority: HostAuthority;
  readonly policy: Policy;
  readonly hostKey: KeyObject;
  readonly transport: KxTransport;
  readonly cipher: EspCipher;
  readonly clock: Clock;
  readonly log: Logger;
  /** Overrides of the SA limits (tests force early rekeys). */
  readonly saLimits?: Partial<SaLimits>;
  /** Overrides of the key-exchange timing and limits (tests shorten the retries). */
  readonly kx?: Partial<KxTiming>;
  /** Debug only: the keys of every SA this host accepts (Wireshark export). */
  readonly exportKeys?: (k: EspKeyExport) => void;
  /** Sees every batch after its packets' fates are set, before they are sent (replay verdicts). */
  readonly observe?: (b: Batch, direction: CableDirection, host: string) => void;
}

/** IPv6 MTU the VMs of a cloud get: what fits in ESP + IPv4 on the underlay MTU. */
export function guestMtu(underlayMtu: number): number {
  return espMaxPayload(underlayMtu - 20);
}

export class Host implements InboundInstaller {
  readonly name: string;
  readonly address: number;
  readonly ports: readonly VmPort[];
  readonly egressCables: CableCache;
  readonly ingressCables: CableCache;
  readonly spis = new Map<number, InboundSa<Cable>>();
  readonly upcall: Upcall;
  readonly resolver: Resolver;
  readonly kx: KeyExchangeEngine;
  readonly egress: Pipeline;
  readonly ingress: Pipeline;
  readonly counts = { reevaluated: 0, rekeys: 0, rekeyFailures: 0, retiredSas: 0 };
  private policyNow: Policy;
  private readonly byIdentity = new Map<string, number>();
  private readonly inboundByPair = new Map<string, InboundSa<Cable>>();
  private readonly rekeying = new Set<string>();
  private readonly reinjectBatch = new Batch();
  private readonly sinks: { underlay: PacketSink; ports: PacketSink[] };
  private readonly underlayIdx = new Int32Array(BATCH_MAX);
  private readonly portIdx: Int32Array[];
  private readonly portCount: Int32Array;
  private readonly grace: number;

  constructor(private readonly parts: HostParts) {
    const cfg = parts.config;
    const hostCfg = cfg.hosts.get(parts.host);
    if (!hostCfg) throw new Error(`no host ${parts.host} in ${cfg.file}`);
    this.name = hostCfg.name;
    this.address = hostCfg.address;
    const mtu = guestMtu(cfg.underlay.mtu);
    this.ports = vmsOnHost(cfg, parts.host).map((vm, index) => ({
      index, name: vm.name, tenant: vm.tenant, mac: vm.mac, identity: vm.identity, identityText: vm.identityText, mtu,
    }));
    this.ports.forEach((p) => this.byIdentity.set(p.identityText, p.index));
    this.policyNow = parts.policy;
    this.grace = cfg.switch.esp.grace * 1000;
    const nothing: PacketSink = { send: () => 0 };
    this.sinks = { underlay: nothing, ports: this.ports.map(() => nothing) };
    this.portIdx = this.ports.map(() => new Int32Array(BATCH_MAX));
    this.portCount = new Int32Array(this.ports.length);

    this.egressCables = new CableCache(cfg.switch.cables.max, (c) => this.evicted(c));
    this.ingressCables = new CableCache(cfg.switch.cables.max, (c) => this.evicted(c));
    const esp = cfg.switch.esp;
    const limits: SaLimits = {
      softPackets: esp.rekey.packets,
      softBytes: esp.rekey.bytes,
      softAgeMs: esp.rekey.seconds * 1000,
      hardSeq: DEFAULT_HARD_SEQ,
      ...parts.saLimits,
    };
    const hostView = { name: this.name, address: this.address, ports: this.ports, portIndex: (id: string) => this.byIdentity.get(id) };
    this.kx = new KeyExchangeEngine(
      { name: this.name, address: this.address }, parts.hostKey, parts.transport, parts.authority,
      { accept: (req, trace) => this.resolver.accept(req, trace) }, this, parts.cipher,
      { alg: esp.cipher, limits, ...DEFAULT_KX, ...parts.kx, exportKeys: parts.exportKeys }, parts.clock,
    );
    this.resolver = new Resolver(
      hostView, parts.store, parts.verifier, () => this.policyNow, this.kx,
      { ttl: cfg.switch.cables.ttl, negativeTtl: cfg.switch.cables.negativeTtl, storeTimeoutMs: 2000, maxFlows: 65_536 },
      parts.clock,
    );
    this.upcall = new Upcall(
      this.resolver,
      { egress: this.egressCables, ingress: this.ingressCables },
      { perCable: cfg.switch.upcall.queuePerCable, total: cfg.switch.upcall.queueTotal, maxPending: 1024 },
      (dir, packets) => this.reinject(dir, packets),
      (err) => parts.log.error('upcall-bug', { error: String(err) }),
      (old, next) => this.replaced(old, next),
    );
    const pipeParts = {
      ports: this.ports,
      egressCables: this.egressCables,
      ingressCables: this.ingressCables,
      upcall: this.upcall,
      cipher: parts.cipher,
      spis: this.spis,
      localAddress: this.address,
      portOf: (buf: Uint8Array, off: number) => this.portAt(buf, off),
      wantRekey: (c: Cable) => this.rekey(c),
    };
    this.egress = egressPipeline(pipeParts);
    this.ingress = ingressPipeline(pipeParts);
  }

  get policy(): Policy {
    return this.policyNow;
  }

  /** Where packets go out. */
  attach(underlay: PacketSink, ports: readonly PacketSink[]): void {
    if (ports.length !== this.ports.length) throw new Error(`host ${this.name} has ${this.ports.length} ports, ${ports.length} sinks given`);
    this.sinks.underlay = underlay;
    this.sinks.ports = [...ports];
  }

  portIndex(identityText: string): number | undefined {
    return this.byIdentity.get(identityText);
  }

  /** Port of the local VM whose identity is the 16 bytes at buf[off], or -1 (no allocation: a host has few VMs). */
  private portAt(buf: Uint8Array, off: number): number {
    for (const p of this.ports) if (addrEquals(buf, off, p.identity)) return p.index;
    return -1;
  }

  /** Egress: a batch of frames read from VM ports. */
  runEgress(b: Batch): void {
    this.egress.process(b, this.parts.clock.now());
    this.parts.observe?.(b, CableDirection.Egress, this.name);
    this.dispatch(b, this.egress);
  }

  /** Ingress: a batch of IPv4 packets read from the underlay. */
  runIngress(b: Batch): void {
    this.ingress.process(b, this.parts.clock.now());
    this.parts.observe?.(b, CableDirection.Ingress, this.name);
    this.dispatch(b, this.ingress);
  }

  /** Hand every packet to its sink; a sink's refusal is counted as a tx drop. */
  private dispatch(b: Batch, pipe: Pipeline): void {
    let nu = 0;
    this.portCount.fill(0);
    for (let i = 0; i < b.count; i++) {
      const next = b.next[i];
      if (next === Next.Underlay) this.underlayIdx[nu++] = i;
      else if (next === Next.VmPort || next === Next.Reply) this.portIdx[b.outPort[i]][this.portCount[b.outPort[i]]++] = i;
      else if (next === Next.Drop && b.reason[i] === Drop.EspUnknownSpi) {
        this.kx.notifyUnknownSpi(readU32(b.data, b.l3[i] + ESP_OFF_SPI), b.peer[i]);
      }
    }
    const c = pipe.counters;
    if (nu > 0) {
      const failed = nu - this.sinks.underlay.send(b, this.underlayIdx, nu);
      if (failed > 0) {
        c.underlay -= failed;
        c.drops[Drop.TxUnderlayError] += failed;
      }
    }
    for (let p = 0; p < this.ports.length; p++) {
      const n = this.portCount[p];
      if (n === 0) continue;
      const idx = this.portIdx[p];
      for (let k = this.sinks.ports[p].send(b, idx, n); k < n; k++) {
        const i = idx[k];
        if (b.next[i] === Next.VmPort) c.delivered--;
        else if (b.reason[i] === Drop.None) c.replied--;
        else {
          c.errorsSent--;
          continue; // the packet stays counted under the drop that caused the error
        }
        c.drops[Drop.TxPortError]++;
      }
    }
  }

  /** Packets released by the upcall run through their pipeline again, in order. */
  private reinject(direction: CableDirection, packets: HeldPacket[]): void {
    const b = this.reinjectBatch;
    const egress = direction === CableDirection.Egress;
    for (let k = 0; k < packets.length; ) {
      b.reset();
      for (; k < packets.length && b.count < BATCH_MAX; k++) {
        const p = packets[k];
        const i = b.push(p.data, egress ? FRAME_OFFSET : UNDERLAY_OFFSET, p.port, p.timeUs, p.tag);
        b.flags[i] |= PacketFlag.Reinjected;
        b.peer[i] = p.peer;
      }
      if (egress) this.runEgress(b);
      else this.runIngress(b);
    }
  }

  // ---- SAs ------------------------------------------------------------------------------

  installInbound(cable: Cable, spi: number, key: number, peer: number): void {
    const now = this.parts.clock.now();
    const sa = new InboundSa(spi, key, peer, cable, now);
    const pair = `${cable.srcText} ${cable.dstText}`;
    const old = this.inboundByPair.get(pair);
    if (old) old.retireAt = now + this.grace; // make-before-break: the old SA serves packets in flight
    this.inboundByPair.set(pair, sa);
    this.spis.set(spi, sa);
    this.ingressCables.insert(cable);
  }

  spiInUse(spi: number): boolean {
    return this.spis.has(spi);
  }

  /** A peer has no SA for `spi` any more: unplug the cable that uses it, the next packet plugs it again. */
  spiRejected(spi: number, from: number): void {
    for (const c of this.egressCables.all()) {
      if (c.sa && c.sa.spi === spi && c.peerAddr === from) {
        this.egressCables.remove(c);
        this.parts.cipher.removeKey(c.sa.key);
        this.parts.log.info('spi-rejected', { spi, peer: c.peerHost, src: c.srcText, dst: c.dstText });
      }
    }
  }

  /** Make-before-break rekey of an egress cable: the new SA replaces the old in one step once it exists. */
  private rekey(c: Cable): void {
    const key = `${c.srcText} ${c.dstText}`;
    if (this.rekeying.has(key) || c.srcPort < 0) return;
    this.rekeying.add(key);
    this.kx.establish({ srcPort: this.ports[c.srcPort], dst: c.dstText, peerHost: c.peerHost, peerAddress: c.peerAddr }).then((r) => {
      this.rekeying.delete(key);
      if (!r.ok) {
        this.counts.rekeyFailures++;
        this.parts.log.warn('rekey-failed', { src: c.srcText, dst: c.dstText, detail: r.detail });
        return;
      }
      const current = this.egressCables.findCable(c);
      if (!current || current.sa === null) {
        this.parts.cipher.removeKey(r.sa.key);
        return;
      }
      const old = current.sa;
      current.sa = r.sa;
      if (c !== current) c.sa = r.sa;
      this.parts.cipher.removeKey(old.key);
      this.counts.rekeys++;
    });
  }

  /** A cable left the cache because it was full: its SAs go with it. */
  private evicted(c: Cable): void {
    if (c.direction === CableDirection.Egress) {
      if (c.sa) this.parts.cipher.removeKey(c.sa.key);
      return;
    }
    const pair = `${c.srcText} ${c.dstText}`;
    const sa = this.inboundByPair.get(pair);
    if (sa && sa.cable === c) {
      this.inboundByPair.delete(pair);
      this.retire(sa);
    }
  }

  /** A cable was replaced by a newer decision for the same pair. */
  private replaced(old: Cable, next: Cable): void {
    if (old.direction === CableDirection.Egress) {
      if (old.sa && old.sa !== next.sa) this.parts.cipher.removeKey(old.sa.key);
      return;
    }
    for (const sa of this.spis.values()) if (sa.cable === old) sa.cable = next;
  }

  private retire(sa: InboundSa<Cable>): void {
    this.spis.delete(sa.spi);
    this.parts.cipher.removeKey(sa.key);
    this.counts.retiredSas++;
  }

  /** Retire inbound SAs whose grace time is over. Call about once a second. */
  sweep(): void {
    const now = this.parts.clock.now();
    for (const sa of this.spis.values()) if (now >= sa.retireAt) this.retire(sa);
  }

  // ---- Policy and bindings ------------------------------------------------------------------

  /**
   * A new policy revision: re-evaluate exactly the cables whose identities it may affect.
   * Returns how many were re-evaluated.
   */
  applyPolicy(next: Policy): number {
    const prev = this.policyNow;
    this.policyNow = next;
    const affected = prev.affected(next);
    const now = this.parts.clock.now();
    let n = 0;
    for (const cache of [this.egressCables, this.ingressCables]) {
      for (const c of [...cache.all()]) {
        if (!affected.all && !affected.identities.has(c.srcText) && !affected.identities.has(c.dstText)) continue;
        n++;
        this.reevaluate(cache, c, now);
      }
    }
    this.counts.reevaluated += n;
    return n;
  }

  private reevaluate(cache: CableCache, c: Cable, now: number): void {
    const d = this.policyNow.decide(c.srcText, c.dstText, now);
    const reshaped = d.drop === Drop.None && (c.decision === null || d.encrypt !== c.decision.encrypt || d.flow !== c.decision.flow);
    if (!c.plugged || reshaped) {
      // Newly allowed, or the encapsulation or flow mode changes: the next packet plugs it from scratch.
      c.expiresAt = now;
      return;
    }
    const next = new Cable(c.hash, c.direction, c.src, c.dst, c.srcText, c.dstText, d.drop, d.rule, d);
    next.srcPort = c.srcPort;
    next.localPort = c.localPort;
    next.peerAddr = c.peerAddr;
    next.peerHost = c.peerHost;
    next.outer = c.outer;
    next.sa = c.sa;
    next.flows = c.flows;
    next.plugTime = now;
    next.refreshAt = d.drop === Drop.None ? c.refreshAt : Infinity;
    next.expiresAt = d.drop === Drop.None ? Math.min(c.expiresAt, d.validUntil) : now + this.parts.config.switch.cables.negativeTtl * 1000;
    next.packets = c.packets;
    next.bytes = c.bytes;
    next.drops = c.drops;
    cache.insert(next);
    if (c.direction === CableDirection.Ingress) this.replaced(c, next);
  }

  /** A binding changed in the store (a migration, a renewal): cables to or from it are verified again. */
  bindingChanged(identity: string): void {
    for (const c of this.egressCables.all()) if (c.dstText === identity) c.refreshAt = 0;
    for (const c of this.ingressCables.all()) if (c.srcText === identity) c.refreshAt = 0;
  }

  close(): void {
    this.kx.close();
  }
}
