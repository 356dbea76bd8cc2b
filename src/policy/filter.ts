// The per-packet part of a plugged direction: protocol and port conditions, compiled at plug
// time into one small program per protocol ([side, lo, hi] triples in one Int32Array), so
// that check() reads numbers only and allocates nothing.
//
// A packet of protocol p with ports (sport, dport):
//   1. matches any unplug entry for p        -> Drop.PolicyUnplugRule
//   2. misses every entry of some plug set   -> Drop.PolicyProtoPort
//   3. else                                  -> Drop.None
// A plug set is one tenant's plug entries (a cross-tenant direction has one set per tenant:
// both must consent to the packet). A later fragment (sport = dport = -1) gets the result
// the program gives for every pair of ports, or Drop.PolicyFragment if that depends on them.

import { Drop } from '../base/drops.js';
import type { PacketFilter } from '../dataplane/decision.js';
import { PROTO_ANY, portsText, protoName } from './model.js';

export const enum PortSide {
  /** Every port. */
  None = 0,
  /** The packet's source port (traffic answering a service, to -> from). */
  Sport = 1,
  /** The packet's destination port (traffic to a service, from -> to). */
  Dport = 2,
}

/** One rule's condition as seen from one direction. */
export interface FilterEntry {
  /** 0-255 or PROTO_ANY. */
  readonly proto: number;
  readonly side: PortSide;
  readonly ports: readonly (readonly [number, number])[] | null;
  /** Name of the rule, for explain and policy tests. */
  readonly rule: string;
  readonly text: string;
}

export function filterEntry(proto: number, ports: readonly (readonly [number, number])[] | null, side: PortSide, rule: string): FilterEntry {
  const s = ports === null ? PortSide.None : side;
  const text = s === PortSide.None ? protoName(proto) : `${protoName(proto)} ${s === PortSide.Sport ? 'sport' : 'dport'} ${portsText(ports!)}`;
  return { proto, side: s, ports: s === PortSide.None ? null : ports, rule, text };
}

/*
 * Compiled form: one Int32Array, read with two dependent loads per packet.
 *   [0]                 n, the number of protocols some entry names
 *   [1 + 2j], [2 + 2j]  protocol j and the offset of its program
 *   [1 + 2n]            offset of the program for every other protocol
 * A program: [fragment result, u, u x (side, lo, hi), s, s x (k, k x (side, lo, hi))]: the
 * unplug triples, then s plug sets of k triples each.
 */

function tripleMatches(side: number, lo: number, hi: number, sport: number, dport: number): boolean {
  if (side === PortSide.None) return true;
  const p = side === PortSide.Sport ? sport : dport;
  return p >= lo && p <= hi;
}

function run(c: Int32Array, off: number, sport: number, dport: number): Drop {
  let i = off + 1;
  const unplugEnd = i + 1 + 3 * c[i];
  for (i++; i < unplugEnd; i += 3) if (tripleMatches(c[i], c[i + 1], c[i + 2], sport, dport)) return Drop.PolicyUnplugRule;
  const sets = c[i++];
  for (let s = 0; s < sets; s++) {
    const end = i + 1 + 3 * c[i];
    let ok = false;
    for (i++; i < end; i += 3) {
      if (tripleMatches(c[i], c[i + 1], c[i + 2], sport, dport)) {
        ok = true;
        break;
      }
    }
    if (!ok) return Drop.PolicyProtoPort;
    i = end;
  }
  return Drop.None;
}

/** Append the triples of the entries that apply to `proto`, preceded by their count. */
function triples(entries: readonly FilterEntry[], proto: number, out: number[]): void {
  const at = out.length;
  out.push(0);
  for (const e of entries) {
    if (e.proto !== PROTO_ANY && e.proto !== proto) continue;
    if (e.ports === null) out.push(PortSide.None, 0, 0);
    else for (const [lo, hi] of e.ports) out.push(e.side, lo, hi);
  }
  out[at] = (out.length - at - 1) / 3;
}

/** The program's result when the ports are unknown: the same for every port pair, or PolicyFragment. */
function fragmentResult(c: Int32Array, off: number): Drop {
  // The verdict can change only where a range starts or ends; port 0 is in no range.
  const sports = new Set([0]);
  const dports = new Set([0]);
  let i = off + 1;
  const edges = (count: number): void => {
    for (const end = i + 3 * count; i < end; i += 3) {
      const set = c[i] === PortSide.Sport ? sports : c[i] === PortSide.Dport ? dports : null;
      if (set) set.add(c[i + 1]).add(Math.min(c[i + 2] + 1, 65535));
    }
  };
  edges(c[i++]);
  for (let s = c[i++]; s > 0; s--) edges(c[i++]);
  let first = -1;
  for (const sp of sports) {
    for (const dp of dports) {
      const r = run(c, off, sp, dp);
      if (first === -1) first = r;
      else if (r !== first) return Drop.PolicyFragment;
    }
  }
  return first as Drop;
}

export class CompiledFilter implements PacketFilter {
  private readonly code: Int32Array;
  private readonly text: string;

  /**
   * @param unplug conditional unplug entries that apply to the direction
   * @param sets one list of plug entries per consenting tenant (none with every packet)
   */
  constructor(
    readonly unplug: readonly FilterEntry[],
    readonly sets: readonly (readonly FilterEntry[])[],
  ) {
    const named = new Set<number>();
    for (const e of unplug) if (e.proto !== PROTO_ANY) named.add(e.proto);
    for (const s of sets) for (const e of s) if (e.proto !== PROTO_ANY) named.add(e.proto);
    const protos = [...named].sort((a, b) => a - b);
    const code: number[] = [protos.length];
    for (const p of protos) code.push(p, 0);
    code.push(0);
    const offsets: number[] = [];
    for (const p of [...protos, PROTO_ANY]) {
      offsets.push(code.length);
      code.push(Drop.None); // fragment result, filled below
      triples(unplug, p, code);
      code.push(sets.length);
      for (const s of sets) triples(s, p, code);
    }
    protos.forEach((_, j) => (code[2 + 2 * j] = offsets[j]));
    code[1 + 2 * protos.length] = offsets[protos.length];
    this.code = Int32Array.from(code);
    for (const off of offsets) this.code[off] = fragmentResult(this.code, off);

    const uniq = (es: readonly FilterEntry[]): string => [...new Set(es.map((e) => e.text))].join(' | ');
    let text = sets.length === 0 ? 'any' : sets.length === 1 ? uniq(sets[0]) : sets.map((s) => `(${uniq(s)})`).join(' & ');
    if (unplug.length > 0) text += `, except ${uniq(unplug)}`;
    this.text = text;
  }

  check(proto: number, sport: number, dport: number): Drop {
    const c = this.code;
    const n = c[0];
    let off = c[1 + 2 * n];
    for (let j = 0; j < n; j++) {
      if (c[1 + 2 * j] === proto) {
        off = c[2 + 2 * j];
        break;
      }
    }
    if (sport === -1 && dport === -1) return c[off] as Drop;
    return run(c, off, sport, dport);
  }

  describe(): string {
    return this.text;
  }

  /** The rule that decides a packet (the unplug that drops it, or the first plug entry that passes it); '' if none. Not for the fast path. */
  decidingRule(proto: number, sport: number, dport: number): string {
    const r = this.check(proto, sport, dport);
    if (r === Drop.PolicyFragment) return '';
    const hit = (e: FilterEntry): boolean =>
      (e.proto === PROTO_ANY || e.proto === proto) && (e.ports === null || e.ports.some(([lo, hi]) => {
        const p = e.side === PortSide.Sport ? sport : dport;
        return p >= lo && p <= hi;
      }));
    if (r === Drop.PolicyUnplugRule) return this.unplug.find(hit)?.rule ?? '';
    if (r === Drop.None) {
      for (const s of this.sets) {
        const e = s.find(hit);
        if (e) return e.rule;
      }
    }
    return '';
  }
}
