// Every host of a cloud in one process, for `nvi-switch replay` and the pipeline tests.
// Hosts are the real Host objects with the real store (a private SQLite file), verifier,
// policy, key exchange (over an in-memory hub) and pipelines; only the I/O differs: frames
// come from pcap files, underlay packets travel through an in-memory wire to the host
// they are addressed to, and what comes out is recorded (and written as pcap if asked).
//
// Each input frame carries a tag, so its verdict can be followed across held queues and
// hosts: the host that set its final fate, and the fate.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CloudConfig } from '../config/config.js';
import { Batch, BATCH_MAX, FRAME_OFFSET, Next, UNDERLAY_OFFSET } from '../dataplane/batch.js';
import { CableDirection } from '../dataplane/cable.js';
import { Drop, dropName } from '../base/drops.js';
import { IPV4_HLEN, makeOuterTemplate, writeOuter } from '../wire/ipv4.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter } from '../io/pcap.js';
import type { SaLimits } from '../esp/sa.js';
import type { Logger } from '../base/log.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { hostPrivateKey, newVerifier, openCloud, publishBindings, type Cloud } from '../switch/cloud.js';
import type { BindingVerifier } from '../trust/verifier.js';
import { restoreHandover, saveHandover, type HandoverState, type Restored } from '../switch/handover-state.js';
import { Host } from '../switch/host.js';
import { type PacketSink } from '../switch/tx.js';
import type { Clock } from '../base/clock.js';
import { MemoryHub } from '../switch/transports.js';
import type { EspKeyExport, KxTiming } from '../switch/key-exchange.js';

export type Fate = 'delivered' | 'answered' | 'consumed' | 'dropped' | 'underlay' | 'pending';

export interface Verdict {
  fate: Fate;
  /** Host that set the final fate. */
  host: string;
  /** Drop reason name, or what was delivered/answered. */
  detail: string;
  /** Egress -> ingress hosts the packet went through. */
  path: string[];
}

export interface OutputRecord {
  readonly data: Buffer;
  readonly timeUs: number;
  readonly tag: number;
}

export interface OfflineOptions {
  readonly cipher: EspCipher;
  readonly clock: Clock;
  readonly log: Logger;
  readonly saLimits?: Partial<SaLimits>;
  /** Receive the ESP keys as SAs are made (debug export for Wireshark). */
  readonly exportKeys?: (k: EspKeyExport) => void;
  /** Carry underlay packets into the ingress of the host they are addressed to (default true). */
  readonly carry?: boolean;
  /** The hub the key exchange travels over (tests pass one that loses or delays messages). */
  readonly hub?: MemoryHub;
  /** Key-exchange timing and limits (tests shorten the retries). */
  readonly kx?: Partial<KxTiming>;
  /** Plug a reply's cable when the peer plugs the request's (default true). */
  readonly prefetchReplies?: boolean;
  /** Spare SAs kept with each peer host (default: the config's switch.esp.spares). */
  readonly spares?: number;
}

const UDP_HLEN = 8;
const PROTO_UDP = 17;

export class OfflineCloud {
  readonly hosts = new Map<string, Host>();
  /** Each host's binding verifier (for its counters). */
  readonly verifiers = new Map<string, BindingVerifier>();
  readonly verdicts = new Map<number, Verdict>();
  /** Packets on the underlay (ESP, IPv6-in-IPv4, and key-exchange UDP), as IPv4. */
  readonly underlay: OutputRecord[] = [];
  /** Frames handed to VM ports, with the port name. */
  readonly delivered: (OutputRecord & { readonly vm: string; readonly host: string })[] = [];
  /** Frames the switch answered with (NA, RA, Packet Too Big). */
  readonly replies: (OutputRecord & { readonly vm: string })[] = [];
  private readonly wire: { data: Buffer; to: number; timeUs: number; tag: number }[] = [];
  private readonly byAddress = new Map<number, Host>();
  private readonly hub: MemoryHub;
  private readonly batch = new Batch();
  private timeUs = 0;

  private constructor(readonly cloud: Cloud, private readonly opts: OfflineOptions, private readonly dir: string) {
    this.hub = opts.hub ?? new MemoryHub();
  }

  static async open(config: CloudConfig, opts: OfflineOptions): Promise<OfflineCloud> {
    const dir = mkdtempSync(join(tmpdir(), 'nvi-replay-'));
    try {
      const store = SqliteStore.open(join(dir, 'store.db'));
      const cloud = await openCloud(config, { clock: opts.clock, store, operator: true });
      const off = new OfflineCloud(cloud, opts, dir);
      for (const name of config.hosts.keys()) {
        await publishBindings(cloud, name);
        off.addHost(name);
      }
      return off;
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  private addHost(name: string): void {
    const cfg = this.cloud.config;
    const address = cfg.hosts.get(name)!.address;
    const transport = this.hub.transport(address);
    const send = transport.send;
    transport.send = (msg, to) => {
      this.underlay.push({ data: udpPacket(address, to, cfg.underlay.keyExchangePort, msg), timeUs: this.timeUs, tag: -1 });
      send(msg, to);
    };
    const verifier = newVerifier(this.cloud, this.cloud.store);
    this.verifiers.set(name, verifier);
    const host = new Host({
      config: cfg,
      host: name,
      bindings: this.cloud.store,
      verifier,
      authority: verifier,
      policy: this.cloud.policy,
      hostKey: hostPrivateKey(cfg, name),
      transport,
      cipher: this.opts.cipher,
      clock: this.opts.clock,
      log: this.opts.log,
      saLimits: this.opts.saLimits,
      kx: this.opts.kx,
      prefetchReplies: this.opts.prefetchReplies,
      spares: this.opts.spares,
      exportKeys: this.opts.exportKeys,
      observe: (b, direction, hostName) => this.observe(b, direction, hostName),
    });
    const underlay: PacketSink = {
      send: (b, idx, n) => {
        for (let k = 0; k < n; k++) {
          const i = idx[k];
          const data = Buffer.from(b.view(i));
          this.underlay.push({ data, timeUs: b.time[i], tag: b.tag[i] });
          if (this.opts.carry !== false) this.wire.push({ data, to: b.peer[i], timeUs: b.time[i], tag: b.tag[i] });
          else if (b.tag[i] >= 0) this.sentOnly(b.tag[i], name);
        }
        return n;
      },
    };
    const ports: PacketSink[] = host.ports.all().map((port) => ({
      send: (b, idx, n) => {
        for (let k = 0; k < n; k++) {
          const i = idx[k];
          const rec = { data: Buffer.from(b.view(i)), timeUs: b.time[i], tag: b.tag[i], vm: port.name };
          if (b.next[i] === Next.VmPort) this.delivered.push({ ...rec, host: name });
          else this.replies.push(rec);
        }
        return n;
      },
    }));
    host.attach(underlay, ports);
    this.hosts.set(name, host);
    this.byAddress.set(address, host);
  }

  /** Frames captured on `vm`'s port enter its host's egress, a batch at a time; then everything settles. */
  async sendFrames(vm: string, frames: readonly { data: Buffer; timeUs: number; tag: number }[]): Promise<void> {
    const cfg = this.cloud.config;
    const vmCfg = cfg.vms.get(vm);
    if (!vmCfg) throw new Error(`no VM ${vm} in ${cfg.file}`);
    const host = this.hosts.get(vmCfg.host)!;
    const port = host.portIndex(vmCfg.identityText)!;
    for (let k = 0; k < frames.length; ) {
      const b = this.batch;
      b.reset();
      for (; k < frames.length && b.count < BATCH_MAX; k++) {
        const f = frames[k];
        this.timeUs = f.timeUs;
        if (f.tag >= 0) this.verdicts.set(f.tag, { fate: 'pending', host: host.name, detail: '', path: [host.name] });
        if (b.push(f.data, FRAME_OFFSET, port, f.timeUs, f.tag) < 0) {
          this.verdicts.set(f.tag, { fate: 'dropped', host: host.name, detail: `${dropName(Drop.EthTooBig)} (does not fit a packet slot)`, path: [host.name] });
          host.egress.counters.refusedAtPort(Drop.EthTooBig, 1);
        }
      }
      host.runEgress(b);
      await this.settle();
    }
  }

  /** Underlay packets (IPv4) arriving at the host with `address`. */
  receiveUnderlay(packets: readonly { data: Buffer; to: number; timeUs: number; tag: number }[]): void {
    const b = this.batch;
    for (let k = 0; k < packets.length; ) {
      const host = this.byAddress.get(packets[k].to);
      if (!host) {
        k++;
        continue;
      }
      b.reset();
      for (; k < packets.length && b.count < BATCH_MAX && packets[k].to === host.address; k++) {
        const p = packets[k];
        if (b.push(p.data, UNDERLAY_OFFSET, 0, p.timeUs, p.tag) >= 0 && p.tag >= 0) this.verdicts.get(p.tag)?.path.push(host.name);
      }
      host.runIngress(b);
    }
  }

  /** Deliver the wire and wait until no upcall or key exchange is in progress. */
  async settle(): Promise<void> {
    for (let round = 0; round < 100_000; round++) {
      if (this.wire.length > 0) {
        const packets = this.wire.splice(0, this.wire.length);
        this.receiveUnderlay(packets);
        continue;
      }
      const busy = [...this.hosts.values()].some((h) => h.upcall.inFlight > 0 || h.kx.busy || h.spareBinder.inFlight > 0);
      if (!busy) {
        await new Promise((r) => setImmediate(r));
        if (this.wire.length === 0 && ![...this.hosts.values()].some((h) => h.upcall.inFlight > 0 || h.kx.busy || h.spareBinder.inFlight > 0)) return;
        continue;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    throw new Error('replay did not settle: an upcall or key exchange never finished');
  }

  /** Without carrying, a packet handed to the underlay ends there. */
  private sentOnly(tag: number, host: string): void {
    const v = this.verdicts.get(tag);
    if (v) Object.assign(v, { fate: 'underlay', host, detail: 'sent on the underlay (not carried: --one-host)' });
  }

  private observe(b: Batch, direction: CableDirection, host: string): void {
    for (let i = 0; i < b.count; i++) {
      const tag = b.tag[i];
      if (tag < 0) continue;
      const v = this.verdicts.get(tag);
      if (!v) continue;
      switch (b.next[i]) {
        case Next.Drop:
          Object.assign(v, { fate: 'dropped', host, detail: dropName(b.reason[i] as Drop) });
          break;
        case Next.Consumed:
          Object.assign(v, { fate: 'consumed', host, detail: 'absorbed by the switch' });
          break;
        case Next.Reply:
          if (b.reason[i] === Drop.None) Object.assign(v, { fate: 'answered', host, detail: 'answered by the switch' });
          else Object.assign(v, { fate: 'dropped', host, detail: `${dropName(b.reason[i] as Drop)} (ICMPv6 error sent)` });
          break;
        case Next.VmPort: {
          const h = this.hosts.get(host)!;
          Object.assign(v, { fate: 'delivered', host, detail: `to ${h.ports.at(b.outPort[i]).name}${direction === CableDirection.Egress ? ' (same host)' : ''}` });
          break;
        }
        default:
          break; // Underlay and Held: the packet's story goes on
      }
    }
  }

  /** Write underlay.pcap (raw IPv4), delivered.pcap and replies.pcap (Ethernet) into `dir`. */
  writeCaptures(dir: string): void {
    mkdirSync(dir, { recursive: true });
    const write = (file: string, link: number, recs: readonly OutputRecord[]): void => {
      const w = new PcapWriter(join(dir, file), link);
      for (const r of recs) w.write(r.data, 0, r.data.length, r.timeUs);
      w.close();
    };
    write('underlay.pcap', LINKTYPE_RAW, this.underlay);
    write('delivered.pcap', LINKTYPE_ETHERNET, this.delivered);
    write('replies.pcap', LINKTYPE_ETHERNET, this.replies);
  }

  /**
   * Host `name`'s switch hands over to a new one, as `nvi-switch restart` does between two
   * processes: its state is saved, the old host's SAs and keys go, and a new host takes the
   * state over before it sees any packet.
   */
  async handOver(name: string): Promise<Restored> {
    const old = this.hosts.get(name);
    if (!old) throw new Error(`no host ${name}`);
    const state = JSON.parse(JSON.stringify(saveHandover(old, this.opts.cipher))) as HandoverState; // as it crosses the pipe
    old.flushCables();
    old.close();
    this.addHost(name);
    return restoreHandover(this.hosts.get(name)!, this.opts.cipher, state, this.opts.log);
  }

  close(): void {
    for (const h of this.hosts.values()) h.close();
    void this.cloud.store.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** An IPv4/UDP packet carrying a key-exchange message, as it appears on the underlay. */
function udpPacket(src: number, dst: number, port: number, msg: Buffer): Buffer {
  const total = IPV4_HLEN + UDP_HLEN + msg.length;
  const p = Buffer.alloc(total);
  writeOuter(p, 0, makeOuterTemplate(src, dst, PROTO_UDP), total, 0);
  p.writeUInt16BE(port, IPV4_HLEN);
  p.writeUInt16BE(port, IPV4_HLEN + 2);
  p.writeUInt16BE(UDP_HLEN + msg.length, IPV4_HLEN + 4);
  msg.copy(p, IPV4_HLEN + UDP_HLEN); // UDP checksum 0: none (allowed over IPv4, RFC 768)
  return p;
}
