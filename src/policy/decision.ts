// What the policy tells the data path about one direction (src -> dst) of a cable. It is
// computed once at plug time (SDN Algorithms 1 and 2, steps 4-5) and stored in the cable;
// only the per-packet part (protocol/port filter, initiate-only flow state) runs per packet.

import type { Drop } from '../dataplane/drops.js';
import type { Trace } from '../trace.js';

export const enum FlowMode {
  /** No per-flow state: every packet the filter passes goes through. */
  None = 0,
  /** src may open flows to dst; its packets create or refresh flow state. */
  Opens = 1,
  /** src may only answer flows that dst opened. */
  RepliesOnly = 2,
}

/** Per-packet conditions of a plugged direction. Must not allocate. */
export interface PacketFilter {
  /**
   * Drop.None when a packet of upper-layer protocol `proto` with ports sport/dport passes,
   * else the reason. For ICMPv6, sport is -1 and dport the ICMPv6 type. For a later
   * fragment (no upper-layer header), sport = dport = -1.
   */
  check(proto: number, sport: number, dport: number): Drop;
  /** Human-readable, for `cables` and `explain`. */
  describe(): string;
  /** The rule whose entry decides this packet (explain, slow path). */
  decidingRule(proto: number, sport: number, dport: number): string;
}

export interface DirectionDecision {
  /** Drop.None when the direction is plugged (for some traffic), else why not. */
  readonly drop: Drop;
  /** What decided it: "blue/web-mesh", "default-deny", "cross-tenant", "level", ... */
  readonly rule: string;
  /** Policy revision the decision was computed under. */
  readonly revision: number;
  /** Time (ms since the epoch) at which a time window may change the decision; Infinity if never. */
  readonly validUntil: number;
  /** ESP (true) or plain IPv6-in-IPv4. */
  readonly encrypt: boolean;
  /** Per-packet conditions; null when every packet passes. */
  readonly filter: PacketFilter | null;
  readonly flow: FlowMode;
}

/** A compiled policy for all tenants. Identities are canonical IPv6 text. */
export interface Policy {
  readonly revision: number;
  /** Decide the direction src -> dst at time `now` (ms since the epoch). */
  decide(src: string, dst: string, now: number, trace?: Trace): DirectionDecision;
  /** Identities whose decisions may differ under `next`; `all` when that cannot be narrowed. */
  affected(next: Policy): { readonly all: boolean; readonly identities: ReadonlySet<string> };
}
