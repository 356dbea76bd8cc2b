// What the sender (Algorithm 1) and the receiver (Algorithm 2) share when they turn a
// verdict into a cable: the lifetimes of plugged and unplugged cables, and the flow tables
// of initiate-only pairs, one per unordered pair, so both directions find the same one.

import { LRUCache } from 'lru-cache';
import { Drop, dropName } from '../base/drops.js';
import { deadline } from '../base/ticks.js';
import type { Trace } from '../base/trace.js';
import { Cable } from '../dataplane/cable.js';
import { FlowMode, type DirectionDecision, type FlowState } from '../dataplane/decision.js';
import { FlowTable } from '../policy/flow-table.js';
import type { BindingRecord } from '../trust/records.js';

export interface CableSettings {
  /** Seconds before a plugged cable is verified again (it keeps forwarding meanwhile). */
  readonly ttl: number;
  /** Seconds an unplug decision is remembered. */
  readonly negativeTtl: number;
  /** Flows an initiate-only pair may have open. */
  readonly maxFlows: number;
}

/** After a store error or a rate-limited verification, try again this soon (ms). */
export const RETRY_MS = 1000;

export class CableMaker {
  private readonly flows = new LRUCache<string, FlowTable>({ max: 65_536 });

  constructor(readonly settings: CableSettings) {}

  /** How long an unplug decision for most reasons is remembered (ms). */
  get negativeMs(): number {
    return this.settings.negativeTtl * 1000;
  }

  /** An unplugged cable: a miss again after `ms`. */
  unplugged(c: Cable, now: number, ms: number, trace?: Trace): Cable {
    c.lasts(now, Infinity, now + Math.max(ms, 0));
    trace?.step('decision', `unplug: ${dropName(c.drop)} (${c.rule})`, 'fail');
    return c;
  }

  /** A plugged cable: verified again after ttl, never used beyond 2 ttl, a time-window edge or the binding's end. */
  plugged(c: Cable, now: number, decision: DirectionDecision, rec: BindingRecord): Cable {
    const ttl = this.settings.ttl * 1000;
    c.epoch = rec.epoch;
    const bindingEnd = Date.parse(rec.notAfter);
    c.lasts(now, now + ttl, Math.min(now + 2 * ttl, decision.validUntil, Number.isNaN(bindingEnd) ? Infinity : bindingEnd));
    return c;
  }

  /** The store does not answer: keep a plugged cable until its hard expiry, ask again soon. */
  keepWhileStoreDown(previous: Cable, now: number, trace?: Trace): Cable {
    previous.refreshTick = deadline(now, now + RETRY_MS);
    trace?.step('decision', 'store unreachable: the plugged cable stays until it expires', 'info');
    return previous;
  }

  /**
   * Verified again, the cable's far end came back with an older epoch than the cable was
   * verified at (a replayed binding): the newer verification stands, the cable stays.
   */
  keepVerified(previous: Cable, now: number, trace?: Trace): Cable {
    previous.refreshTick = deadline(now, now + this.settings.ttl * 1000);
    trace?.step('decision', `the store answered an older epoch than epoch ${previous.epoch} this cable was verified at: kept`, 'info');
    return previous;
  }

  /**
   * The flow state shared by both directions of an initiate-only pair on this host, keyed by
   * the unordered pair: A -> B and B -> A must find the same table, also when both VMs are
   * on this host (each direction is then an egress cable). `fresh` gives a private table
   * (explain: a question must not open flows of the live switch).
   */
  flowsFor(decision: DirectionDecision, a: string, b: string, fresh = false): FlowState | null {
    if (decision.flow === FlowMode.None) return null;
    if (fresh) return new FlowTable(this.settings.maxFlows);
    const key = a < b ? `${a} ${b}` : `${b} ${a}`;
    let t = this.flows.get(key);
    if (!t) {
      t = new FlowTable(this.settings.maxFlows);
      this.flows.set(key, t);
    }
    return t;
  }

  /** Every pair's open flows, for the process that takes over (handover.ts). */
  saveFlows(): SavedFlows {
    return [...this.flows.entries()].map(([k, t]) => [k, t.save()]);
  }

  /** Take over flows saveFlows() gave; the cables plugged after this find them. */
  loadFlows(saved: SavedFlows): void {
    for (const [k, flows] of saved) {
      const t = new FlowTable(this.settings.maxFlows);
      t.load(flows);
      this.flows.set(k, t);
    }
  }
}

/** The flow tables of initiate-only pairs, as a handover carries them: [pair key, flows]. */
export type SavedFlows = [string, [number, number, number][]][];

/**
 * The cable being verified again belongs to a port that was detached meanwhile: unplugged
 * for good (the port's other cables went with it; this one was in flight).
 */
export function gone(previous: Cable, now: number): Cable {
  return new Cable(previous.direction, previous.src, previous.dst, Drop.PortGone, 'the VM port was detached', null, now);
}
