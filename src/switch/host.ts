// One host's switch, composed: VM ports, the two cable caches, the SA table, SDN Algorithm 1
// (sender.ts) and Algorithm 2 (receiver.ts) behind the upcall, the key exchange, rekeys,
// re-evaluation on policy and binding changes, and the two pipelines
// (src/dataplane/pipeline.ts). The I/O around it (TAP + raw sockets in `run`, pcap files in
// `replay`) reads batches, calls runEgress / runIngress, and receives the packets through
// the sinks it attached.

import type { KeyObject } from 'node:crypto';
import { systemRandom, type Clock, type Random } from '../base/clock.js';
import type { Logger } from '../base/log.js';
import { addrEquals } from '../wire/ipv6.js';
import { espMaxPayload } from '../wire/esp.js';
import type { CloudConfig } from '../config/config.js';
import { vmsOnHost } from '../config/config.js';
import { Batch, BATCH_MAX, FRAME_OFFSET, PacketFlag, UNDERLAY_OFFSET } from '../dataplane/batch.js';
import { CableDirection } from '../dataplane/cable.js';
import { CableCache } from '../dataplane/cable-cache.js';
import { egressPipeline, ingressPipeline, type Pipeline } from '../dataplane/pipeline.js';
import { Upcall, type HeldPacket } from '../dataplane/upcall.js';
import type { VmPort } from '../dataplane/vm-port.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import { DEFAULT_HARD_SEQ, type SaLimits } from '../esp/sa.js';
import type { Policy } from '../policy/decision.js';
import { BindingLookup, type BindingSource } from './binding-lookup.js';
import { CableMaker } from './cable-maker.js';
import type { BindingVerifierLike, HostView } from './host-view.js';
import { DEFAULT_KX, KeyExchangeEngine, type EspKeyExport, type HostAuthority, type KxTiming, type KxTransport } from './key-exchange.js';
import { Receiver } from './receiver.js';
import { Reevaluator } from './reevaluate.js';
import { Rekeyer } from './rekey.js';
import { SaTable } from './sa-table.js';
import { Sender } from './sender.js';
import { TxFanout, type PacketSink } from './tx.js';

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
}

/** IPv6 MTU the VMs of a cloud get: what fits in ESP + IPv4 on the underlay MTU. */
export function guestMtu(underlayMtu: number): number {
  return espMaxPayload(underlayMtu - 20);
}

export class Host implements HostView {
  readonly name: string;
  readonly address: number;
  readonly ports: readonly VmPort[];
  readonly egressCables: CableCache;
  readonly ingressCables: CableCache;
  readonly sas: SaTable;
  readonly lookup: BindingLookup;
  readonly receiver: Receiver;
  readonly kx: KeyExchangeEngine;
  readonly sender: Sender;
  readonly rekeyer: Rekeyer;
  readonly updates: Reevaluator;
  readonly upcall: Upcall;
  readonly egress: Pipeline;
  readonly ingress: Pipeline;
  private readonly byIdentity = new Map<string, number>();
  private readonly tx: TxFanout;
  private readonly reinjectBatch = new Batch();

  constructor(private readonly parts: HostParts) {
    const { config: cfg, clock, log, cipher } = parts;
    const hostCfg = cfg.hosts.get(parts.host);
    if (!hostCfg) throw new Error(`no host ${parts.host} in ${cfg.file}`);
    this.name = hostCfg.name;
    this.address = hostCfg.address;
    const mtu = guestMtu(cfg.underlay.mtu);
    this.ports = vmsOnHost(cfg, parts.host).map((vm, index) => ({
      index, name: vm.name, tenant: vm.tenant, mac: vm.mac, identity: vm.identity, identityText: vm.identityText, mtu,
    }));
    this.ports.forEach((p) => this.byIdentity.set(p.identityText, p.index));
    const sw = cfg.switch;

    // State: cables and SAs (a cable evicted from a full cache takes its SAs with it).
    this.egressCables = new CableCache(sw.cables.max, (c) => this.sas.evicted(c));
    this.ingressCables = new CableCache(sw.cables.max, (c) => this.sas.evicted(c));
    const caches = { egress: this.egressCables, ingress: this.ingressCables };
    this.sas = new SaTable(caches, cipher, clock, sw.esp.grace * 1000, log);
    this.updates = new Reevaluator(caches, parts.policy, clock, sw.cables.negativeTtl, (old, next) => this.sas.replaced(old, next), (c) => this.upcall.refresh(c));

    // The miss path: Algorithm 2 answers the key exchange, Algorithm 1 runs it.
    const policy = (): Policy => this.updates.current();
    const maker = new CableMaker({ ttl: sw.cables.ttl, negativeTtl: sw.cables.negativeTtl, maxFlows: 65_536 });
    this.lookup = new BindingLookup(parts.bindings, 2000);
    this.receiver = new Receiver(this, this.lookup, parts.verifier, policy, maker, clock);
    const limits: SaLimits = {
      softPackets: sw.esp.rekey.packets, softBytes: sw.esp.rekey.bytes, softAgeMs: sw.esp.rekey.seconds * 1000,
      hardSeq: DEFAULT_HARD_SEQ, ...parts.saLimits,
    };
    this.kx = new KeyExchangeEngine(
      { name: this.name, address: this.address }, parts.hostKey, parts.transport, parts.authority, this.receiver, this.sas, cipher,
      { alg: sw.esp.cipher, limits, ...DEFAULT_KX, ...parts.kx, exportKeys: parts.exportKeys }, clock, parts.random ?? systemRandom,
    );
    this.sender = new Sender(this, this.lookup, parts.verifier, policy, this.kx, maker, clock);
    this.rekeyer = new Rekeyer(this.ports, this.egressCables, this.kx, cipher, log);
    this.upcall = new Upcall(
      { plugEgress: (port, dst, hash, prev) => this.sender.plug(port, dst, hash, prev), plugIngress: (src, port, from, hash, prev) => this.receiver.plug(src, port, from, hash, prev) },
      caches,
      { perCable: sw.upcall.queuePerCable, total: sw.upcall.queueTotal, maxPending: 1024 },
      (dir, packets) => this.reinject(dir, packets),
      (err) => log.error('upcall-bug', { error: String(err) }),
      (old, next) => this.sas.replaced(old, next),
    );

    // The data path.
    const pipeParts = {
      ports: this.ports, egressCables: this.egressCables, ingressCables: this.ingressCables, upcall: this.upcall, cipher,
      spis: this.sas.spis, localAddress: this.address,
      portOf: (buf: Uint8Array, off: number) => this.portAt(buf, off),
      wantRekey: this.rekeyer.rekey.bind(this.rekeyer),
      checkStages: parts.checkStages ?? process.env.NVI_CHECK_STAGES === '1',
    };
    this.egress = egressPipeline(pipeParts);
    this.ingress = ingressPipeline(pipeParts);
    this.tx = new TxFanout(this.ports.length, (spi, from) => this.kx.notifyUnknownSpi(spi, from));
  }

  get policy(): Policy {
    return this.updates.current();
  }

  /** Counters of the control plane around the data path. */
  get counts(): { reevaluated: number; reverifiedByPush: number; rekeys: number; rekeyFailures: number; retiredSas: number } {
    return { ...this.updates.counts, ...this.rekeyer.counts, ...this.sas.counts };
  }

  /** Where packets go out. */
  attach(underlay: PacketSink, ports: readonly PacketSink[]): void {
    this.tx.attach(underlay, ports);
  }

  portIndex(identityText: string): number | undefined {
    return this.byIdentity.get(identityText);
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

  /** Retire inbound SAs whose grace time is over. Call about once a second. */
  sweep(): void {
    this.sas.sweep();
  }

  close(): void {
    this.kx.close();
  }

  /** Port of the local VM whose identity is the 16 bytes at buf[off], or -1 (no allocation: a host has few VMs). */
  private portAt(buf: Uint8Array, off: number): number {
    for (const p of this.ports) if (addrEquals(buf, off, p.identity)) return p.index;
    return -1;
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
}
