// The packet path of one host, one batch at a time. Every stage sees the whole batch
// before the next one runs; a packet leaves the path only through a fate a stage declares
// (stage.ts), and is counted under that stage and fate or drop reason (counters.ts).
//
// Egress: VM port -> underlay (SDN Algorithm 1 at the sender's hypervisor)
//   1. frame-parse     Ethernet, IPv6, extension headers          eth/*, ipv6/*
//   2. mac-guard       Ethernet source = the port's MAC           spoof/mac
//   3. dhcp-server     answer DHCPv6: the identity as the one     dhcp/*        -> reply, consumed
//                      address a guest is given
//   4. nd-responder    answer NS/RS in place, absorb NA/MLD,      nd/*          -> reply, consumed
//                      never forward multicast
//   5. ip-guard        IPv6 source = the port's identity          spoof/source, dst/*
//   6. cable-lookup    cable cache by (src ID, dst ID); a miss    upcall/*, and the reason an
//                      goes to the upcall (resolve, verify,       unplugged cable stores
//                      decide, plug) and waits in its queue       (resolve/*, verify/*, policy/*,
//                                                                 sa/*)         -> held
//   7. egress-filter   per-packet policy: ports, initiate-only    policy/*
//   8. encap           local VM frame, or ESP + IPv4 / IPv4 to    mtu/too-big, sa/exhausted,
//                      the peer host (one cipher call per batch)  esp/seal-failed
//                                                                               -> vm-port, underlay, reply
//
// Ingress: underlay -> VM port (SDN Algorithm 2 at the receiver's hypervisor)
//   1. underlay-parse  outer IPv4 to this host, protocol 50/41    ipv4/*
//   2. esp-decap       SPI -> SA, peer, replay check, one cipher  esp/*, inner/pair-mismatch
//                      call per batch; the trailer, and the inner
//                      pair = the SA's cable; only then the
//                      replay window moves
//   3. inner-parse     inner IPv6 and extension headers           ipv6/*
//   4. pair-check      ESP: the SA's cable still plugged; plain   inner/*, ip6in4/*, upcall/*,
//                      6in4: cable by inner pair, from the host   and an unplugged cable's reason
//                      the source is bound to (a miss goes to     -> held
//                      the upcall)
//   5. ingress-filter  per-packet policy: ports, initiate-only    policy/*
//   6. deliver         Ethernet frame to the destination VM port                -> vm-port
//
// The host (src/switch/host.ts) reads batches from its ports, calls process(), and hands
// Underlay packets to the underlay port and VmPort/Reply frames to VM ports (tx.ts), which
// counts what a port refuses under the 'tx' row.

import { BATCH_MAX, Next, NEXT_NAMES, type Batch } from './batch.js';
import { Drop, dropName } from '../base/drops.js';
import { CableFilter } from './cable-filter.js';
import type { CableCache } from './cable-cache.js';
import type { Cable, CableSa } from './cable.js';
import { PipelineCounters } from './counters.js';
import { CableLookup } from './egress/cable-lookup.js';
import { DhcpServer } from './egress/dhcp-server.js';
import { Encap } from './egress/encap.js';
import { FrameParse } from './egress/frame-parse.js';
import { IpGuard } from './egress/ip-guard.js';
import { MacGuard } from './egress/mac-guard.js';
import { NdResponder } from './egress/nd-responder.js';
import { Deliver } from './ingress/deliver.js';
import { EspDecap, type SpareHold } from './ingress/esp-decap.js';
import { InnerParse } from './ingress/inner-parse.js';
import { PairCheck } from './ingress/pair-check.js';
import { UnderlayParse } from './ingress/underlay-parse.js';
import type { Stage } from './stage.js';
import type { Upcall } from './upcall.js';
import type { PortTable } from './port-table.js';
import type { EspCipher } from '../esp/esp-cipher.js';
import type { SpiLookup } from '../esp/spi-table.js';

export interface PipelineParts {
  readonly ports: PortTable;
  readonly egressCables: CableCache;
  readonly ingressCables: CableCache;
  readonly upcall: Upcall;
  readonly cipher: EspCipher;
  readonly spis: SpiLookup<CableSa>;
  /** Where packets on an SPI with no SA go (a spare SA's, src/switch/spare-binder.ts); absent: dropped as unknown. */
  readonly spares?: SpareHold;
  /** This host's underlay address (uint32). */
  readonly localAddress: number;
  readonly wantRekey: (cable: Cable) => void;
  /** Check every stage against its declared shape (tests). */
  readonly checkStages?: boolean;
}

export class Pipeline {
  readonly counters: PipelineCounters;
  /** Each packet's fate before the running stage, for the shape check (null when off). */
  private readonly before: Uint8Array | null;
  /** Sees a batch that had drops, after counting (the verdict stream); null: nobody. */
  observer: ((b: Batch, p: Pipeline) => void) | null = null;

  /** `checkShapes`: fail a stage that settles a packet for a reason or an output it did not declare (tests). */
  constructor(readonly name: string, readonly stages: readonly Stage[], checkShapes = false) {
    this.counters = new PipelineCounters(stages.map((s) => s.name));
    this.before = checkShapes ? new Uint8Array(BATCH_MAX) : null;
  }

  /** Run every stage over the batch, then count each packet's fate under the stage that set it. */
  process(b: Batch, now: number): void {
    for (let s = 0; s < this.stages.length; s++) {
      b.stage = s + 1; // the counters' row of stage s
      if (this.before !== null) this.before.set(b.next.subarray(0, b.count));
      this.stages[s].process(b, now);
      if (this.before !== null) checkShape(this.stages[s], b, this.before);
    }
    b.stage = 0;
    this.counters.account(b);
    if (this.observer !== null && this.counters.batchDrops > 0) this.observer(b, this);
  }

  stage<T extends Stage>(name: string): T {
    const s = this.stages.find((x) => x.name === name);
    if (!s) throw new Error(`no stage ${name} in ${this.name}`);
    return s as T;
  }
}

/** Every packet `stage` settled must have a declared fate and reason, and be recorded as its own. */
function checkShape(stage: Stage, b: Batch, before: Uint8Array): void {
  for (let i = 0; i < b.count; i++) {
    const next = b.next[i];
    if (before[i] !== Next.Active) {
      if (next !== before[i]) throw new Error(`stage ${stage.name} changed the fate of packet ${i}, settled before it ran`);
      continue;
    }
    if (next === Next.Active) continue;
    const what = next === Next.Drop ? `drop ${dropName(b.reason[i] as Drop)}` : `output ${NEXT_NAMES[next]}`;
    if (b.by[i] !== b.stage) throw new Error(`stage ${stage.name} settled packet ${i} (${what}) without drop() or settle()`);
    const reason = b.reason[i] as Drop;
    const declared = next === Next.Drop
      ? stage.drops.includes(reason)
      : stage.outputs.includes(next) && (next !== Next.Reply || reason === Drop.None || stage.drops.includes(reason));
    if (!declared) throw new Error(`stage ${stage.name} settled packet ${i} (${what}), which it does not declare`);
  }
}

export function egressPipeline(p: PipelineParts): Pipeline {
  return new Pipeline('egress', [
    new FrameParse(),
    new MacGuard(p.ports),
    new DhcpServer(p.ports),
    new NdResponder(p.ports),
    new IpGuard(p.ports),
    new CableLookup(p.egressCables, p.upcall),
    new CableFilter('egress-filter'),
    new Encap(p.ports, p.cipher, p.wantRekey),
  ], p.checkStages);
}

export function ingressPipeline(p: PipelineParts): Pipeline {
  return new Pipeline('ingress', [
    new UnderlayParse(p.localAddress),
    new EspDecap(p.spis, p.cipher, p.spares),
    new InnerParse(),
    new PairCheck(p.ingressCables, p.upcall, p.ports, p.localAddress),
    new CableFilter('ingress-filter'),
    new Deliver(p.ports),
  ], p.checkStages);
}
