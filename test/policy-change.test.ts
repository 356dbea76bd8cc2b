// Policy change: affected(next) names the identities whose decisions may differ, so that
// the data path re-evaluates exactly the cables with one end among them.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatIpv6, parseIpv6Address } from '../src/base/address.js';
import type { Policy } from '../src/policy/decision.js';
import { compilePolicy, type CompiledPolicy, type PolicyTenantInput } from '../src/policy/compile.js';

const MON = Date.UTC(2024, 0, 1);
const VMS = ['web1', 'web2', 'web3', 'db1', 'db2', 'admin', 'other'];
const identity = (name: string): string => formatIpv6(parseIpv6Address(`fd00:1::${VMS.indexOf(name) + 1}`));

interface Blue {
  readonly groups: Record<string, string[]>;
  readonly rules: Record<string, unknown>[];
  readonly levels?: Record<string, number>;
}

const BASE: Blue = {
  groups: { web: ['web1', 'web2', 'web3'], db: ['db1', 'db2'] },
  rules: [
    { name: 'web-mesh', from: 'web', to: 'web', action: 'plug' },
    { name: 'admin-db', from: 'admin', to: 'db', action: 'plug', proto: 'tcp', ports: [5432] },
  ],
};

function compile(b: Blue, revision = 1): CompiledPolicy {
  const tenants: PolicyTenantInput[] = [
    {
      name: 'blue',
      prefix: { text: 'fd00:1::/64' },
      vms: VMS.map((name) => ({ name, identityText: identity(name), level: b.levels?.[name] })),
      policy: { groups: b.groups, rules: b.rules, tests: undefined },
      path: 'tenants.blue',
    },
  ];
  return compilePolicy(tenants, revision);
}

function affectedNames(a: Blue, b: Blue): string[] {
  const r = compile(a).affected(compile(b, 2));
  assert.is(r.all, false);
  return VMS.filter((n) => r.identities.has(identity(n)));
}

test('an unchanged policy affects nobody', () => {
  assert.equal(affectedNames(BASE, BASE), []);
});

test("a rule change touching group db reports exactly db's members and the rule's other side", () => {
  const next = { ...BASE, rules: [BASE.rules[0], { ...BASE.rules[1], ports: [5433] }] };
  assert.equal(affectedNames(BASE, next), ['db1', 'db2', 'admin']);
});

test('a VM that changes group is affected, and nobody else', () => {
  const next = { ...BASE, groups: { web: ['web1', 'web2'], db: ['db1', 'db2', 'web3'] } };
  assert.equal(affectedNames(BASE, next), ['web3']);
});

test('a VM whose level changes is affected', () => {
  assert.equal(affectedNames(BASE, { ...BASE, levels: { db1: 2 } }), ['db1']);
});

test('a new rule affects its two sides, not the rules it moves down', () => {
  const next = { ...BASE, rules: [{ from: 'web1', to: 'other', action: 'plug' }, ...BASE.rules] };
  assert.equal(affectedNames(BASE, next), ['web1', 'other']);
});

test('rules that change order affect both their sides', () => {
  const next = { ...BASE, rules: [BASE.rules[1], BASE.rules[0]] };
  assert.equal(affectedNames(BASE, next), ['web1', 'web2', 'web3', 'db1', 'db2', 'admin']);
});

test('a policy of another kind cannot be narrowed', () => {
  const other: Policy = { revision: 9, decide: () => { throw new Error('unused'); }, affected: () => ({ all: true, identities: new Set() }) };
  assert.is(compile(BASE).affected(other).all, true);
});

test('every pair whose decision changes has an end among the affected', () => {
  let seed = 7;
  const next = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const sides = [...VMS, 'web', 'db', '*'];
  const actions = ['plug', 'unplug', 'diode'];
  const randomRule = (): Record<string, unknown> => {
    const r: Record<string, unknown> = { from: sides[next(sides.length)], to: sides[next(sides.length)], action: actions[next(3)] };
    if (next(3) === 0) r.proto = 'udp';
    if (next(4) === 0) r.when = { from: '09:00', to: '17:00' };
    return r;
  };
  let changed = 0;
  for (let round = 0; round < 300; round++) {
    const a: Blue = { groups: { web: VMS.filter(() => next(2) === 0), db: VMS.filter(() => next(3) === 0) }, rules: Array.from({ length: 1 + next(5) }, randomRule) };
    const rules = [...a.rules];
    const k = next(rules.length + 1);
    if (next(2) === 0) rules.splice(k, 0, randomRule());
    else rules.splice(k, 1);
    const groups = next(3) === 0 ? { ...a.groups, db: VMS.filter(() => next(3) === 0) } : a.groups;
    const b: Blue = { groups, rules, levels: next(4) === 0 ? { [VMS[next(VMS.length)]]: 1, db1: 0 } : undefined };
    const pa = compile(a);
    const pb = compile(b, 2);
    const hit = pa.affected(pb).identities;
    for (const s of VMS) {
      for (const d of VMS) {
        for (const at of [MON + 10 * 3_600_000, MON + 20 * 3_600_000]) {
          const x = pa.decide(identity(s), identity(d), at);
          const y = pb.decide(identity(s), identity(d), at);
          const same = x.drop === y.drop && x.rule === y.rule && x.encrypt === y.encrypt && x.flow === y.flow &&
            x.validUntil === y.validUntil && x.filter?.describe() === y.filter?.describe();
          if (same) continue;
          changed++;
          assert.ok(hit.has(identity(s)) || hit.has(identity(d)), `round ${round}: ${s} -> ${d} changed but neither end is affected`);
        }
      }
    }
  }
  assert.ok(changed > 100, `${changed} changed decisions`);
});

test.run();
