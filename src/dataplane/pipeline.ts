// The packet path of one host, one batch at a time. Every stage sees the whole batch
// before the next one runs; a packet leaves the path only through a named fate (Next).
//
// Egress: VM port -> underlay (SDN Algorithm 1 at the sender's hypervisor)
//   1. frame-parse     Ethernet, IPv6, extension headers          eth/*, ipv6/*
//   2. mac-guard       Ethernet source = the port's MAC           spoof/mac
//   3. nd-responder    answer NS/RS in place, absorb NA/MLD,      nd/*
//                      never forward multicast
//   4. ip-guard        IPv6 source = the port's identity          spoof/source, dst/*
//   5. cable-lookup    cable cache by (src ID, dst ID); a miss    upcall/*, and the reason an
//                      goes to the upcall (resolve, verify,       unplugged cable stores
//                      decide, plug) and waits in its queue       (verify/*, policy/*, resolve/*)
//   6. egress-filter   per-packet policy: ports, initiate-only    policy/*
//   7. encap           local VM frame, or ESP + IPv4 / IPv4 to    mtu/too-big, sa/exhausted,
//                      the peer host (one cipher call per batch)  esp/seal-failed
//
// Ingress: underlay -> VM port (SDN Algorithm 2 at the receiver's hypervisor)
//   1. underlay-parse  outer IPv4 to this host, protocol 50/41    ipv4/*
//   2. esp-decap       SPI -> SA, peer, replay check, decrypt,    esp/*
//                      then move the window, check the trailer
//   3. inner-parse     inner IPv6 and extension headers           ipv6/*
//   4. pair-check      inner pair = the SA's cable; plain 6in4:   inner/*, ip6in4/*, upcall/*
//                      cable by pair (a miss goes to the upcall)
//   5. ingress-filter  per-packet policy: ports, initiate-only    policy/*
//   6. deliver         Ethernet frame to the destination VM port
//
// The host (src/switch/host.ts) reads batches from its ports, calls process(), hands
// Underlay packets to the underlay port and VmPort/Reply frames to VM ports, and counts.

import type { Batch } from './batch.js';
import { CableFilter } from './cable-filter.js';
import type { CableCache } from './cable-cache.js';
import type { Cable, CableSa } from './cable.js';
import { PipelineCounters } from './counters.js';
import { CableLookup } from './egress/cable-lookup.js';
import { Encap } from './egress/encap.js';
import { FrameParse } from './egress/frame-parse.js';
import { IpGuard } from './egress/ip-guard.js';
import { MacGuard } from './egress/mac-guard.js';
import { NdResponder } from './egress/nd-responder.js';
import { Deliver } from './ingress/deliver.js';
import { EspDecap } from './ingress/esp-decap.js';
import { InnerParse } from './ingress/inner-parse.js';
import { PairCheck } from './ingress/pair-check.js';
import { UnderlayParse } from './ingress/underlay-parse.js';
import type { Stage } from './stage.js';
import type { Upcall } from './upcall.js';
import type { VmPort } from './vm-port.js';
import type { EspCipher } from '../esp/esp-cipher.js';

export interface PipelineParts {
  readonly ports: readonly VmPort[];
  readonly egressCables: CableCache;
  readonly ingressCables: CableCache;
  readonly upcall: Upcall;
  readonly cipher: EspCipher;
  readonly spis: ReadonlyMap<number, CableSa>;
  /** This host's underlay address (uint32). */
  readonly localAddress: number;
  /** Port index of a local VM identity (16 bytes at off), or -1. */
  readonly portOf: (buf: Uint8Array, off: number) => number;
  readonly wantRekey: (cable: Cable) => void;
}

export class Pipeline {
  readonly counters = new PipelineCounters();

  constructor(readonly name: string, readonly stages: readonly Stage[]) {}

  /** Run every stage over the batch, then count each packet's fate. */
  process(b: Batch, now: number): void {
    for (let s = 0; s < this.stages.length; s++) this.stages[s].process(b, now);
    this.counters.account(b);
  }

  stage<T extends Stage>(name: string): T {
    const s = this.stages.find((x) => x.name === name);
    if (!s) throw new Error(`no stage ${name} in ${this.name}`);
    return s as T;
  }
}

export function egressPipeline(p: PipelineParts): Pipeline {
  return new Pipeline('egress', [
    new FrameParse(),
    new MacGuard(p.ports),
    new NdResponder(p.ports),
    new IpGuard(p.ports),
    new CableLookup(p.egressCables, p.upcall),
    new CableFilter('egress-filter'),
    new Encap(p.ports, p.cipher, p.wantRekey),
  ]);
}

export function ingressPipeline(p: PipelineParts): Pipeline {
  return new Pipeline('ingress', [
    new UnderlayParse(p.localAddress),
    new EspDecap(p.spis, p.cipher),
    new InnerParse(),
    new PairCheck(p.ingressCables, p.upcall, p.portOf),
    new CableFilter('ingress-filter'),
    new Deliver(p.ports),
  ]);
}
