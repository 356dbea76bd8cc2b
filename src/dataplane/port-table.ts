// The VM ports of one host. A port keeps its index (its slot) while it is attached; a
// detached port's slot is empty until another port takes it. Ports are added and removed by
// the control plane, between batches, never while a batch runs (one thread); a packet that
// outlived its port (one held by the upcall) is dropped as port/gone at the first stage.

import { addrEquals } from '../wire/ipv6.js';
import type { VmPort } from './vm-port.js';
import { MAX_PORTS } from './cable.js';

export class PortTable {
  private readonly slots: (VmPort | undefined)[] = [];
  private readonly byId = new Map<string, VmPort>();

  /** Port i. Only for an index known to be present (a packet's port was checked by mac-guard). */
  at(i: number): VmPort {
    return this.slots[i]!;
  }

  has(i: number): boolean {
    return this.slots[i] !== undefined;
  }

  /** Attach a port in the first free slot; its index is that slot. */
  add(p: Omit<VmPort, 'index'>): VmPort {
    if (this.byId.has(p.identityText)) throw new Error(`a port for ${p.identityText} is attached already`);
    let index = this.slots.indexOf(undefined);
    if (index < 0) index = this.slots.length;
    if (index >= MAX_PORTS) throw new Error(`a host has at most ${MAX_PORTS} VM ports attached at once`);
    const port: VmPort = { ...p, index };
    this.slots[index] = port;
    this.byId.set(port.identityText, port);
    return port;
  }

  remove(index: number): VmPort | undefined {
    const port = this.slots[index];
    if (!port) return undefined;
    this.slots[index] = undefined;
    this.byId.delete(port.identityText);
    return port;
  }

  byIdentity(identityText: string): VmPort | undefined {
    return this.byId.get(identityText);
  }

  byName(name: string): VmPort | undefined {
    for (const p of this.slots) if (p && p.name === name) return p;
    return undefined;
  }

  /** Port index of the local VM whose identity is the 16 bytes at buf[off], or -1 (no allocation: a host has few VMs). */
  portOf(buf: Uint8Array, off: number): number {
    for (const p of this.slots) if (p && addrEquals(buf, off, p.identity)) return p.index;
    return -1;
  }

  /** The attached ports, by index. */
  all(): VmPort[] {
    return this.slots.filter((p): p is VmPort => p !== undefined);
  }

  /** One more than the highest index ever used (the size of per-port arrays). */
  get capacity(): number {
    return this.slots.length;
  }
}
