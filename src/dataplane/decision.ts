// What the data path needs to know of the policy for one direction (src -> dst) of a
// cable, declared here so that the data path depends on no policy code: the policy
// (src/policy) computes a DirectionDecision once at plug time (SDN Algorithms 1 and 2, steps
// 4-5) and implements PacketFilter and FlowState; the cable-filter stage runs them per packet.

import type { Drop } from '../base/drops.js';

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

/**
 * Flow state of an initiate-only pair, shared by the cables of both directions. Must not
 * allocate. TCP/UDP flows are (protocol, opener port, responder port); an ICMPv6 echo is
 * (58, echo identifier, 0) when opened and (58, 0, identifier) when answered.
 */
export interface FlowState {
  /** A packet of the opener side: open or refresh the flow; Drop.None, or why it may not open one. */
  opened(proto: number, openerPort: number, responderPort: number, nowSec: number): Drop;
  /** True when a packet of the answering side (ports as on the wire) belongs to an open flow. */
  isReply(proto: number, sport: number, dport: number, tcpFlags: number, nowSec: number): boolean;
}

