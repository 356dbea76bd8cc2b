// One host's switch, composed: VM ports, the two cable caches, the SA table, SDN Algorithm 1
// (sender.ts) and Algorithm 2 (receiver.ts) behind the upcall, the key exchange, rekeys,
// re-evaluation on policy and binding changes, and the two pipelines
// (src/dataplane/pipeline.ts). The I/O around it (TAP + raw sockets in `run`, pcap files in
// `replay`) reads batches, calls runEgress / runIngress, and receives the packets through
// the sinks it attached.

import type { KeyObject } from 'node:crypto';
import { parseIpv6Address } from '../base/address.js';
import { systemRandom, type Clock, type Random } from '../base/clock.js';
import type { Logger } from '../base/log.js';
import { espMaxPayload } from '../wire/esp.js';
import type { CloudConfig, VmConfig } from '../config/config.js';
import { vmsOnHost } from '../config/config.js';
import { Batch, BATCH_MAX, FRAME_OFFSET, PacketFlag, UNDERLAY_OFFSET } from '../dataplane/batch.js';
import { CableDirection, type Cable } from '../dataplane/cable.js';
import { CableCache } from '../dataplane/cable-cache.js';
import { egressPipeline, ingressPipeline, type Pipeline } from '../dataplane/pipeline.js';
import { Upcall, type HeldPacket } from '../dataplane/upcall.js';
import { PortTable } from '../dataplane/port-table.js';
import type { VmPort } from '../dataplane/vm-port.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import { DEFAULT_HARD_SEQ, type OutboundSa, type SaLimits } from '../esp/sa.js';
import type { Policy } from '../policy/decision.js';
import { BindingLookup, type BindingSource } from './binding-lookup.js';
import { CableMaker } from './cable-maker.js';
import type { BindingVerifierLike, HostView } from './host-view.js';
import { BindProbe } from './bind-probe.js';
import { DEFAULT_KX, KeyExchangeEngine, type EspKeyExport, type HostAuthority, type InboundInstaller, type KxTiming, type KxTransport } from './key-exchange.js';
import { Receiver } from './receiver.js';
import { Reevaluator } from './reevaluate.js';
import { Rekeyer } from './rekey.js';
import { SaTable } from './sa-table.js';
import { Sender } from './sender.js';
import { SpareBinder } from './spare-binder.js';
import { InboundSpares, MAX_SPARES_FROM_PEER } from './spares.js';
import { TxFanout, type PacketSink } from './tx.js';
import { owns, type Shard } from './workers/shard.js';

export interface HostParts {
  readonly config: CloudConfig;
  readonly host: string;
  /** Where the miss path reads bindings: the store, or the host's replica of it. */
  readonly bindings: BindingSource;
  readonly verifier: BindingVerifierLike;
  readonly authority: HostAuthority;
  readonly policy: Policy;
  readonly hostKey: KeyObject;
  readonly transport: KxTransport;
  readonly cipher: EspCipher;
  readonly clock: Clock;
  readonly random?: Random;
  readonly log: Logger;
  /** Overrides of the SA limits (tests force early rekeys). */
  readonly saLimits?: Partial<SaLimits>;
  /** Overrides of the key-exchange timing and limits (tests shorten the retries). */
  readonly kx?: Partial<KxTiming>;
  /** Debug only: the keys of every SA this host accepts (Wireshark export). */
  readonly exportKeys?: (k: EspKeyExport) => void;
  /** Sees every batch after its packets' fates are set, before they are sent (replay verdicts). */
  readonly observe?: (b: Batch, direction: CableDirection, host: string) => void;
  /** Fail a stage that settles a packet in a way it does not declare (default: NVI_CHECK_STAGES=1). */
  readonly checkStages?: boolean;
  /** The VMs whose ports exist at start (default: every VM the config places on this host). */
  readonly vms?: readonly VmConfig[];
  /** Plug a reply's cable when the peer plugs the request's (default: switch.upcall.prefetchReplies; tests of one direction turn it off). */
  readonly prefetchReplies?: boolean;
  /** Spare SAs kept with each peer host (default: switch.esp.spares). */
  readonly spares?: number;
  /** This host is one of several data-path threads of its host (workers/shard.ts); `vms` are its share. */
  readonly shard?: Shard;
}

/** Slots of each table (cables, SPIs) that one sweep looks at, at most, and how often a sweep runs. */
export const SWEEP_SLOTS = 16_384;
/** Cables of each cache one sweep frees at most (about 6 µs each at 1M cables). */
export const SWEEP_REMOVALS = 2048;
export const SWEEP_INTERVAL_MS = 250;

/** The port of `vm` as the data path sees it. */
function portOf(vm: VmConfig, mtu: number): Omit<VmPort, 'index'> {
  return { name: vm.name, tenant: vm.tenant, mac: vm.mac, identity: vm.identity, identityText: vm.identityText, mtu };
}

/** IPv6 MTU the VMs of a cloud get: what fits in ESP + IPv4 (+ UDP with ESP in UDP) on the underlay MTU. */
export function guestMtu(underlayMtu: number, espInUdp = false): number {
  return espMaxPayload(underlayMtu - 20 - (espInUdp ? 8 : 0));
}

export class Host implements HostView {
  readonly name: string;
  readonly address: number;
  readonly ports = new PortTable();
  readonly mtu: number;
  readonly egressCables: CableCache;
  readonly ingressCables: CableCache;
  readonly sas: SaTable;
  readonly lookup: BindingLookup;
  readonly receiver: Receiver;
  readonly kx: KeyExchangeEngine;
  /** Spare SAs other hosts keyed with this one, bound to no pair yet, and what binds them (spares.ts). */
  readonly spares: InboundSpares;
  readonly spareBinder: SpareBinder;
  readonly sender: Sender;
  readonly rekeyer: Rekeyer;
  readonly updates: Reevaluator;
  readonly upcall: Upcall;
  readonly maker: CableMaker;
  /** Limits of the outbound SAs this host makes. */
  readonly saLimits: SaLimits;
  /** The host's clock (the data path reads it once per batch). */
  get clock(): Clock {
    return this.parts.clock;
  }
  readonly egress: Pipeline;
  readonly ingress: Pipeline;
  private readonly tx: TxFanout;
  /** The underlay sink attach() gave, for the bind-ahead probes. */
  private underlay: PacketSink | undefined;
  readonly probes: BindProbe;
  private readonly reinjectBatch = new Batch();
  private readonly activations = new Map<number, Promise<unknown>>();
  /** Cables freed by sweep() after their lifetime ended. */
  private expiredCables = 0;

  constructor(private readonly parts: HostParts) {
    const { config: cfg, clock, log, cipher } = parts;
    const hostCfg = cfg.hosts.get(parts.host);
    if (!hostCfg) throw new Error(`no host ${parts.host} in ${cfg.file}`);
    this.name = hostCfg.name;
    this.address = hostCfg.address;
    this.mtu = guestMtu(cfg.underlay.mtu, cfg.underlay.espUdpPort !== 0);
    for (const vm of parts.vms ?? vmsOnHost(cfg, parts.host)) this.ports.add(portOf(vm, this.mtu));
    const sw = cfg.switch;

    // State: cables and SAs (a cable evicted from a full cache takes its SAs with it).
    this.egressCables = new CableCache(sw.cables.max, (c) => this.sas.evicted(c), (c) => this.sas.indexOutbound(c));
    this.ingressCables = new CableCache(sw.cables.max, (c) => this.sas.evicted(c));
    const caches = { egress: this.egressCables, ingress: this.ingressCables };
    this.sas = new SaTable(caches, cipher, clock, sw.esp.grace * 1000, log);
    this.updates = new Reevaluator(caches, parts.policy, clock, sw.cables.negativeTtl, (old, next) => this.sas.replaced(old, next), (c) => this.upcall.refresh(c), this.sas);

    // The miss path: Algorithm 2 answers the key exchange, Algorithm 1 runs it.
    const policy = (): Policy => this.updates.current();
    const maker = new CableMaker({ ttl: sw.cables.ttl, negativeTtl: sw.cables.negativeTtl, maxFlows: 65_536 });
    this.maker = maker;
    this.lookup = new BindingLookup(parts.bindings, 2000);
    this.receiver = new Receiver(this, this.lookup, parts.verifier, policy, maker, clock);
    const limits: SaLimits = {
      softPackets: sw.esp.rekey.packets, softBytes: sw.esp.rekey.bytes, softAgeMs: sw.esp.rekey.seconds * 1000,
      hardSeq: DEFAULT_HARD_SEQ, ...parts.saLimits,
    };
    this.saLimits = limits;
    const answering = this.answering();
    this.kx = new KeyExchangeEngine(
      { name: this.name, address: this.address }, parts.hostKey, parts.transport, parts.authority, this.receiver, answering, cipher,
      { alg: sw.esp.cipher, limits, ...DEFAULT_KX, ...parts.kx, exportKeys: parts.exportKeys, shard: parts.shard, spares: parts.spares ?? sw.esp.spares },
      clock, parts.random ?? systemRandom,
    );
    this.sas.reclaim = (sa) => this.kx.reclaim(sa);
    this.spares = new InboundSpares((key) => cipher.removeKey(key));
    this.spareBinder = new SpareBinder(this.spares, cipher, { perSpare: sw.upcall.queuePerCable, total: sw.upcall.queueTotal }, {
      accept: (req) => this.receiver.accept(req),
      bind: (cable, spare) => this.sas.installInbound(cable, spare.spi, spare.key, spare.peer),
      bound: (cable) => answering.answered?.(cable),
      release: (packets) => this.reinject(CableDirection.Ingress, packets, true),
      refused: (drop) => this.kx.counters.refusals[drop]++,
      bug: (err) => log.error('spare-bug', { error: String(err) }),
    });
    this.probes = new BindProbe(cipher, () => this.underlay);
    this.sender = new Sender(this, this.lookup, parts.verifier, policy, this.kx, maker, clock);
    this.rekeyer = new Rekeyer(this.ports, this.egressCables, this.kx, cipher, log, (c, old) => this.sas.rekeyed(c, old));
    this.upcall = new Upcall(
      { plugEgress: (port, dst, prev) => this.sender.plug(port, dst, prev), plugIngress: (src, port, from, prev) => this.receiver.plug(src, port, from, prev) },
      caches,
      { perCable: sw.upcall.queuePerCable, total: sw.upcall.queueTotal, maxPending: 1024, portMissesPerSecond: sw.upcall.portMissesPerSecond, perPortCables: sw.cables.perPort },
      (dir, packets) => this.reinject(dir, packets),
      (err) => log.error('upcall-bug', { error: String(err) }),
      (old, next) => this.sas.replaced(old, next),
      (unused, kept) => this.sas.unused(unused, kept),
    );

    // The data path.
    const pipeParts = {
      ports: this.ports, egressCables: this.egressCables, ingressCables: this.ingressCables, upcall: this.upcall, cipher,
      spis: this.sas.spis, spares: this.spareBinder, localAddress: this.address,
      wantRekey: this.rekeyer.rekey.bind(this.rekeyer),
      checkStages: parts.checkStages ?? process.env.NVI_CHECK_STAGES === '1',
    };
    this.egress = egressPipeline(pipeParts);
    this.ingress = ingressPipeline(pipeParts);
    this.tx = new TxFanout((spi, from, moved) => this.kx.notifySpi(spi, from, moved));
  }

  get policy(): Policy {
    return this.updates.current();
  }

  /** Counters of the control plane around the data path. */
  get counts(): { reevaluated: number; reverifiedByPush: number; rekeys: number; rekeyFailures: number; retiredSas: number; expiredCables: number } {
    return { ...this.updates.counts, ...this.rekeyer.counts, ...this.sas.counts, expiredCables: this.expiredCables };
  }

  /** Where packets go out: the underlay, and the ports there are now (by index). */
  attach(underlay: PacketSink, ports: readonly PacketSink[]): void {
    this.underlay = underlay;
    this.tx.setUnderlay(underlay);
    ports.forEach((sink, index) => this.tx.setPort(index, sink));
  }

  portIndex(identityText: string): number | undefined {
    return this.ports.byIdentity(identityText)?.index;
  }

  owns(id: Uint8Array): boolean {
    return owns(this.parts.shard, id);
  }

  probe(sa: OutboundSa, outer: Uint8Array, peer: number, src: Uint8Array, dst: Uint8Array): boolean {
    return this.probes.send(sa, outer, peer, src, dst);
  }

  /** Port `index` sends through `sink`. */
  setPortSink(index: number, sink: PacketSink): void {
    this.tx.setPort(index, sink);
  }

  /** A VM's port comes (hot attach, or the destination of a migration): frames to and from it flow through `sink`. */
  /**
   * Port `index` takes over its VM's binding (a migrated VM's first frame): its new cables wait
   * for `published`, so that no peer is asked to verify a binding the store does not hold yet.
   */
  activating(index: number, published: Promise<unknown>): void {
    const wait: Promise<unknown> = published.catch(() => {}).finally(() => {
      if (this.activations.get(index) === wait) this.activations.delete(index);
    });
    this.activations.set(index, wait);
  }

  /** Settles when port `index`'s binding is published; undefined when nothing is pending. */
  whenActive(index: number): Promise<unknown> | undefined {
    return this.activations.get(index);
  }

  attachPort(vm: VmConfig, sink: PacketSink): VmPort {
    const port = this.ports.add(portOf(vm, this.mtu));
    this.tx.setPort(port.index, sink);
    return port;
  }

  /**
   * A VM's port goes (detach, or the source of a migration). Its cables go with it; the
   * senders of packets still arriving for it are told it moved (vm/moved, then a NOTIFY), so
   * that they look it up again. Returns the port, or undefined when there was none.
   */
  detachPort(identityText: string): VmPort | undefined {
    const port = this.ports.byIdentity(identityText);
    if (!port) return undefined;
    this.updates.portGone(identityText, this.parts.config.switch.esp.grace * 1000);
    this.ports.remove(port.index);
    this.tx.setPort(port.index, undefined);
    return port;
  }

  /** Egress: a batch of frames read from VM ports. */
  runEgress(b: Batch): void {
    this.egress.process(b, this.parts.clock.now());
    this.parts.observe?.(b, CableDirection.Egress, this.name);
    this.tx.send(b, this.egress.counters);
  }

  /** Ingress: a batch of IPv4 packets read from the underlay. */
  runIngress(b: Batch): void {
    this.ingress.process(b, this.parts.clock.now());
    this.parts.observe?.(b, CableDirection.Ingress, this.name);
    this.tx.send(b, this.ingress.counters);
  }

  /** A new policy revision: re-evaluate exactly the cables it may affect; returns how many. */
  applyPolicy(next: Policy): number {
    return this.updates.applyPolicy(next);
  }

  /** A binding changed in the store (a migration, a renewal): cables to or from it are verified again now. Returns how many. */
  bindingChanged(identity: string): number {
    // Misses and refreshes already asking about it answer from the old binding: asked again.
    this.upcall.bindingChanged(parseIpv6Address(identity), [...this.egressCables.cablesOf(identity), ...this.ingressCables.cablesOf(identity)]);
    return this.updates.bindingChanged(identity);
  }

  /**
   * Forget every cable and SA (operator's `cables --flush`): the next packet of each pair goes
   * through the miss path again. Packets waiting in the upcall are not affected.
   */
  flushCables(): number {
    let n = 0;
    for (const cache of [this.egressCables, this.ingressCables]) {
      for (const c of [...cache.all()]) {
        cache.remove(c);
        this.sas.evicted(c);
        n++;
      }
    }
    this.sas.retireAll();
    return n;
  }

  /**
   * The SA table as the key exchange's responder installs into it, plus one step: a peer
   * that plugged remote -> local makes this host plug local -> remote at once, so that the
   * reply does not wait for a miss and a key exchange of its own (the first packet's round trip).
   * That starts once the ANSWER has left: the initiator's first packet waits for the ANSWER,
   * not for this host's own lookup, checks and INIT.
   */
  private answering(): InboundInstaller {
    const prefetch = this.parts.prefetchReplies ?? this.parts.config.switch.upcall.prefetchReplies;
    return {
      installInbound: (cable, spi, key, peer) => {
        this.sas.installInbound(cable, spi, key, peer);
      },
      answered: (cable) => {
        if (prefetch && cable.localPort >= 0) this.upcall.prefetchEgress(cable.localPort, cable.dst, cable.src);
      },
      spiInUse: (spi) => this.sas.spiInUse(spi) || this.spares.has(spi),
      sendsOn: (spi, from) => this.sas.sendsOn(spi, from),
      spiRejected: (spi, from) => this.sas.spiRejected(spi, from),
      spareRefusal: (from) => {
        const shard = this.parts.shard;
        // A spare's INIT names no VM, so it reaches worker 0, which may not own the VM the pair turns out to have.
        if (shard && shard.count > 1) return 'a host of several data-path threads keeps no spares';
        if (this.spares.countFrom(from) >= MAX_SPARES_FROM_PEER) return `${MAX_SPARES_FROM_PEER} spares from that host already`;
        return undefined;
      },
      installSpare: (spi, key, peer, peerHost) => this.spares.add({ spi, key, peer, peerHost, at: this.parts.clock.now(), held: null }),
    };
  }

  /** An egress cable plugged outside the miss path (a handover): into the cache, replacing any of its pair. */
  install(cable: Cable): void {
    const old = this.egressCables.insert(cable);
    if (old) this.sas.replaced(old, cable);
  }

  /**
   * Free expired cables with their SAs, retire inbound SAs whose grace time is over. Call every
   * SWEEP_INTERVAL_MS. Each call looks at SWEEP_SLOTS slots of each table at most, and frees
   * SWEEP_REMOVALS cables of each at most, going on where the last one stopped: a small host
   * is swept whole every time, one with a million cables in slices of a few ms (a whole pass
   * in about a minute; more when a burst of cables ends together).
   */
  sweep(): void {
    const now = this.parts.clock.now();
    const gone = (c: Cable): void => this.sas.evicted(c);
    this.expiredCables += this.egressCables.removeExpired(now, gone, SWEEP_SLOTS, SWEEP_REMOVALS) +
      this.ingressCables.removeExpired(now, gone, SWEEP_SLOTS, SWEEP_REMOVALS);
    this.sas.sweep(SWEEP_SLOTS);
    this.kx.spares.sweep(now);
    this.spares.sweep(now);
  }

  /** Close the key exchange; the spares stay for the process that takes over (their keys go with this process). */
  close(): void {
    this.kx.close();
  }

  /**
   * Packets released by the upcall run through their pipeline again, in order. Ingress ones
   * are the inner IPv6 packets the pair-check held, or with `whole` the underlay packets a
   * spare held (spare-binder.ts).
   */
  private reinject(direction: CableDirection, packets: HeldPacket[], whole = false): void {
    const b = this.reinjectBatch;
    const egress = direction === CableDirection.Egress;
    for (let k = 0; k < packets.length; ) {
      b.reset();
      for (; k < packets.length && b.count < BATCH_MAX; k++) {
        const p = packets[k];
        const i = b.push(p.data, egress ? FRAME_OFFSET : UNDERLAY_OFFSET, p.port, p.timeUs, p.tag);
        b.flags[i] |= egress || whole ? PacketFlag.Reinjected : PacketFlag.Reinjected | PacketFlag.Inner;
        b.peer[i] = p.peer;
      }
      if (egress) this.runEgress(b);
      else this.runIngress(b);
    }
  }
}
