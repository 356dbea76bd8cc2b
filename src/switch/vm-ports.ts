// The VM ports of a running switch and their life cycle: a port attached or detached while the
// switch runs, and both ends of a live migration. The port table changes only between batches
// (one thread: these run from the control socket, never inside a batch).
//
// attach VM        open its TAP, add its port, sign and publish its binding (next epoch)
// detach VM        withdraw its binding, remove its port (its cables go; packets still
//                  arriving for it are counted as vm/moved and their senders told), close the TAP
// Migration, driven by migrate.ts on both hosts' control sockets:
//   prepare (dest)  a key offer: an ephemeral X25519 key signed by this host (key-transfer.ts)
//   out (source)    seal the VM key to the offer (checked against the destination's certified
//                   key), remove the port and close the TAP; the key file stays until done
//   in (dest)       open the sealed key into this host's key directory, open the TAP and add the
//                   port, waiting for the VM: its first frame on the port activates it, i.e. this
//                   host signs the binding for its own address with the next epoch and publishes
//                   it with the store's compare-and-swap (one winner if two hosts race)
//   done (source)   the destination is active: forget the VM key
//   abort (source)  the destination failed before activating: the port comes back here (next epoch)

import { existsSync, rmSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { NviError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { formatIpv4 } from '../base/address.js';
import { loadConfig, type CloudConfig, type VmConfig } from '../config/config.js';
import { StreamPort } from '../io/stream-port.js';
import { TapPort, type TapHandover } from '../io/tap.js';
import type { VmLink } from '../io/vm-link.js';
import { hostKeyPaths, readPrivateKey, writePrivateKey } from '../trust/pki.js';
import { makeOffer, openSealed, sealTo, type KeyOffer, type SealedKey } from '../trust/key-transfer.js';
import type { HostAuthority } from './key-exchange.js';
import type { Host } from './host.js';
import type { PacketSink } from './tx.js';
import { Drop } from '../base/drops.js';
import { rememberDetached } from './detached-list.js';
import { streamPortPath } from './paths.js';

export type PortState = 'absent' | 'waiting' | 'activating' | 'active';

/** A port as a handover passes it: the VM, its TAP's name, the fd and how it is read. */
export interface PortHandover extends TapHandover {
  readonly vm: string;
  readonly name: string;
  readonly fd: number;
}

export interface VmPortsContext {
  readonly config: CloudConfig;
  readonly hostName: string;
  readonly host: Host;
  readonly hostKey: KeyObject;
  readonly authority: HostAuthority;
  readonly log: Logger;
  /** Create each VM's TAP in network namespace `${prefix}${vm}` (the lab). */
  readonly vmNetnsPrefix?: string;
  /** Sign and publish `vm`'s binding on this host, one epoch above the store's; returns the epoch. */
  publish(vm: VmConfig): Promise<number>;
  /** Remove `vm`'s binding from the store if it is still this host's. */
  withdraw(vm: VmConfig): Promise<boolean>;
  /** Read a batch from a port (the switch's egress loop). */
  readLink(link: VmLink, index: number): void;
  /**
   * Keep `vm` detached (or not) across restarts. Default: rememberDetached(). A worker of
   * several (workers/) hands it to the main thread, the one writer of the host's list.
   */
  remember?(vm: string, detached: boolean): void;
}

/** Where the pipeline's frames for a port go; a link with no VM behind it refuses them as port/down. */
function sinkOf(link: VmLink): PacketSink {
  return { send: (b, idx, n) => link.write(b, idx, n), refusal: () => (link.up ? Drop.TxPortError : Drop.PortDown) };
}

/** A VM is on this host only if its key is in this host's key directory: the config says where it started. */
export class VmPorts {
  private readonly links = new Map<number, VmLink>();
  private readonly waiting = new Map<number, VmConfig>();
  private readonly activating = new Set<number>();
  private readonly offers = new Map<string, { offer: KeyOffer; secret: KeyObject }>();
  /** VMs whose key was sealed to another host: where they go. */
  private readonly leavingTo = new Map<string, string>();
  readonly counts = { attached: 0, detached: 0, migratedIn: 0, migratedOut: 0, aborted: 0 };

  constructor(private readonly ctx: VmPortsContext) {}

  /**
   * The links of the ports there are at start (their bindings are published by the caller). A
   * link that cannot be opened is logged and its port removed: the switch runs for the others.
   */
  openInitial(): void {
    for (const port of this.ctx.host.ports.all()) {
      let link: VmLink;
      try {
        link = this.openLink(this.ctx.config.vms.get(port.name)!);
      } catch (e) {
        this.ctx.log.error('port-not-opened', { vm: port.name, error: (e as Error).message });
        this.ctx.host.detachPort(port.identityText);
        continue;
      }
      this.ctx.host.setPortSink(port.index, sinkOf(link));
      this.bindLink(link, port.index);
    }
  }

  private remember(name: string, detached: boolean): void {
    if (this.ctx.remember) this.ctx.remember(name, detached);
    else rememberDetached(this.ctx.config, this.ctx.hostName, name, detached);
  }

  /** The links, by port index. */
  get all(): ReadonlyMap<number, VmLink> {
    return this.links;
  }

  state(vm: string): PortState {
    const port = this.ctx.host.ports.byName(vm);
    if (!port) return 'absent';
    if (this.waiting.has(port.index)) return 'waiting';
    return this.activating.has(port.index) ? 'activating' : 'active';
  }

  /** A new (or returning) VM on this host: its port, then its binding. */
  async attach(name: string): Promise<{ epoch: number }> {
    const vm = this.vmOnThisHost(name);
    this.keyHere(vm);
    this.addPort(vm);
    this.remember(name, false);
    const epoch = await this.ctx.publish(vm);
    this.counts.attached++;
    this.ctx.log.info('vm-attached', { vm: name, identity: vm.identityText, epoch });
    return { epoch };
  }

  /** The VM leaves: its binding goes, then its port. */
  async detach(name: string): Promise<{ withdrawn: boolean }> {
    const vm = this.vm(name);
    if (!this.ctx.host.ports.byName(name)) throw new NviError('NVI_ERR_USAGE', `VM ${name} has no port on ${this.ctx.hostName}`);
    const withdrawn = await this.ctx.withdraw(vm);
    this.removePort(vm);
    this.remember(name, true);
    this.counts.detached++;
    this.ctx.log.info('vm-detached', { vm: name, identity: vm.identityText, withdrawn });
    return { withdrawn };
  }

  /** Migration, at the destination: an offer for the VM's key. */
  prepare(name: string): KeyOffer {
    const vm = this.vm(name);
    if (this.ctx.host.ports.byName(name)) throw new NviError('NVI_ERR_USAGE', `VM ${name} already has a port on ${this.ctx.hostName}`);
    const o = makeOffer(vm.name, this.ctx.hostName, this.ctx.hostKey);
    this.offers.set(name, o);
    return o.offer;
  }

  /** Migration, at the source: the VM key sealed to the destination's offer; the port goes. */
  async out(name: string, offer: KeyOffer): Promise<SealedKey> {
    const sealed = await this.seal(name, offer);
    this.release(name);
    return sealed;
  }

  /**
   * Migration, at the source: the VM key sealed to the destination's offer (checked against the
   * destination's certified host key). The port stays: a QEMU guest runs here until QEMU switches
   * it over (release follows); the key file stays until done.
   */
  async seal(name: string, offer: KeyOffer): Promise<SealedKey> {
    const vm = this.vm(name);
    if (!this.ctx.host.ports.byName(name)) throw new NviError('NVI_ERR_USAGE', `VM ${name} has no port on ${this.ctx.hostName}`);
    if (offer.vm !== name || offer.host === this.ctx.hostName) throw new NviError('NVI_ERR_USAGE', `a key offer for ${offer.vm} from ${offer.host} cannot take ${name} from ${this.ctx.hostName}`);
    const dest = this.ctx.config.hosts.get(offer.host);
    if (!dest) throw new NviError('NVI_ERR_USAGE', `no host ${offer.host} in the config`);
    const auth = await this.ctx.authority.hostKey(dest.name, dest.addressText);
    if (!auth.key) throw new NviError('NVI_ERR_KEY_TRANSFER', `the certificate of ${dest.name} does not verify: the key is not sealed to it`);
    const sealed = sealTo(offer, auth.key, readPrivateKey(this.keyPath(vm)));
    this.leavingTo.set(name, dest.name);
    return sealed;
  }

  /** Migration, at the source: the VM runs elsewhere now; its port goes. */
  release(name: string): void {
    const vm = this.vm(name);
    if (!this.ctx.host.ports.byName(name)) return; // gone already
    const to = this.leavingTo.get(name);
    this.leavingTo.delete(name);
    this.removePort(vm);
    this.counts.migratedOut++;
    const dest = to === undefined ? undefined : this.ctx.config.hosts.get(to);
    this.ctx.log.info('vm-leaving', { vm: name, identity: vm.identityText, to, toAddress: dest && formatIpv4(dest.address) });
  }

  /** Migration, at the destination: the key, the port, and the wait for the VM's first frame. */
  in(name: string, sealed: SealedKey): void {
    const o = this.offers.get(name);
    if (!o) throw new NviError('NVI_ERR_USAGE', `no key offer for ${name} was made on ${this.ctx.hostName}`);
    this.offers.delete(name);
    const vm = { ...this.vm(name), host: this.ctx.hostName };
    writePrivateKey(this.keyPath(vm), openSealed(sealed, o.offer, o.secret));
    const port = this.addPort(vm);
    this.waiting.set(port.index, vm);
    this.counts.migratedIn++;
  }

  /** The VM's first frame on a waiting port: this host takes over its binding. */
  activate(index: number): void {
    const vm = this.waiting.get(index);
    if (!vm) return;
    this.waiting.delete(index);
    this.activating.add(index);
    const published = this.ctx.publish(vm);
    this.ctx.host.activating(index, published);
    void published.then(
      (epoch) => {
        this.activating.delete(index);
        this.ctx.log.info('vm-activated', { vm: vm.name, identity: vm.identityText, epoch, on: 'first frame' });
      },
      (e) => {
        // Another host published a higher epoch (a race it won), or the store is away: the port goes, the source takes the VM back.
        this.activating.delete(index);
        this.ctx.log.error('vm-activation-failed', { vm: vm.name, error: (e as Error).message });
        this.removePort(vm);
      },
    );
  }

  isWaiting(index: number): boolean {
    return this.waiting.has(index);
  }

  /** Migration done, at the source: the VM key is the destination's now. */
  done(name: string): void {
    const vm = this.vm(name);
    if (this.ctx.host.ports.byName(name)) throw new NviError('NVI_ERR_USAGE', `VM ${name} still has a port on ${this.ctx.hostName}: not migrated away`);
    rmSync(this.keyPath(vm), { force: true });
    this.ctx.log.info('vm-left', { vm: name, identity: vm.identityText });
  }

  /** Migration given up before the VM ran here, at the destination: the waiting port and the key go. */
  cancel(name: string): void {
    this.offers.delete(name);
    const port = this.ctx.host.ports.byName(name);
    if (port && !this.waiting.has(port.index)) throw new NviError('NVI_ERR_USAGE', `VM ${name} runs on ${this.ctx.hostName}: not a migration to cancel`);
    const vm = { ...this.vm(name), host: this.ctx.hostName };
    if (port) this.removePort(vm);
    rmSync(this.keyPath(vm), { force: true });
    this.ctx.log.warn('vm-migration-cancelled', { vm: name });
  }

  /** Migration failed at the destination, at the source: the port comes back here. */
  async abort(name: string): Promise<{ epoch: number }> {
    const vm = { ...this.vm(name), host: this.ctx.hostName };
    this.keyHere(vm);
    this.addPort(vm);
    const epoch = await this.ctx.publish(vm);
    this.counts.aborted++;
    this.ctx.log.warn('vm-migration-aborted', { vm: name, epoch });
    return { epoch };
  }

  closeAll(): void {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }

  /**
   * What a process taking this switch over needs of each port: its fd and how it is read.
   * Refused while a migration is under way, or for a stream port (its listening socket's
   * path goes with the process that bound it).
   */
  handoverLinks(): PortHandover[] {
    const moving = [...this.waiting.values()].map((vm) => vm.name).concat([...this.leavingTo.keys()], [...this.activating].map((i) => this.ctx.host.ports.at(i).name));
    if (moving.length > 0) throw new NviError('NVI_ERR_HANDOVER', `a migration of ${moving.join(', ')} is under way: hand over when it is done`);
    const out: PortHandover[] = [];
    for (const [index, link] of this.links) {
      const vm = this.ctx.host.ports.at(index).name;
      if (!(link instanceof TapPort)) throw new NviError('NVI_ERR_HANDOVER', `VM ${vm}'s port is a stream socket, which cannot be handed over yet: stop and start the switch instead`);
      out.push({ vm, name: link.name, fd: link.fd, ...link.handover });
    }
    return out;
  }

  /** Stop reading every port (a handover); frames queue in the kernel for the next process. */
  pauseAll(): void {
    for (const link of this.links.values()) if (link instanceof TapPort) link.pause();
  }

  /**
   * The links of the ports there are at start, taken over from the process before (fds as
   * the handover passed them); they are read only from resume() on.
   */
  adoptInitial(links: readonly PortHandover[]): void {
    for (const l of links) {
      const port = this.ctx.host.ports.byName(l.vm);
      if (!port) throw new NviError('NVI_ERR_HANDOVER', `handed port of VM ${l.vm}, which has no port here`);
      const link = TapPort.adopt(l.name, l.fd, l);
      this.links.set(port.index, link);
      this.ctx.host.setPortSink(port.index, sinkOf(link));
    }
  }

  /** Read every port from now on (after adoptInitial). */
  resume(): void {
    for (const [index, link] of this.links) this.bindLink(link, index);
  }

  /** The VM's link, then its port (frames can only arrive once both exist: the link is read from the next turn of the loop). */
  private addPort(vm: VmConfig) {
    const link = this.openLink(vm);
    try {
      const port = this.ctx.host.attachPort(vm, sinkOf(link));
      this.bindLink(link, port.index);
      return port;
    } catch (e) {
      link.close();
      throw e;
    }
  }

  private removePort(vm: VmConfig): void {
    const port = this.ctx.host.detachPort(vm.identityText);
    if (!port) return;
    this.waiting.delete(port.index);
    this.activating.delete(port.index);
    const link = this.links.get(port.index);
    this.links.delete(port.index);
    link?.close();
  }

  /** The VM's port as its config says: a TAP of our own (the lab: in the VM's namespace), the hypervisor's TAP, or a stream socket. */
  private openLink(vm: VmConfig): VmLink {
    const { mtu } = this.ctx.host;
    const { offload, offloadUdp } = this.ctx.config.switch;
    switch (vm.port.kind) {
      case 'tap': {
        const netns = this.ctx.vmNetnsPrefix === undefined ? undefined : `${this.ctx.vmNetnsPrefix}${vm.name}`;
        return TapPort.open(vm.tap, { mtu, netns, mac: vm.mac, offload, offloadUdp });
      }
      case 'qemu-tap':
        return TapPort.attach(vm.tap, { mtu, offload });
      case 'stream': {
        const path = vm.port.path ?? streamPortPath(this.ctx.config, this.ctx.hostName, vm.name);
        return StreamPort.listen(path, { onEvent: (event, detail) => this.ctx.log.info(event, { vm: vm.name, ...detail }) });
      }
    }
  }

  private bindLink(link: VmLink, index: number): void {
    this.links.set(index, link);
    link.onReadable(() => this.ctx.readLink(link, index));
  }

  /** The VM as the config file says now (it may have been added since the switch started). */
  private vm(name: string): VmConfig {
    const fresh = loadConfig(this.ctx.config.file).vms.get(name);
    if (!fresh) throw new NviError('NVI_ERR_USAGE', `no VM ${name} in ${this.ctx.config.file}`);
    return fresh;
  }

  private vmOnThisHost(name: string): VmConfig {
    const vm = this.vm(name);
    if (vm.host !== this.ctx.hostName) throw new NviError('NVI_ERR_USAGE', `VM ${name} is placed on ${vm.host} in ${this.ctx.config.file}, not on ${this.ctx.hostName}`);
    if (this.ctx.host.ports.byName(name)) throw new NviError('NVI_ERR_USAGE', `VM ${name} already has a port on ${this.ctx.hostName}`);
    return vm;
  }

  private keyPath(vm: VmConfig): string {
    return hostKeyPaths(this.ctx.config.hosts.get(this.ctx.hostName)!.keyDir).vmKey(vm.name);
  }

  private keyHere(vm: VmConfig): void {
    if (!existsSync(this.keyPath(vm))) throw new NviError('NVI_ERR_PKI', `the key of VM ${vm.name} is not in ${this.ctx.hostName}'s key directory (${this.keyPath(vm)})`);
  }
}
