// A VM port as the pipeline sees it: who may send on it (MAC, identity) and what it may
// receive (MTU). The I/O side (TAP, pcap) is separate and plugs in by port index.

import { linkLocalFromMac } from '../wire/icmpv6.js';

/** The switch's MAC on every VM link: it is each VM's only neighbour and router. */
export const ROUTER_MAC = Buffer.from([0x02, 0x4e, 0x56, 0x49, 0x00, 0x01]);
/** The switch's link-local address on every VM link (modified EUI-64 of ROUTER_MAC): fe80::4e:56ff:fe49:1. */
export const ROUTER_LINK_LOCAL = linkLocalFromMac(ROUTER_MAC);

export interface VmPort {
  /** Index in the host's port table; frames carry it through the batch. */
  readonly index: number;
  readonly name: string;
  readonly tenant: string;
  readonly mac: Buffer;
  readonly identity: Buffer;
  readonly identityText: string;
  /** IPv6 MTU advertised to the guest: the underlay MTU minus the exact encapsulation overhead. */
  readonly mtu: number;
}
