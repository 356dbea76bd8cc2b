// The policy semantics, one row per rule of compile.ts's comment block: groups, '*',
// unplug over plug, ports both ways, diodes, initiate, levels, tenants, time windows,
// encryption and fragments. Time is injected: 2024-01-01 was a Monday.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop, dropName } from '../src/base/drops.js';
import { formatIpv6, parseIpv6Address } from '../src/base/address.js';
import { FlowMode, type DirectionDecision } from '../src/dataplane/decision.js';
import { compilePolicy, type CompiledPolicy, type PolicyTenantInput } from '../src/policy/compile.js';
import { Trace } from '../src/base/trace.js';

const MON = Date.UTC(2024, 0, 1); // Monday 00:00 UTC
const H = 3_600_000;
const M = 60_000;
const DAY = 24 * H;

type Rules = Record<string, unknown>[];

function tenant(name: string, net: number, vms: Record<string, number | undefined>, groups: Record<string, string[]>, rules: Rules): PolicyTenantInput {
  return {
    name,
    prefix: { text: `fd00:${net}::/64` },
    vms: Object.entries(vms).map(([vm, level], i) => ({ name: vm, identityText: formatIpv6(parseIpv6Address(`fd00:${net}::${i + 1}`)), level })),
    policy: { groups, rules, tests: undefined },
    path: `tenants.${name}`,
  };
}

const BLUE_VMS = { web1: undefined, web2: undefined, web3: undefined, db1: undefined, db2: undefined, admin: undefined, low: 1, high: 3 };
const BLUE_GROUPS = { web: ['web1', 'web2', 'web3'], db: ['db1', 'db2'], backend: ['db', 'admin'] };
const GREEN_VMS = { vault1: undefined, probe1: undefined };

function policy(blue: Rules, green: Rules = []): CompiledPolicy {
  return compilePolicy([tenant('blue', 1, BLUE_VMS, BLUE_GROUPS, blue), tenant('green', 2, GREEN_VMS, { vaults: ['vault1'] }, green)], 7);
}

function id(p: CompiledPolicy, name: string): string {
  const vm = p.model.vms.find((v) => v.name === name);
  if (!vm) throw new Error(`no VM ${name}`);
  return vm.identity;
}

interface Row {
  readonly says: string;
  readonly blue: Rules;
  readonly green?: Rules;
  readonly src: string;
  readonly dst: string;
  readonly at?: number;
  /** A packet to check: [proto, sport, dport, expected verdict]. */
  readonly packets?: readonly (readonly [number, number, number, Drop])[];
  readonly drop: Drop;
  readonly rule?: string;
  readonly flow?: FlowMode;
  readonly encrypt?: boolean;
  readonly validUntil?: number;
  /** Expected filter.describe(), or null for no filter. */
  readonly filter?: string | null;
}

const WEB_MESH = { name: 'web-mesh', from: 'web', to: 'web', action: 'plug' };
const OFFICE = { name: 'office', from: 'web1', to: 'web2', action: 'plug', when: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00' } };
const FRIDAY_NIGHT = { name: 'friday-night', from: 'web1', to: 'web2', action: 'plug', when: { days: ['fri'], from: '22:00', to: '06:00' } };
const FRI = MON + 4 * DAY;
const SAT = MON + 5 * DAY;

const ROWS: Row[] = [
  // Groups and '*'.
  { says: 'a group plugs its members to each other', blue: [WEB_MESH], src: 'web1', dst: 'web2', drop: Drop.None, rule: 'blue/web-mesh', filter: null, flow: FlowMode.None, encrypt: true, validUntil: Infinity },
  { says: 'a pair that no rule names is denied by default', blue: [WEB_MESH], src: 'web1', dst: 'db1', drop: Drop.PolicyDefaultDeny, rule: 'default-deny' },
  { says: 'a nested group reaches the VMs of the groups it holds', blue: [{ from: 'backend', to: 'web1', action: 'plug' }], src: 'db2', dst: 'web1', drop: Drop.None, rule: 'blue/rules[0]' },
  { says: 'a plug passes from the to side back to the from side', blue: [{ from: 'backend', to: 'web1', action: 'plug' }], src: 'web1', dst: 'admin', drop: Drop.None },
  { says: "'*' is every VM of the tenant", blue: [{ from: '*', to: '*', action: 'plug' }], src: 'low', dst: 'db1', drop: Drop.None },
  // Unplug.
  { says: 'an unplug beats a plug in both directions', blue: [WEB_MESH, { name: 'no-web3', from: 'web1', to: 'web3', action: 'unplug' }], src: 'web3', dst: 'web1', drop: Drop.PolicyUnplugRule, rule: 'blue/no-web3' },
  { says: 'an unplug with a port drops only that port, both ways', blue: [WEB_MESH, { name: 'no-telnet', from: '*', to: '*', action: 'unplug', proto: 'tcp', ports: [23] }], src: 'web1', dst: 'web2', drop: Drop.None, rule: 'blue/web-mesh', filter: 'any, except tcp dport 23 | tcp sport 23', packets: [[6, 40000, 23, Drop.PolicyUnplugRule], [6, 23, 40000, Drop.PolicyUnplugRule], [6, 40000, 80, Drop.None], [17, 40000, 23, Drop.None]] },
  // Ports, both directions of a plug.
  { says: 'a plug with ports passes packets to the service port', blue: [{ from: 'web', to: 'db', action: 'plug', proto: 'tcp', ports: [5432] }], src: 'web1', dst: 'db1', drop: Drop.None, filter: 'tcp dport 5432', packets: [[6, 40000, 5432, Drop.None], [6, 40000, 80, Drop.PolicyProtoPort], [17, 40000, 5432, Drop.PolicyProtoPort], [58, -1, 128, Drop.PolicyProtoPort]] },
  { says: 'a plug with ports passes the answers from the service port back', blue: [{ from: 'web', to: 'db', action: 'plug', proto: 'tcp', ports: [5432] }], src: 'db1', dst: 'web1', drop: Drop.None, filter: 'tcp sport 5432', packets: [[6, 5432, 40000, Drop.None], [6, 40000, 5432, Drop.PolicyProtoPort]] },
  { says: 'the conditions of several plugs add up', blue: [{ from: 'web', to: 'db', action: 'plug', proto: 'tcp', ports: [5432, '6000-6010'] }, { from: 'web', to: 'db', action: 'plug', proto: 'icmp' }], src: 'web2', dst: 'db2', drop: Drop.None, rule: 'blue/rules[0]', filter: 'tcp dport 5432,6000-6010 | icmp', packets: [[6, 1, 6005, Drop.None], [6, 1, 6011, Drop.PolicyProtoPort], [58, -1, 128, Drop.None]] },
  // Diode.
  { says: 'a diode passes its forward direction', blue: [{ from: 'web1', to: 'db1', action: 'diode', proto: 'udp' }], src: 'web1', dst: 'db1', drop: Drop.None, flow: FlowMode.None, filter: 'udp', packets: [[17, 1000, 514, Drop.None], [6, 1000, 514, Drop.PolicyProtoPort]] },
  { says: 'the reverse of a diode never passes, whatever plugs say', blue: [{ from: 'web1', to: 'db1', action: 'diode', proto: 'udp' }, { from: 'db1', to: 'web1', action: 'plug' }], src: 'db1', dst: 'web1', drop: Drop.PolicyDiode, rule: 'blue/rules[0]' },
  { says: 'a plug still passes the forward direction of a diode beside it', blue: [{ from: 'web1', to: 'db1', action: 'diode', proto: 'udp' }, { from: 'db1', to: 'web1', action: 'plug' }], src: 'web1', dst: 'db1', drop: Drop.None, rule: 'blue/rules[0]', filter: null },
  // Initiate.
  { says: 'the initiating side opens flows', blue: [{ name: 'opens', from: 'web1', to: 'db1', action: 'initiate', proto: 'tcp', ports: [5432] }], src: 'web1', dst: 'db1', drop: Drop.None, flow: FlowMode.Opens, rule: 'blue/opens', filter: 'tcp dport 5432' },
  { says: 'the other side of an initiate may only reply', blue: [{ name: 'opens', from: 'web1', to: 'db1', action: 'initiate', proto: 'tcp', ports: [5432] }], src: 'db1', dst: 'web1', drop: Drop.None, flow: FlowMode.RepliesOnly, rule: 'blue/opens', filter: 'tcp sport 5432' },
  { says: 'replies-only is strict: a plug the same way does not lift it', blue: [{ from: 'db1', to: 'web1', action: 'plug' }, { name: 'opens', from: 'web1', to: 'db1', action: 'initiate' }], src: 'db1', dst: 'web1', drop: Drop.None, flow: FlowMode.RepliesOnly, rule: 'blue/opens', filter: null },
  // Levels.
  { says: 'data may not flow from a higher to a lower level, whatever plugs say', blue: [{ from: 'high', to: 'low', action: 'plug' }], src: 'high', dst: 'low', drop: Drop.PolicyLevel, rule: 'level', validUntil: Infinity },
  { says: 'data flows from a lower to a higher level when plugged', blue: [{ from: 'high', to: 'low', action: 'plug' }], src: 'low', dst: 'high', drop: Drop.None },
  { says: 'a VM without a level is not limited by levels', blue: [{ from: 'high', to: 'web1', action: 'plug' }], src: 'high', dst: 'web1', drop: Drop.None },
  // Tenants.
  { says: 'a rule of one tenant alone does not cross tenants', blue: [{ from: 'db1', to: 'green:vault1', action: 'plug' }], src: 'db1', dst: 'vault1', drop: Drop.PolicyCrossTenant, rule: 'cross-tenant' },
  { says: 'rules of both tenants naming the pair plug it (mutual consent)', blue: [{ from: 'db1', to: 'green:vault1', action: 'plug' }], green: [{ from: 'blue:db1', to: 'vault1', action: 'plug' }], src: 'db1', dst: 'vault1', drop: Drop.None, rule: 'blue/rules[0]' },
  { says: "the rule named for a cross-tenant pair is the source tenant's", blue: [{ from: 'db1', to: 'green:vault1', action: 'plug' }], green: [{ from: 'blue:db1', to: 'vaults', action: 'plug' }], src: 'vault1', dst: 'db1', drop: Drop.None, rule: 'green/rules[0]' },
  { says: 'an unplug in either tenant wins across tenants', blue: [{ from: 'db1', to: 'green:vault1', action: 'plug' }], green: [{ from: 'blue:db1', to: 'vault1', action: 'plug' }, { name: 'cut', from: 'vault1', to: 'blue:*', action: 'unplug' }], src: 'db1', dst: 'vault1', drop: Drop.PolicyUnplugRule, rule: 'green/cut' },
  { says: "a packet crosses tenants only when both tenants' conditions pass it", blue: [{ from: 'db1', to: 'green:vault1', action: 'plug', proto: 'tcp', ports: [22, 5432] }], green: [{ from: 'blue:db1', to: 'vault1', action: 'plug', proto: 'tcp', ports: [5432] }], src: 'db1', dst: 'vault1', drop: Drop.None, filter: '(tcp dport 22,5432) & (tcp dport 5432)', packets: [[6, 1, 5432, Drop.None], [6, 1, 22, Drop.PolicyProtoPort]] },
  { says: "a group of the other tenant is named tenant:group", blue: [{ from: 'db', to: 'green:vaults', action: 'plug' }], green: [{ from: 'blue:backend', to: '*', action: 'plug' }], src: 'db2', dst: 'vault1', drop: Drop.None },
  // Time windows.
  { says: 'a rule applies inside its window until it closes', blue: [OFFICE], src: 'web1', dst: 'web2', at: MON + 10 * H, drop: Drop.None, rule: 'blue/office', validUntil: MON + 17 * H },
  { says: 'a pair denied only by a closed window says so, until it opens', blue: [OFFICE], src: 'web2', dst: 'web1', at: MON + 8 * H + 59 * M, drop: Drop.PolicyTimeWindow, rule: 'blue/office', validUntil: MON + 9 * H },
  { says: 'a window closed for the weekend opens again on Monday', blue: [OFFICE], src: 'web1', dst: 'web2', at: SAT + 10 * H, drop: Drop.PolicyTimeWindow, validUntil: MON + 7 * DAY + 9 * H },
  { says: 'the window closes at its end time exactly', blue: [OFFICE], src: 'web1', dst: 'web2', at: MON + 17 * H, drop: Drop.PolicyTimeWindow, validUntil: MON + DAY + 9 * H },
  { says: 'a window with to before from spans midnight', blue: [FRIDAY_NIGHT], src: 'web1', dst: 'web2', at: SAT + 5 * H + 59 * M, drop: Drop.None, validUntil: SAT + 6 * H },
  { says: 'a window spanning midnight starts on its listed day', blue: [FRIDAY_NIGHT], src: 'web1', dst: 'web2', at: FRI + 23 * H, drop: Drop.None, validUntil: SAT + 6 * H },
  { says: 'a window spanning midnight is closed the morning of the listed day', blue: [FRIDAY_NIGHT], src: 'web1', dst: 'web2', at: FRI + 3 * H, drop: Drop.PolicyTimeWindow, validUntil: FRI + 22 * H },
  { says: 'a window in a time zone offset opens at local time', blue: [{ from: 'web1', to: 'web2', action: 'plug', when: { from: '09:00', to: '17:00', tz: '+02:00' } }], src: 'web1', dst: 'web2', at: MON + 7 * H + 30 * M, drop: Drop.None, validUntil: MON + 15 * H },
  { says: 'a windowed unplug applies only inside its window', blue: [WEB_MESH, { from: 'web1', to: 'web2', action: 'unplug', when: { from: '12:00', to: '13:00' } }], src: 'web1', dst: 'web2', at: MON + 11 * H, drop: Drop.None, validUntil: MON + 12 * H },
  { says: 'a windowed unplug unplugs inside its window', blue: [WEB_MESH, { from: 'web1', to: 'web2', action: 'unplug', when: { from: '12:00', to: '13:00' } }], src: 'web1', dst: 'web2', at: MON + 12 * H + 30 * M, drop: Drop.PolicyUnplugRule, validUntil: MON + 13 * H },
  { says: 'an always-open pair reports no window change when another rule covers it without one', blue: [WEB_MESH], src: 'web1', dst: 'web2', at: MON, drop: Drop.None, validUntil: Infinity },
  // Encryption.
  { says: 'encrypt: false on the only plug gives plain IPv6-in-IPv4', blue: [{ from: 'web1', to: 'web2', action: 'plug', encrypt: false }], src: 'web1', dst: 'web2', drop: Drop.None, encrypt: false },
  { says: 'one plug that wants ESP is enough for ESP', blue: [{ from: 'web1', to: 'web2', action: 'plug', encrypt: false }, WEB_MESH], src: 'web2', dst: 'web1', drop: Drop.None, encrypt: true },
  // Fragments.
  { says: 'a later fragment is dropped where the ports decide', blue: [{ from: 'web', to: 'db', action: 'plug', proto: 'tcp', ports: [5432] }, { from: 'web', to: 'db', action: 'plug', proto: 'udp' }], src: 'web1', dst: 'db1', drop: Drop.None, packets: [[6, -1, -1, Drop.PolicyFragment], [17, -1, -1, Drop.None], [58, -1, -1, Drop.PolicyProtoPort]] },
  { says: 'a later fragment passes when the protocol alone decides', blue: [WEB_MESH, { from: 'web1', to: 'web2', action: 'unplug', proto: 'udp' }], src: 'web1', dst: 'web2', drop: Drop.None, packets: [[6, -1, -1, Drop.None], [17, -1, -1, Drop.PolicyUnplugRule]] },
  { says: 'a later fragment passes when ports cannot change the verdict', blue: [{ from: 'web1', to: 'web2', action: 'plug', proto: 'tcp', ports: [80] }, { from: 'web1', to: 'web2', action: 'plug', proto: 'tcp' }], src: 'web1', dst: 'web2', drop: Drop.None, filter: 'tcp dport 80 | tcp', packets: [[6, -1, -1, Drop.None]] },
];

for (const row of ROWS) {
  test(row.says, () => {
    const p = policy(row.blue, row.green);
    const d: DirectionDecision = p.decide(id(p, row.src), id(p, row.dst), row.at ?? MON + 10 * H);
    assert.is(dropName(d.drop), dropName(row.drop), 'drop');
    assert.is(d.revision, 7);
    if (row.rule !== undefined) assert.is(d.rule, row.rule, 'rule');
    if (row.flow !== undefined) assert.is(d.flow, row.flow, 'flow');
    if (row.encrypt !== undefined) assert.is(d.encrypt, row.encrypt, 'encrypt');
    if (row.validUntil !== undefined) assert.is(d.validUntil, row.validUntil, 'validUntil');
    if (row.filter !== undefined) assert.is(d.filter === null ? null : d.filter.describe(), row.filter, 'filter');
    for (const [proto, sport, dport, want] of row.packets ?? []) {
      const got = d.filter === null ? Drop.None : d.filter.check(proto, sport, dport);
      assert.is(dropName(got), dropName(want), `packet proto ${proto} ${sport} -> ${dport}`);
    }
  });
}

test('an identity that no tenant holds is denied by default', () => {
  const p = policy([WEB_MESH]);
  const d = p.decide('fd00:9::1', id(p, 'web1'), MON);
  assert.is(d.drop, Drop.PolicyDefaultDeny);
  assert.is(d.rule, 'unknown-identity');
});

test('explain records memberships, matching rules and the decision', () => {
  const p = policy([WEB_MESH, { name: 'opens', from: 'web', to: 'db', action: 'initiate', proto: 'tcp', ports: [5432] }, OFFICE]);
  const trace = new Trace();
  p.decide(id(p, 'db1'), id(p, 'web1'), SAT, trace);
  assert.equal(trace.steps.map((s) => `${s.result} ${s.text}`), [
    'info src db1 (fd00:1::4, tenant blue) in blue:db1, blue:*, blue:db, blue:backend',
    'info dst web1 (fd00:1::1, tenant blue) in blue:web1, blue:*, blue:web',
    'info blue/opens (initiate web -> db tcp 5432) matches as to -> from',
    'ok plugged by blue/opens: tcp sport 5432, ESP, replies only (initiate)',
  ]);
  const t2 = new Trace();
  p.decide(id(p, 'web2'), id(p, 'web1'), SAT, t2);
  assert.ok(t2.steps.some((s) => s.text === 'blue/office (plug web1 -> web2) matches as to -> from, but is outside its window mon,tue,wed,thu,fri 09:00-17:00 UTC'));
  assert.is(t2.steps[t2.steps.length - 1].text, 'plugged by blue/web-mesh: every packet, ESP');
});

test('explain names the reason of an unplug', () => {
  const p = policy([]);
  const trace = new Trace();
  p.decide(id(p, 'high'), id(p, 'low'), MON, trace);
  assert.equal(trace.steps.slice(2).map((s) => `${s.result} ${s.text}`), [
    'info level 3 of src > level 1 of dst: data flows only upwards',
    'fail unplugged by level: policy/level (data may not flow from a higher to a lower security level)',
  ]);
});

test('decide gives the same answer with and without a trace', () => {
  const p = policy([WEB_MESH, { from: 'web', to: 'db', action: 'initiate', proto: 'tcp', ports: [5432] }]);
  for (const [s, d] of [['web1', 'db1'], ['db1', 'web1'], ['web1', 'web2'], ['db1', 'db2']]) {
    const plain = p.decide(id(p, s), id(p, d), MON);
    const traced = p.decide(id(p, s), id(p, d), MON, new Trace());
    assert.equal({ ...traced, filter: traced.filter?.describe() }, { ...plain, filter: plain.filter?.describe() });
  }
});

test('directions with the same conditions share one filter', () => {
  const p = policy([{ from: 'web', to: 'db', action: 'plug', proto: 'tcp', ports: [5432] }]);
  const a = p.decide(id(p, 'web1'), id(p, 'db1'), MON);
  const b = p.decide(id(p, 'web2'), id(p, 'db2'), MON);
  assert.ok(a.filter !== null && a.filter === b.filter);
});

test('directions decided alike share one decision object; any difference makes another', () => {
  const p = policy([WEB_MESH, { from: 'web', to: 'db', action: 'plug', proto: 'tcp', ports: [5432] }]);
  const mesh = p.decide(id(p, 'web1'), id(p, 'web2'), MON);
  assert.is(p.decide(id(p, 'web2'), id(p, 'web3'), MON), mesh, 'another pair of the same rule: the same object');
  const db = p.decide(id(p, 'web1'), id(p, 'db1'), MON);
  assert.is.not(db, mesh, 'another rule, another filter');
  assert.is(p.decide(id(p, 'web3'), id(p, 'db2'), MON), db);
  const denied = p.decide(id(p, 'db1'), id(p, 'admin'), MON);
  assert.is(denied.drop, Drop.PolicyDefaultDeny);
  assert.is(p.decide(id(p, 'admin'), id(p, 'db2'), MON), denied, 'the same refusal: the same object');
  assert.is.not(p.decide(id(p, 'web1'), id(p, 'vault1'), MON), denied, 'another reason: another object');
  const next = policy([WEB_MESH]);
  assert.is.not(next.decide(id(next, 'web1'), id(next, 'web2'), MON), mesh, "another policy's decisions are its own");
});

test.run();
