// A reference evaluator of the policy semantics, for the differential test only: it scans
// every rule for every question, expands groups by recursion and reads windows with Date,
// written from the semantics in compile.ts and sharing none of the compiled index, filter
// or window code. Slow on purpose; never use it in the switch.

import { Drop } from '../base/drops.js';
import { FlowMode } from '../dataplane/decision.js';
import { Action, KeyKind, PROTO_ANY, type PolicyModel, type PolicyRule } from './model.js';

export interface NaiveDirection {
  readonly drop: Drop;
  readonly rule: string;
  readonly validUntil: number;
  readonly encrypt: boolean;
  readonly flow: FlowMode;
}

const MINUTE = 60_000;
const DAY = 1440 * MINUTE;

/** Is VM `vm` one of the VMs `key` stands for? */
function holds(model: PolicyModel, key: number, vm: number): boolean {
  const k = model.keys[key];
  if (k.kind === KeyKind.Vm) return k.vm === vm;
  if (k.kind === KeyKind.All) return model.vms[vm].tenant === k.tenant;
  return k.members.some((m) => holds(model, m, vm));
}

function windowOpen(r: PolicyRule, at: number): boolean {
  const w = r.when;
  if (w === null) return true;
  const local = new Date(at + w.offset * MINUTE);
  const day = (local.getUTCDay() + 6) % 7; // Monday = 0
  const minute = local.getUTCHours() * 60 + local.getUTCMinutes();
  if (w.from < w.to) return w.days.includes(day) && minute >= w.from && minute < w.to;
  // Spans midnight: the evening of a listed day, or the morning after one.
  return (w.days.includes(day) && minute >= w.from) || (w.days.includes((day + 6) % 7) && minute < w.to);
}

/** The first instant after `now` at which the rule's window opens or closes; it can only happen at a from/to time of day. */
function nextWindowChange(r: PolicyRule, now: number): number {
  const w = r.when!;
  const offset = w.offset * MINUTE;
  const midnight = Math.floor((now + offset) / DAY) * DAY - offset; // local midnight, as UTC
  let best = Infinity;
  for (let d = 0; d <= 8; d++) {
    for (const m of [w.from, w.to]) {
      const t = midnight + d * DAY + m * MINUTE;
      if (t > now && t < best && windowOpen(r, t) !== windowOpen(r, t - 1)) best = t;
    }
  }
  return best;
}

interface Match {
  readonly rule: PolicyRule;
  readonly reverse: boolean;
}

/** Rules of the two tenants that cover src -> dst (forward or reverse), src's tenant first, each in order. */
function matches(model: PolicyModel, src: number, dst: number): Match[] {
  const T = model.vms[src].tenant;
  const U = model.vms[dst].tenant;
  const out: Match[] = [];
  for (const tenant of T === U ? [T] : [T, U]) {
    for (const rule of model.rules) {
      if (rule.tenant !== tenant) continue;
      if (holds(model, rule.from, src) && holds(model, rule.to, dst)) out.push({ rule, reverse: false });
      if (holds(model, rule.from, dst) && holds(model, rule.to, src)) out.push({ rule, reverse: true });
    }
  }
  return out;
}

const permits = (m: Match): boolean => m.rule.action === Action.Plug || m.rule.action === Action.Initiate || (m.rule.action === Action.Diode && !m.reverse);

export function naiveDirection(model: PolicyModel, src: string, dst: string, now: number): NaiveDirection {
  const deny = (drop: Drop, rule: string, validUntil: number): NaiveDirection => ({ drop, rule, validUntil, encrypt: true, flow: FlowMode.None });
  const s = model.byIdentity.get(src);
  const d = model.byIdentity.get(dst);
  if (s === undefined || d === undefined) return deny(Drop.PolicyDefaultDeny, 'unknown-identity', Infinity);
  const ls = model.vms[s].level;
  const ld = model.vms[d].level;
  if (ls !== undefined && ld !== undefined && ls > ld) return deny(Drop.PolicyLevel, 'level', Infinity);

  const all = matches(model, s, d);
  let validUntil = Infinity;
  for (const m of all) if (m.rule.when !== null) validUntil = Math.min(validUntil, nextWindowChange(m.rule, now));
  const live = all.filter((m) => windowOpen(m.rule, now));

  const diode = live.find((m) => m.rule.action === Action.Diode && m.reverse);
  if (diode) return deny(Drop.PolicyDiode, diode.rule.name, validUntil);
  const unplug = live.find((m) => m.rule.action === Action.Unplug && m.rule.proto === PROTO_ANY && m.rule.ports === null);
  if (unplug) return deny(Drop.PolicyUnplugRule, unplug.rule.name, validUntil);

  const T = model.vms[s].tenant;
  const U = model.vms[d].tenant;
  const tenants = T === U ? [T] : [T, U];
  const consenting = (t: number): boolean => live.some((m) => m.rule.tenant === t && permits(m));
  if (!tenants.every(consenting)) {
    const wouldConsent = (t: number): boolean => all.some((m) => m.rule.tenant === t && permits(m));
    if (tenants.every(wouldConsent)) {
      const late = all.find((m) => permits(m) && !windowOpen(m.rule, now) && !consenting(m.rule.tenant));
      return deny(Drop.PolicyTimeWindow, late!.rule.name, validUntil);
    }
    return deny(T === U ? Drop.PolicyDefaultDeny : Drop.PolicyCrossTenant, T === U ? 'default-deny' : 'cross-tenant', validUntil);
  }
  const plugs = live.filter(permits);
  const repliesOnly = live.find((m) => m.rule.action === Action.Initiate && m.reverse);
  const opens = live.some((m) => m.rule.action === Action.Initiate && !m.reverse);
  return {
    drop: Drop.None,
    rule: (repliesOnly ?? plugs[0]).rule.name,
    validUntil,
    encrypt: plugs.some((m) => m.rule.encrypt),
    flow: repliesOnly ? FlowMode.RepliesOnly : opens ? FlowMode.Opens : FlowMode.None,
  };
}

function conditionHolds(m: Match, proto: number, sport: number, dport: number): boolean {
  const r = m.rule;
  if (r.proto !== PROTO_ANY && r.proto !== proto) return false;
  if (r.ports === null) return true;
  const port = m.reverse ? sport : dport;
  return r.ports.some(([lo, hi]) => port >= lo && port <= hi);
}

/** The verdict on one packet src -> dst: the direction's drop, else the packet conditions'. */
export function naivePacket(model: PolicyModel, src: string, dst: string, now: number, proto: number, sport: number, dport: number): Drop {
  const dir = naiveDirection(model, src, dst, now);
  if (dir.drop !== Drop.None) return dir.drop;
  const s = model.byIdentity.get(src)!;
  const d = model.byIdentity.get(dst)!;
  const live = matches(model, s, d).filter((m) => windowOpen(m.rule, now));
  const T = model.vms[s].tenant;
  const U = model.vms[d].tenant;
  const verdict = (sp: number, dp: number): Drop => {
    if (live.some((m) => m.rule.action === Action.Unplug && conditionHolds(m, proto, sp, dp))) return Drop.PolicyUnplugRule;
    for (const t of T === U ? [T] : [T, U]) {
      if (!live.some((m) => m.rule.tenant === t && permits(m) && conditionHolds(m, proto, sp, dp))) return Drop.PolicyProtoPort;
    }
    return Drop.None;
  };
  if (sport !== -1 || dport !== -1) return verdict(sport, dport);
  // A later fragment: the verdict must be the same whatever its ports are. It can only
  // change at a range edge, so trying every edge (and 0) on each side is enough.
  const edges = new Set([0]);
  for (const m of live) for (const [lo, hi] of m.rule.ports ?? []) edges.add(lo).add(Math.min(hi + 1, 65535));
  const seen = new Set<Drop>();
  for (const sp of edges) for (const dp of edges) seen.add(verdict(sp, dp));
  return seen.size === 1 ? [...seen][0] : Drop.PolicyFragment;
}
