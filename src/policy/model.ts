// The tenants' policy sections, read and validated into plain data: tenants, VMs, member
// keys (VMs, groups, '*'), rules and policy tests. Every error is a ConfigError naming its
// YAML path. Both the compiler (compile.ts) and the naive reference evaluator (naive.ts)
// start from this model; neither re-validates anything.
//
// Member keys. Every VM, every group and every tenant's '*' is one key with a number. A
// selector in a rule or group (`web`, `db1`, `*`, `green:vault1`, `green:*`) resolves to
// exactly one key. Group and VM names share one namespace per tenant.

import { list, obj, onlyKeys, str } from '../base/check.js';
import { ConfigError } from '../base/errors.js';

/** One tenant as src/config gives it (TenantConfig) or as a policy document carries it. */
export interface PolicyTenantInput {
  readonly name: string;
  readonly prefix: { readonly text: string };
  readonly vms: readonly { readonly name: string; readonly identityText: string; readonly level: number | undefined }[];
  readonly policy: { readonly groups: unknown; readonly rules: unknown; readonly tests: unknown };
  /** YAML path prefix, e.g. "tenants.blue". */
  readonly path: string;
}

export const enum Action {
  Plug = 0,
  Unplug = 1,
  Diode = 2,
  Initiate = 3,
}
export const ACTION_NAMES = ['plug', 'unplug', 'diode', 'initiate'] as const;

export const PROTO_ANY = -1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMPV6 = 58;

export const enum KeyKind {
  Vm = 0,
  Group = 1,
  All = 2,
}

export interface MemberKey {
  readonly id: number;
  readonly tenant: number;
  readonly kind: KeyKind;
  /** "web1", "web" or "*". */
  readonly name: string;
  /** Qualified: "blue:web". */
  readonly text: string;
  /** Kind Vm: the VM's index; else -1. */
  readonly vm: number;
  /** Kind Group: the keys it lists (resolved), filled once every tenant's names are known. */
  readonly members: number[];
  readonly path: string;
}

export interface PolicyVm {
  readonly index: number;
  readonly tenant: number;
  readonly name: string;
  /** Canonical IPv6 text. */
  readonly identity: string;
  readonly level: number | undefined;
  readonly key: number;
}

export interface PolicyTenant {
  readonly index: number;
  readonly name: string;
  readonly prefix: string;
  readonly path: string;
  readonly vms: number[];
  /** Name ("web1", "web", "*") -> key id. */
  readonly names: Map<string, number>;
  readonly groups: number[];
  readonly star: number;
}

/** A weekly time window, validated; see window.ts for the compiled form. */
export interface WindowSpec {
  /** 0 = Monday .. 6 = Sunday, ascending, no repeats. */
  readonly days: readonly number[];
  /** Minutes after local midnight; `to` may be 1440 (24:00); to < from spans midnight. */
  readonly from: number;
  readonly to: number;
  /** Local time = UTC + offset (minutes). */
  readonly offset: number;
  readonly text: string;
}

export interface PolicyRule {
  readonly tenant: number;
  /** Position in its tenant's rule list. */
  readonly local: number;
  /** "blue/web-mesh" or "blue/rules[2]". */
  readonly name: string;
  readonly action: Action;
  readonly from: number;
  readonly to: number;
  /** 0-255 or PROTO_ANY. */
  readonly proto: number;
  /** Inclusive [lo, hi] port ranges, or null for every port. */
  readonly ports: readonly (readonly [number, number])[] | null;
  readonly when: WindowSpec | null;
  readonly encrypt: boolean;
  readonly path: string;
}

export interface PolicyModel {
  readonly tenants: readonly PolicyTenant[];
  readonly vms: readonly PolicyVm[];
  readonly keys: readonly MemberKey[];
  /** Every tenant's rules, tenant by tenant, each in its order. */
  readonly rules: readonly PolicyRule[];
  readonly byIdentity: ReadonlyMap<string, number>;
  readonly tenantByName: ReadonlyMap<string, number>;
}

const GROUP_NAME = /^[a-z][a-z0-9-]{0,62}$/;
const RULE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const RULE_KEYS = ['name', 'from', 'to', 'action', 'proto', 'ports', 'when', 'encrypt'] as const;
const WHEN_KEYS = ['days', 'from', 'to', 'tz'] as const;
export const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;

export function parseModel(inputs: Iterable<PolicyTenantInput>): PolicyModel {
  const tenants: PolicyTenant[] = [];
  const vms: PolicyVm[] = [];
  const keys: MemberKey[] = [];
  const byIdentity = new Map<string, number>();
  const tenantByName = new Map<string, number>();
  const raw: PolicyTenantInput[] = [];

  const addKey = (tenant: number, tenantName: string, kind: KeyKind, name: string, vm: number, path: string): number => {
    const id = keys.length;
    keys.push({ id, tenant, kind, name, text: `${tenantName}:${name}`, vm, members: [], path });
    return id;
  };

  // 1. Tenants, their VMs and '*'.
  for (const input of inputs) {
    if (tenantByName.has(input.name)) throw new ConfigError(input.path, `tenant ${input.name} defined twice`);
    const index = tenants.length;
    const star = addKey(index, input.name, KeyKind.All, '*', -1, input.path);
    const t: PolicyTenant = { index, name: input.name, prefix: input.prefix.text, path: input.path, vms: [], names: new Map([['*', star]]), groups: [], star };
    tenants.push(t);
    raw.push(input);
    tenantByName.set(t.name, t.index);
    for (const v of input.vms) {
      const path = `${input.path}.vms.${v.name}`;
      if (t.names.has(v.name)) throw new ConfigError(path, `VM ${v.name} defined twice`);
      const other = byIdentity.get(v.identityText);
      if (other !== undefined) throw new ConfigError(`${path}.identity`, `identity already belongs to ${vmText(tenants, vms[other])}`);
      const vm = vms.length;
      const key = addKey(t.index, t.name, KeyKind.Vm, v.name, vm, path);
      vms.push({ index: vm, tenant: t.index, name: v.name, identity: v.identityText, level: v.level, key });
      t.vms.push(vm);
      t.names.set(v.name, key);
      byIdentity.set(v.identityText, vm);
    }
  }

  // 2. Group names, in every tenant, so that members can name groups of other tenants.
  const groupLists: { key: number; members: unknown[] }[] = [];
  for (const t of tenants) {
    const g = raw[t.index].policy.groups;
    if (g === undefined || g === null) continue;
    const path = `${t.path}.groups`;
    for (const [gname, members] of Object.entries(obj(g, path))) {
      const gpath = `${path}.${gname}`;
      if (gname === '*') throw new ConfigError(gpath, `'*' is every VM of the tenant and cannot be defined`);
      if (!GROUP_NAME.test(gname)) throw new ConfigError(gpath, `group names are 1-63 of a-z, 0-9, '-', starting with a letter; got ${JSON.stringify(gname)}`);
      if (t.names.has(gname)) throw new ConfigError(gpath, `${gname} is already a VM of tenant ${t.name} (groups and VMs share one namespace)`);
      const key = addKey(t.index, t.name, KeyKind.Group, gname, -1, gpath);
      t.names.set(gname, key);
      t.groups.push(key);
      groupLists.push({ key, members: list(members, gpath) });
    }
  }

  const rules: PolicyRule[] = [];
  const model: PolicyModel = { tenants, vms, keys, rules, byIdentity, tenantByName };

  // 3. Group members, then cycles.
  for (const { key, members } of groupLists) {
    const k = keys[key];
    members.forEach((m, i) => k.members.push(resolveSelector(model, k.tenant, m, `${k.path}[${i}]`)));
  }
  checkCycles(keys);

  // 4. Rules.
  for (const t of tenants) {
    const r = raw[t.index].policy.rules;
    if (r === undefined || r === null) continue;
    const names = new Set<string>();
    list(r, `${t.path}.rules`).forEach((v, i) => {
      const rule = parseRule(model, t, v, i, `${t.path}.rules[${i}]`);
      if (names.has(rule.name)) throw new ConfigError(`${t.path}.rules[${i}].name`, `rule name ${rule.name} used twice`);
      names.add(rule.name);
      rules.push(rule);
    });
  }
  checkInitiateOverlap(model);
  return model;
}

function vmText(tenants: readonly PolicyTenant[], vm: PolicyVm): string {
  return `${tenants[vm.tenant].name}:${vm.name}`;
}

/** `web`, `db1`, `*`, `green:vault1` or `green:*` seen from tenant `tenant`, to its key. */
export function resolveSelector(model: PolicyModel, tenant: number, v: unknown, path: string): number {
  const s = str(v, path);
  const colon = s.indexOf(':');
  let t = model.tenants[tenant];
  let name = s;
  if (colon >= 0) {
    const tname = s.slice(0, colon);
    const ti = model.tenantByName.get(tname);
    if (ti === undefined) throw new ConfigError(path, `unknown tenant ${JSON.stringify(tname)} in ${JSON.stringify(s)}`);
    t = model.tenants[ti];
    name = s.slice(colon + 1);
  }
  const key = t.names.get(name);
  if (key === undefined) {
    const known = [...t.names.keys()];
    const shown = known.length > 12 ? `${known.slice(0, 12).join(', ')}, ...` : known.join(', ');
    throw new ConfigError(path, `tenant ${t.name} has no VM or group ${JSON.stringify(name)} (known: ${shown})`);
  }
  return key;
}

/** A group that reaches itself through its members is an error, at the first group of the cycle. */
function checkCycles(keys: readonly MemberKey[]): void {
  const state = new Uint8Array(keys.length); // 0 new, 1 on the stack, 2 done
  const stack: number[] = [];
  const visit = (id: number): void => {
    state[id] = 1;
    stack.push(id);
    for (const m of keys[id].members) {
      if (state[m] === 1) {
        const cycle = stack.slice(stack.indexOf(m)).map((k) => keys[k].text);
        throw new ConfigError(keys[m].path, `group cycle: ${[...cycle, keys[m].text].join(' -> ')}`);
      }
      if (state[m] === 0) visit(m);
    }
    stack.pop();
    state[id] = 2;
  };
  for (const k of keys) if (k.kind === KeyKind.Group && state[k.id] === 0) visit(k.id);
}

function parseRule(model: PolicyModel, t: PolicyTenant, v: unknown, i: number, path: string): PolicyRule {
  const o = obj(v, path);
  onlyKeys(o, RULE_KEYS, path);
  let name = `${t.name}/rules[${i}]`;
  if (o.name !== undefined) {
    const n = str(o.name, `${path}.name`);
    if (!RULE_NAME.test(n)) throw new ConfigError(`${path}.name`, `rule names are 1-63 of a-z, 0-9, '.', '_', '-'; got ${JSON.stringify(n)}`);
    name = `${t.name}/${n}`;
  }
  const from = resolveSelector(model, t.index, o.from, `${path}.from`);
  const to = resolveSelector(model, t.index, o.to, `${path}.to`);
  if (model.keys[from].tenant !== t.index && model.keys[to].tenant !== t.index) {
    throw new ConfigError(path, `a rule of tenant ${t.name} must name at least one of its own VMs or groups on a side`);
  }
  const actionText = o.action;
  const action = ACTION_NAMES.indexOf(actionText as (typeof ACTION_NAMES)[number]);
  if (typeof actionText !== 'string' || action < 0) {
    throw new ConfigError(`${path}.action`, `expected one of ${ACTION_NAMES.join(', ')}, got ${JSON.stringify(actionText)}`);
  }
  const proto = o.proto === undefined ? PROTO_ANY : parseProto(o.proto, `${path}.proto`, true);
  let ports: [number, number][] | null = null;
  if (o.ports !== undefined) {
    if (proto !== PROTO_TCP && proto !== PROTO_UDP) throw new ConfigError(`${path}.ports`, 'ports need proto tcp or udp');
    const l = list(o.ports, `${path}.ports`);
    if (l.length === 0) throw new ConfigError(`${path}.ports`, 'an empty port list matches nothing; leave ports out for every port');
    ports = l.map((p, k) => parsePortRange(p, `${path}.ports[${k}]`));
  }
  const when = o.when === undefined ? null : parseWindow(o.when, `${path}.when`);
  let encrypt = true;
  if (o.encrypt !== undefined) {
    if (typeof o.encrypt !== 'boolean') throw new ConfigError(`${path}.encrypt`, `expected true or false, got ${JSON.stringify(o.encrypt)}`);
    if (action === Action.Unplug) throw new ConfigError(`${path}.encrypt`, 'encrypt applies to plug, diode and initiate rules only');
    encrypt = o.encrypt;
  }
  return { tenant: t.index, local: i, name, action: action as Action, from, to, proto, ports, when, encrypt, path };
}

/** tcp, udp, icmp (ICMPv6), any (when allowed) or a number 0-255. */
export function parseProto(v: unknown, path: string, allowAny: boolean): number {
  if (v === 'tcp') return PROTO_TCP;
  if (v === 'udp') return PROTO_UDP;
  if (v === 'icmp') return PROTO_ICMPV6;
  if (v === 'any' && allowAny) return PROTO_ANY;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 255) return v;
  throw new ConfigError(path, `proto must be tcp, udp, icmp${allowAny ? ', any' : ''} or a number 0-255; got ${JSON.stringify(v)}`);
}

export function protoName(p: number): string {
  if (p === PROTO_ANY) return 'any';
  if (p === PROTO_TCP) return 'tcp';
  if (p === PROTO_UDP) return 'udp';
  if (p === PROTO_ICMPV6) return 'icmp';
  return `proto ${p}`;
}

function parsePort(v: unknown, path: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new ConfigError(path, `port must be 1-65535, got ${JSON.stringify(v)}`);
  return v;
}

function parsePortRange(v: unknown, path: string): [number, number] {
  if (typeof v === 'number') {
    const p = parsePort(v, path);
    return [p, p];
  }
  const m = typeof v === 'string' ? /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(v) : null;
  if (!m) throw new ConfigError(path, `expected a port or a range "lo-hi", got ${JSON.stringify(v)}`);
  const lo = parsePort(Number(m[1]), path);
  const hi = m[2] === undefined ? lo : parsePort(Number(m[2]), path);
  if (hi < lo) throw new ConfigError(path, `range ${v} runs backwards`);
  return [lo, hi];
}

export function portsText(ports: readonly (readonly [number, number])[]): string {
  return ports.map(([lo, hi]) => (lo === hi ? `${lo}` : `${lo}-${hi}`)).join(',');
}

function parseTime(v: unknown, path: string, allow24: boolean): number {
  const m = typeof v === 'string' ? /^([01]\d|2[0-4]):([0-5]\d)$/.exec(v) : null;
  const minutes = m ? Number(m[1]) * 60 + Number(m[2]) : -1;
  if (!m || minutes > 1440 || (minutes === 1440 && !allow24)) {
    throw new ConfigError(path, `expected a time "HH:MM" (00:00-23:59${allow24 ? ', or 24:00' : ''}), got ${JSON.stringify(v)}`);
  }
  return minutes;
}

function parseWindow(v: unknown, path: string): WindowSpec {
  const o = obj(v, path);
  onlyKeys(o, WHEN_KEYS, path);
  let days = [0, 1, 2, 3, 4, 5, 6];
  if (o.days !== undefined) {
    const l = list(o.days, `${path}.days`);
    if (l.length === 0) throw new ConfigError(`${path}.days`, 'an empty day list never matches; leave days out for every day');
    const seen = new Set<number>();
    l.forEach((d, k) => {
      const i = DAY_NAMES.indexOf(d as (typeof DAY_NAMES)[number]);
      if (i < 0) throw new ConfigError(`${path}.days[${k}]`, `expected one of ${DAY_NAMES.join(', ')}, got ${JSON.stringify(d)}`);
      if (seen.has(i)) throw new ConfigError(`${path}.days[${k}]`, `${DAY_NAMES[i]} listed twice`);
      seen.add(i);
    });
    days = [...seen].sort((a, b) => a - b);
  }
  const from = o.from === undefined ? 0 : parseTime(o.from, `${path}.from`, false);
  const to = o.to === undefined ? 1440 : parseTime(o.to, `${path}.to`, true);
  if (from === to) throw new ConfigError(path, 'from and to are equal; leave both out for the whole day');
  let offset = 0;
  let tz = 'UTC';
  if (o.tz !== undefined) {
    const m = typeof o.tz === 'string' ? /^([+-])(\d\d):([0-5]\d)$/.exec(o.tz) : null;
    if (o.tz !== 'UTC' && (!m || Number(m[2]) > 14)) {
      throw new ConfigError(`${path}.tz`, `expected "UTC" or an offset "+HH:MM" / "-HH:MM" (at most 14 hours), got ${JSON.stringify(o.tz)}`);
    }
    if (m) {
      offset = (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
      tz = o.tz as string;
    }
  }
  const hhmm = (x: number): string => `${String(Math.floor(x / 60)).padStart(2, '0')}:${String(x % 60).padStart(2, '0')}`;
  const dayText = days.length === 7 ? 'daily' : days.map((d) => DAY_NAMES[d]).join(',');
  return { days, from, to, offset, text: `${dayText} ${hhmm(from)}-${hhmm(to)} ${tz}` };
}

/** Every VM a key stands for (a VM, a group expanded through nested groups, or '*'). */
export function expandKey(model: PolicyModel, key: number, out: Set<number> = new Set()): Set<number> {
  const k = model.keys[key];
  if (k.kind === KeyKind.Vm) out.add(k.vm);
  else if (k.kind === KeyKind.All) for (const vm of model.tenants[k.tenant].vms) out.add(vm);
  else for (const m of k.members) expandKey(model, m, out);
  return out;
}

/**
 * An initiate rule whose two sides share two VMs would cover both directions between them:
 * each direction would be replies-only and neither VM could open anything. That is an error.
 */
function checkInitiateOverlap(model: PolicyModel): void {
  const cache = new Map<number, Set<number>>();
  const expand = (key: number): Set<number> => {
    let s = cache.get(key);
    if (!s) cache.set(key, (s = expandKey(model, key)));
    return s;
  };
  for (const r of model.rules) {
    if (r.action !== Action.Initiate) continue;
    const a = expand(r.from);
    const b = expand(r.to);
    const [small, large] = a.size <= b.size ? [a, b] : [b, a];
    const both: string[] = [];
    for (const vm of small) if (large.has(vm) && both.push(model.vms[vm].name) >= 2) break;
    if (both.length >= 2) {
      throw new ConfigError(r.path, `initiate from and to both hold ${both.join(' and ')}: each could only reply to the other; use plug`);
    }
  }
}

/** One policy test: `{src, dst, proto?, port?, at?, expect}` (as Tailscale ACL tests). */
export interface PolicyTestCase {
  readonly tenant: number;
  readonly index: number;
  readonly src: number;
  readonly dst: number;
  readonly proto: number | undefined;
  readonly port: number | undefined;
  /** ms since the epoch, from an ISO 8601 time. */
  readonly at: number | undefined;
  readonly expect: 'plug' | 'unplug';
  /** "web1 -> db1 tcp/5432". */
  readonly text: string;
  readonly path: string;
}

const TEST_KEYS = ['src', 'dst', 'proto', 'port', 'at', 'expect'] as const;

/** The tests of one tenant of `model`, validated. */
export function parseTests(model: PolicyModel, input: PolicyTenantInput): PolicyTestCase[] {
  const tenant = model.tenantByName.get(input.name);
  const raw = input.policy.tests;
  if (tenant === undefined || raw === undefined || raw === null) return [];
  return list(raw, `${input.path}.tests`).map((v, index) => {
    const path = `${input.path}.tests[${index}]`;
    const o = obj(v, path);
    onlyKeys(o, TEST_KEYS, path);
    const vmOf = (key: string): number => {
      const k = model.keys[resolveSelector(model, tenant, o[key], `${path}.${key}`)];
      if (k.kind !== KeyKind.Vm) throw new ConfigError(`${path}.${key}`, `${k.text} is a group; a test names one VM`);
      return k.vm;
    };
    const src = vmOf('src');
    const dst = vmOf('dst');
    const proto = o.proto === undefined ? undefined : parseProto(o.proto, `${path}.proto`, false);
    let port: number | undefined;
    if (o.port !== undefined) {
      if (proto !== PROTO_TCP && proto !== PROTO_UDP) throw new ConfigError(`${path}.port`, 'port needs proto tcp or udp');
      port = parsePort(o.port, `${path}.port`);
    } else if (proto === PROTO_TCP || proto === PROTO_UDP) {
      throw new ConfigError(path, `a ${protoName(proto)} test needs a port`);
    }
    let at: number | undefined;
    if (o.at !== undefined) {
      at = typeof o.at === 'string' && /^\d{4}-\d\d-\d\dT/.test(o.at) ? Date.parse(o.at) : NaN;
      if (Number.isNaN(at)) throw new ConfigError(`${path}.at`, `expected an ISO 8601 time like "2025-03-03T09:30:00Z", got ${JSON.stringify(o.at)}`);
    }
    if (o.expect !== 'plug' && o.expect !== 'unplug') throw new ConfigError(`${path}.expect`, `expected plug or unplug, got ${JSON.stringify(o.expect)}`);
    const what = proto === undefined ? '' : port === undefined ? ` ${protoName(proto)}` : ` ${protoName(proto)}/${port}`;
    const when = o.at === undefined ? '' : ` at ${o.at as string}`;
    const text = `${o.src as string} -> ${o.dst as string}${what}${when}`;
    return { tenant, index, src, dst, proto, port, at, expect: o.expect, text, path };
  });
}
