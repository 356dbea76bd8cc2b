// The tenant policy compiler: tenants' groups and rules in, one indexed CompiledPolicy out,
// once per revision. decide() is SDN Algorithms 1 and 2, steps 4-5: it runs at plug time,
// never per packet; what must run per packet is handed over as a PacketFilter and a FlowMode.
//
// Semantics (the Policy section of README.md says the same for users; keep the two in step):
//
//  Members. A tenant owns VMs. `groups: {name: [members]}` where a member is a VM or group
//    of the tenant, '*' (every VM of the tenant), or `tenant:name` / `tenant:*` of another
//    tenant. Group and VM names share one namespace per tenant; cycles are errors.
//  Rules. {name?, from, to, action, proto?, ports?, when?, encrypt?}, action one of plug,
//    unplug, diode, initiate. A tenant's rules apply only to pairs with at least one VM of
//    that tenant. A rule "covers" src -> dst forward when src is in `from` and dst in `to`,
//    and in reverse when src is in `to` and dst in `from`. Its condition on a packet: proto
//    matches (any, or equal) and, with ports, the DESTINATION port is in them (forward) or
//    the SOURCE port is (reverse: the service answers).
//  Time. A rule with `when` exists only inside its window; outside it has no effect at all.
//
//  Decision for one direction src -> dst at time now (T = tenant(src), U = tenant(dst);
//  only T's and U's rules count; "first" means in rule order, T's rules before U's):
//   1. level(src) > level(dst), both set           -> Drop.PolicyLevel ("level")
//   2. an active diode covers it in reverse          -> Drop.PolicyDiode (first such diode)
//   3. an active unplug without proto/ports covers it -> Drop.PolicyUnplugRule (first such)
//   4. consent: an active plug or initiate (either way) or diode (forward) covers it, from
//      T, and also from U when U != T (mutual consent across tenants). Without consent:
//        Drop.PolicyTimeWindow if rules outside their windows would have given it (rule:
//        the first such of a tenant that lacks active consent), else Drop.PolicyCrossTenant
//        ("cross-tenant") when U != T, else Drop.PolicyDefaultDeny ("default-deny").
//   5. plugged. filter: the conditions of active conditional unplugs (either way), checked
//      first, then one plug set per consenting tenant (its covering rules' conditions; no
//      set when one of them has no proto/ports); null when there is nothing to check.
//      flow: RepliesOnly when an active initiate covers it in reverse (strict: whatever
//      plugs say), else Opens when an active initiate covers it forward, else None.
//      rule: that first reverse initiate when RepliesOnly, else the first covering rule.
//      encrypt: false only when every covering rule says encrypt: false.
//   validUntil: the next instant a window of any rule covering the pair (either way)
//   opens or closes; Infinity when none, and for level decisions.
//
// Index. Every VM has member keys: itself, its tenant's '*', and every group (of any tenant)
// that holds it, directly or through nested groups. A rule is filed under (from key, to key),
// so decide() looks up |keys(src)| x |keys(dst)| pairs each way: its cost depends on the
// memberships of the two VMs, not on the number of rules.

import { ConfigError } from '../base/errors.js';
import { DROP_INFO, Drop, dropName } from '../base/drops.js';
import type { Trace } from '../base/trace.js';
import { type Policy } from './decision.js';
import { FlowMode, type DirectionDecision } from '../dataplane/decision.js';
import { CompiledFilter, filterEntry, PortSide, type FilterEntry } from './filter.js';
import {
  ACTION_NAMES,
  Action,
  expandKey,
  parseModel,
  parseTests,
  portsText,
  PROTO_ANY,
  protoName,
  type PolicyModel,
  type PolicyRule,
  type PolicyTenantInput,
} from './model.js';
import { TimeWindow } from './window.js';

export type { PolicyTenantInput } from './model.js';

interface CompiledRule {
  readonly rule: PolicyRule;
  readonly window: TimeWindow | null;
  /** No proto and no ports: the rule's condition holds for every packet. */
  readonly unconditional: boolean;
  /** Its condition on from -> to packets (destination port) and on to -> from packets (source port). */
  readonly forward: FilterEntry;
  readonly reverse: FilterEntry;
  /** "plug web -> db tcp 5432", for explain. */
  readonly text: string;
}

/**
 * A rule found for a direction is encoded as one number, ordered as the semantics order
 * rules: ((other tenant ? 1 : 0) * RULES_PER_TENANT + position) * 2 + (reverse ? 1 : 0).
 */
const RULES_PER_TENANT = 2 ** 26;
const DIR_FORWARD = 0;
const DIR_REVERSE = 1;
const FILTER_CACHE_MAX = 65_536;
/** Distinct decisions kept for sharing, at most (then the table starts again), and per rule. */
const MAX_DECISIONS = 65_536;
const DECISIONS_PER_RULE = 16;

const ascending = (a: number, b: number): number => a - b;

export class CompiledPolicy implements Policy {
  readonly model: PolicyModel;
  private readonly rules: CompiledRule[];
  /** Index of each tenant's first rule in `rules`. */
  private readonly ruleBase: number[];
  /** VM index -> its member keys. */
  private readonly vmKeys: Int32Array[];
  /** from key -> to key -> rules (indexes into `rules`). */
  private readonly index = new Map<number, Map<number, number[]>>();
  /** Filters are shared by every direction with the same conditions. */
  private readonly filters = new Map<string, CompiledFilter>();
  /**
   * Decisions are shared too, by every direction decided alike (by rule, then the few of each
   * rule compared field by field): a cable keeps its decision, and one object per cable cost
   * each pair ~2 x 95 B. Emptied past MAX_DECISIONS (time windows make new validUntil values
   * as time goes on); a rule with more than DECISIONS_PER_RULE variants gets fresh ones.
   */
  private readonly decisions = new Map<string, DirectionDecision[]>();
  private decisionCount = 0;
  /** Scratch of decide(), which is synchronous and never re-entered: the rules found, and which are active. */
  private readonly hits: number[] = [];
  private active = new Uint8Array(64);
  private signatureCache: ReadonlyMap<string, TenantSignature> | undefined;

  constructor(model: PolicyModel, readonly revision: number) {
    this.model = model;
    this.ruleBase = model.tenants.map(() => -1);
    this.rules = model.rules.map((r, id) => {
      if (this.ruleBase[r.tenant] < 0) this.ruleBase[r.tenant] = id;
      if (r.local >= RULES_PER_TENANT) throw new ConfigError(r.path, `a tenant may have at most ${RULES_PER_TENANT} rules`);
      const ports = r.ports === null ? '' : ` ${portsText(r.ports)}`;
      const proto = r.proto === PROTO_ANY && ports === '' ? '' : ` ${protoName(r.proto)}`;
      return {
        rule: r,
        window: r.when === null ? null : new TimeWindow(r.when),
        unconditional: r.proto === PROTO_ANY && r.ports === null,
        forward: filterEntry(r.proto, r.ports, PortSide.Dport, r.name),
        reverse: filterEntry(r.proto, r.ports, PortSide.Sport, r.name),
        text: `${ACTION_NAMES[r.action]} ${this.keyText(r.tenant, r.from)} -> ${this.keyText(r.tenant, r.to)}${proto}${ports}`,
      };
    });
    for (let id = 0; id < this.rules.length; id++) {
      const r = this.rules[id].rule;
      let byTo = this.index.get(r.from);
      if (!byTo) this.index.set(r.from, (byTo = new Map()));
      const l = byTo.get(r.to);
      if (l) l.push(id);
      else byTo.set(r.to, [id]);
    }
    this.vmKeys = memberKeys(model);
  }

  decide(src: string, dst: string, now: number, trace?: Trace): DirectionDecision {
    const { model } = this;
    const si = model.byIdentity.get(src);
    const di = model.byIdentity.get(dst);
    if (si === undefined || di === undefined) {
      trace?.step('policy', `${si === undefined ? src : dst} is not a VM of any tenant`, 'fail');
      return this.deny(Drop.PolicyDefaultDeny, 'unknown-identity', Infinity, trace);
    }
    const a = model.vms[si];
    const b = model.vms[di];
    if (trace) {
      trace.step('policy', `src ${this.vmText(si)} in ${this.membershipText(si)}`, 'info');
      trace.step('policy', `dst ${this.vmText(di)} in ${this.membershipText(di)}`, 'info');
    }
    // 1. Security levels.
    if (a.level !== undefined && b.level !== undefined && a.level > b.level) {
      trace?.step('policy', `level ${a.level} of src > level ${b.level} of dst: data flows only upwards`, 'info');
      return this.deny(Drop.PolicyLevel, 'level', Infinity, trace);
    }
    const T = a.tenant;
    const U = b.tenant;
    const hits = this.hits;
    hits.length = 0;
    this.collect(si, di, T, U, DIR_FORWARD, hits);
    this.collect(di, si, T, U, DIR_REVERSE, hits);
    if (hits.length > 1) hits.sort(ascending);

    // Which rules exist now, and when that changes.
    let validUntil = Infinity;
    if (this.active.length < hits.length) this.active = new Uint8Array(2 * hits.length);
    const active = this.active;
    for (let k = 0; k < hits.length; k++) {
      const c = this.ruleOf(hits[k], T, U);
      const w = c.window;
      active[k] = w === null || w.active(now) ? 1 : 0;
      if (w !== null) validUntil = Math.min(validUntil, w.nextChange(now));
      if (trace) {
        const how = hits[k] % 2 === DIR_FORWARD ? 'from -> to' : 'to -> from';
        const when = w === null ? '' : active[k] ? `, inside its window ${w.text}` : `, but is outside its window ${w.text}`;
        trace.step('policy', `${c.rule.name} (${c.text}) matches as ${how}${when}`, 'info');
      }
    }

    // 2. Reverse of a diode.  3. Unconditional unplug.
    for (let k = 0; k < hits.length; k++) {
      const c = this.ruleOf(hits[k], T, U);
      if (active[k] && c.rule.action === Action.Diode && hits[k] % 2 === DIR_REVERSE) {
        return this.deny(Drop.PolicyDiode, c.rule.name, validUntil, trace);
      }
    }
    for (let k = 0; k < hits.length; k++) {
      const c = this.ruleOf(hits[k], T, U);
      if (active[k] && c.rule.action === Action.Unplug && c.unconditional) {
        return this.deny(Drop.PolicyUnplugRule, c.rule.name, validUntil, trace);
      }
    }

    // 4. Consent: from T's rules (mine) and, across tenants, from U's (theirs).
    const cross = T !== U;
    let consentMine = false;
    let consentTheirs = false;
    let everyPacketMine = false;
    let everyPacketTheirs = false;
    let inactiveMine = -1;
    let inactiveTheirs = -1;
    let firstCover = -1;
    let firstRepliesOnly = -1;
    let opens = false;
    let encrypt = false;
    let conditionalUnplugs = 0;
    for (let k = 0; k < hits.length; k++) {
      const c = this.ruleOf(hits[k], T, U);
      const action = c.rule.action;
      const reverse = hits[k] % 2 === DIR_REVERSE;
      if (action === Action.Unplug) {
        if (active[k]) conditionalUnplugs++;
        continue;
      }
      if (action === Action.Diode && reverse) continue;
      const mine = c.rule.tenant === T;
      if (!active[k]) {
        if (mine && inactiveMine < 0) inactiveMine = k;
        if (!mine && inactiveTheirs < 0) inactiveTheirs = k;
        continue;
      }
      if (mine) {
        consentMine = true;
        if (c.unconditional) everyPacketMine = true;
      } else {
        consentTheirs = true;
        if (c.unconditional) everyPacketTheirs = true;
      }
      if (firstCover < 0) firstCover = k;
      if (c.rule.encrypt) encrypt = true;
      if (action === Action.Initiate) {
        if (reverse && firstRepliesOnly < 0) firstRepliesOnly = k;
        if (!reverse) opens = true;
      }
    }
    if (!consentMine || (cross && !consentTheirs)) {
      const lackingMine = !consentMine && inactiveMine >= 0;
      const lackingTheirs = cross && !consentTheirs && inactiveTheirs >= 0;
      if ((consentMine || lackingMine) && (!cross || consentTheirs || lackingTheirs)) {
        // Denied only because windows are closed: name the first closed rule that would consent.
        const k = Math.min(lackingMine ? inactiveMine : Infinity, lackingTheirs ? inactiveTheirs : Infinity);
        return this.deny(Drop.PolicyTimeWindow, this.ruleOf(hits[k], T, U).rule.name, validUntil, trace);
      }
      if (cross) return this.deny(Drop.PolicyCrossTenant, 'cross-tenant', validUntil, trace);
      return this.deny(Drop.PolicyDefaultDeny, 'default-deny', validUntil, trace);
    }

    // 5. Plugged.
    const setMine = !everyPacketMine;
    const setTheirs = cross && !everyPacketTheirs;
    const filter = conditionalUnplugs > 0 || setMine || setTheirs ? this.filterFor(hits, active, T, U, setMine, setTheirs) : null;
    const flow = firstRepliesOnly >= 0 ? FlowMode.RepliesOnly : opens ? FlowMode.Opens : FlowMode.None;
    const rule = this.ruleOf(hits[firstRepliesOnly >= 0 ? firstRepliesOnly : firstCover], T, U).rule.name;
    if (trace) {
      const mode = flow === FlowMode.RepliesOnly ? ', replies only (initiate)' : flow === FlowMode.Opens ? ', opens flows (initiate)' : '';
      trace.step('policy', `plugged by ${rule}: ${filter ? filter.describe() : 'every packet'}, ${encrypt ? 'ESP' : 'plain IPv6-in-IPv4'}${mode}`, 'ok');
    }
    return this.decision(Drop.None, rule, validUntil, encrypt, filter, flow);
  }

  /** The shared decision object with these values. */
  private decision(drop: Drop, rule: string, validUntil: number, encrypt: boolean, filter: CompiledFilter | null, flow: FlowMode): DirectionDecision {
    let alike = this.decisions.get(rule);
    if (alike) {
      for (const d of alike) {
        if (d.drop === drop && d.filter === filter && d.validUntil === validUntil && d.encrypt === encrypt && d.flow === flow) return d;
      }
    }
    const d: DirectionDecision = { drop, rule, revision: this.revision, validUntil, encrypt, filter, flow };
    if (this.decisionCount >= MAX_DECISIONS) {
      this.decisions.clear();
      this.decisionCount = 0;
      alike = undefined;
    }
    if (!alike) this.decisions.set(rule, (alike = []));
    if (alike.length < DECISIONS_PER_RULE) {
      alike.push(d);
      this.decisionCount++;
    }
    return d;
  }

  affected(next: Policy): { readonly all: boolean; readonly identities: ReadonlySet<string> } {
    const identities = new Set<string>();
    if (!(next instanceof CompiledPolicy)) return { all: true, identities };
    const mine = this.signatures();
    const theirs = next.signatures();
    const candidates = new Set<string>();
    for (const tenant of new Set([...mine.keys(), ...theirs.keys()])) {
      const a = mine.get(tenant);
      const b = theirs.get(tenant);
      // 1. VMs or groups changed: only the tenant's VMs and the members of its groups (old
      // and new) can have changed memberships; compare each of them below.
      if (a?.members !== b?.members) {
        this.tenantMembers(tenant, candidates);
        next.tenantMembers(tenant, candidates);
      }
      // 2. Both sides of every rule added, removed, changed or moved relative to the others.
      if (a?.rulesText !== b?.rulesText) this.ruleChanges(next, a?.rules ?? [], b?.rules ?? [], identities);
    }
    for (const id of candidates) if (this.vmSignature(id) !== next.vmSignature(id)) identities.add(id);
    return { all: false, identities };
  }

  private ruleChanges(next: CompiledPolicy, olds: readonly RuleSignature[], news: readonly RuleSignature[], out: Set<string>): void {
    const oldSet = new Set(olds.map((x) => x.sig));
    const newSet = new Set(news.map((x) => x.sig));
    const keptOld = olds.filter((x) => newSet.has(x.sig));
    const keptNew = news.filter((x) => oldSet.has(x.sig));
    let inOrder = 0;
    while (inOrder < keptOld.length && keptOld[inOrder].sig === keptNew[inOrder].sig) inOrder++;
    const touch = (p: CompiledPolicy, r: PolicyRule): void => {
      for (const vm of expandKey(p.model, r.from)) out.add(p.model.vms[vm].identity);
      for (const vm of expandKey(p.model, r.to)) out.add(p.model.vms[vm].identity);
    };
    for (const x of olds) if (!newSet.has(x.sig)) touch(this, x.rule);
    for (const x of news) if (!oldSet.has(x.sig)) touch(next, x.rule);
    for (const x of keptOld.slice(inOrder)) touch(this, x.rule);
    for (const x of keptNew.slice(inOrder)) touch(next, x.rule);
  }

  /** Add the identities of tenant `name`'s VMs and of its groups' members. */
  private tenantMembers(name: string, out: Set<string>): void {
    const t = this.model.tenantByName.get(name);
    if (t === undefined) return;
    const vms = new Set(this.model.tenants[t].vms);
    for (const g of this.model.tenants[t].groups) expandKey(this.model, g, vms);
    for (const vm of vms) out.add(this.model.vms[vm].identity);
  }

  /** Append the rules of tenants T and U filed under (a key of vm `from`, a key of vm `to`). */
  private collect(from: number, to: number, T: number, U: number, dir: number, out: number[]): void {
    const fromKeys = this.vmKeys[from];
    const toKeys = this.vmKeys[to];
    for (let i = 0; i < fromKeys.length; i++) {
      const byTo = this.index.get(fromKeys[i]);
      if (byTo === undefined) continue;
      for (let j = 0; j < toKeys.length; j++) {
        const ids = byTo.get(toKeys[j]);
        if (ids === undefined) continue;
        for (const id of ids) {
          const r = this.rules[id].rule;
          if (r.tenant !== T && r.tenant !== U) continue;
          out.push(((r.tenant === T ? 0 : RULES_PER_TENANT) + r.local) * 2 + dir);
        }
      }
    }
  }

  private ruleId(hit: number, T: number, U: number): number {
    const rank = Math.floor(hit / 2);
    return this.ruleBase[rank >= RULES_PER_TENANT ? U : T] + (rank % RULES_PER_TENANT);
  }

  private ruleOf(hit: number, T: number, U: number): CompiledRule {
    return this.rules[this.ruleId(hit, T, U)];
  }

  private filterFor(hits: number[], active: Uint8Array, T: number, U: number, setT: boolean, setU: boolean): CompiledFilter {
    const unplug: number[] = [];
    const sets: number[][] = [];
    if (setT) sets.push([]);
    if (setU) sets.push([]);
    for (let k = 0; k < hits.length; k++) {
      if (!active[k]) continue;
      const c = this.ruleOf(hits[k], T, U);
      const action = c.rule.action;
      const reverse = hits[k] % 2 === DIR_REVERSE;
      if (action === Action.Unplug) unplug.push(k);
      else if (action !== Action.Diode || !reverse) {
        const side = c.rule.tenant === T ? 0 : 1;
        if (side === 0 && setT) sets[0].push(k);
        if (side === 1 && setU) sets[sets.length - 1].push(k);
      }
    }
    const ids = (ks: number[]): string => ks.map((k) => (hits[k] % 2) + 2 * this.ruleId(hits[k], T, U)).join(',');
    const key = `${ids(unplug)}/${sets.map(ids).join('/')}`;
    let f = this.filters.get(key);
    if (f === undefined) {
      const entry = (k: number): FilterEntry => {
        const c = this.ruleOf(hits[k], T, U);
        return hits[k] % 2 === DIR_FORWARD ? c.forward : c.reverse;
      };
      f = new CompiledFilter(unplug.map(entry), sets.map((s) => s.map(entry)));
      if (this.filters.size >= FILTER_CACHE_MAX) this.filters.clear();
      this.filters.set(key, f);
    }
    return f;
  }

  private deny(drop: Drop, rule: string, validUntil: number, trace: Trace | undefined): DirectionDecision {
    trace?.step('policy', `unplugged by ${rule}: ${dropName(drop)} (${DROP_INFO[drop][1]})`, 'fail');
    return this.decision(drop, rule, validUntil, true, null, FlowMode.None);
  }

  private keyText(tenant: number, key: number): string {
    const k = this.model.keys[key];
    return k.tenant === tenant ? k.name : k.text;
  }

  private vmText(vm: number): string {
    const v = this.model.vms[vm];
    return `${v.name} (${v.identity}, tenant ${this.model.tenants[v.tenant].name}${v.level === undefined ? '' : `, level ${v.level}`})`;
  }

  private membershipText(vm: number): string {
    const keys = [...this.vmKeys[vm]].map((k) => this.model.keys[k].text);
    return keys.join(', ');
  }

  /** "tenant name level member-keys" of an identity, for affected(); undefined when absent. */
  private vmSignature(identity: string): string | undefined {
    const vm = this.model.byIdentity.get(identity);
    if (vm === undefined) return undefined;
    const v = this.model.vms[vm];
    const keys = [...this.vmKeys[vm]].map((k) => this.model.keys[k].text).sort();
    return `${this.model.tenants[v.tenant].name} ${v.name} ${v.level ?? '-'} ${keys.join(' ')}`;
  }

  /** Each tenant's VMs and groups, and its rules, as text; computed once, for affected(). */
  private signatures(): ReadonlyMap<string, TenantSignature> {
    if (this.signatureCache) return this.signatureCache;
    const { model } = this;
    const out = new Map<string, TenantSignature>();
    for (const t of model.tenants) {
      const vms = t.vms.map((vm) => [model.vms[vm].name, model.vms[vm].identity, model.vms[vm].level ?? null]);
      const groups = t.groups.map((g) => [model.keys[g].name, model.keys[g].members.map((m) => model.keys[m].text)]);
      const rules: RuleSignature[] = [];
      for (let id = this.ruleBase[t.index]; id >= 0 && id < this.rules.length && this.rules[id].rule.tenant === t.index; id++) {
        const r = this.rules[id].rule;
        const sig = JSON.stringify([r.name, r.action, model.keys[r.from].text, model.keys[r.to].text, r.proto, r.ports, r.when?.text ?? null, r.encrypt]);
        rules.push({ sig, rule: r });
      }
      out.set(t.name, { members: JSON.stringify([vms, groups]), rules, rulesText: rules.map((x) => x.sig).join('\n') });
    }
    this.signatureCache = out;
    return out;
  }
}

interface RuleSignature {
  readonly sig: string;
  readonly rule: PolicyRule;
}

interface TenantSignature {
  readonly members: string;
  readonly rules: readonly RuleSignature[];
  readonly rulesText: string;
}

/** Each VM's member keys: itself, its tenant's '*', and every group that reaches it. */
function memberKeys(model: PolicyModel): Int32Array[] {
  const parents = new Map<number, number[]>();
  for (const k of model.keys) {
    for (const m of k.members) {
      const p = parents.get(m);
      if (p) p.push(k.id);
      else parents.set(m, [k.id]);
    }
  }
  return model.vms.map((vm) => {
    const seen = new Set<number>([vm.key, model.tenants[vm.tenant].star]);
    const todo = [...seen];
    while (todo.length > 0) {
      for (const p of parents.get(todo.pop()!) ?? []) {
        if (!seen.has(p)) {
          seen.add(p);
          todo.push(p);
        }
      }
    }
    return Int32Array.from(seen);
  });
}

/**
 * Compile the policy of `tenants` (TenantConfig from src/config, or the tenants of a policy
 * document). Throws a ConfigError naming the YAML path of the first problem.
 */
export function compilePolicy(tenants: Iterable<PolicyTenantInput>, revision: number): CompiledPolicy {
  const inputs = [...tenants];
  const model = parseModel(inputs);
  for (const t of inputs) parseTests(model, t); // validated now, run by runPolicyTests
  return new CompiledPolicy(model, revision);
}
