// The compiled, indexed policy against the naive evaluator (src/policy/naive.ts) on random
// policies and questions from a fixed seed, so that a failure reproduces. Each mismatch
// prints the policy document and the question.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop, dropName } from '../src/base/drops.js';
import { formatIpv6, parseIpv6Address } from '../src/base/address.js';
import { ConfigError } from '../src/base/errors.js';
import { compilePolicy, type CompiledPolicy, type PolicyTenantInput } from '../src/policy/compile.js';
import { policyDocument } from '../src/policy/document.js';
import { naiveDirection, naivePacket } from '../src/policy/naive.js';
import { rng } from './rng.js';

const SEED = 0x5eed_2014;
const POLICIES = 300;
const QUESTIONS_PER_POLICY = 30;
const PACKETS_PER_QUESTION = 8;
const MON = Date.UTC(2024, 0, 1);


const random = rng(SEED);
const int = (n: number): number => Math.floor(random() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
const chance = (p: number): boolean => random() < p;

const PORT_LISTS = [[22], [80], [443, 5432], ['1000-2000'], ['80-90', 443], [23, '5000-5010']];
const PORTS = [0, 1, 22, 23, 79, 80, 90, 91, 443, 999, 1000, 1500, 2000, 2001, 5000, 5010, 5432, 40000, 65535];
const HOURS = ['00:00', '06:00', '09:00', '12:30', '17:00', '22:00', '23:59'];

function randomTenants(): PolicyTenantInput[] {
  const count = 2 + int(2);
  const names = ['ta', 'tb', 'tc'].slice(0, count);
  const vmNames = names.map(() => Array.from({ length: 2 + int(5) }, (_, i) => `v${i}`));
  const groupNames = names.map(() => Array.from({ length: int(4) }, (_, i) => `g${i}`));
  return names.map((name, t) => {
    const own = (): string => (chance(0.15) ? '*' : chance(0.5) && groupNames[t].length > 0 ? pick(groupNames[t]) : pick(vmNames[t]));
    const foreign = (): string => {
      const u = int(count);
      const r = random();
      const n = r < 0.15 ? '*' : r < 0.5 && groupNames[u].length > 0 ? pick(groupNames[u]) : pick(vmNames[u]);
      return `${names[u]}:${n}`;
    };
    const groups: Record<string, string[]> = {};
    groupNames[t].forEach((g, i) => {
      // Members: own VMs, earlier own groups (no cycles), '*', other tenants' VMs.
      groups[g] = Array.from({ length: 1 + int(3) }, () => {
        const r = random();
        if (r < 0.2 && i > 0) return `g${int(i)}`;
        if (r < 0.3) return '*';
        if (r < 0.45) {
          const u = int(count);
          return `${names[u]}:${pick(vmNames[u])}`;
        }
        return pick(vmNames[t]);
      });
    });
    const rules = Array.from({ length: int(9) }, (_, i) => {
      const a = own();
      const b = chance(0.35) ? foreign() : own();
      const [from, to] = chance(0.5) ? [a, b] : [b, a];
      const action = pick(['plug', 'plug', 'plug', 'unplug', 'unplug', 'diode', 'initiate']);
      const r: Record<string, unknown> = { from, to, action };
      if (chance(0.5)) r.name = `r${i}`;
      if (chance(0.5)) {
        r.proto = pick(['tcp', 'tcp', 'udp', 'icmp', 'any', 47]);
        if ((r.proto === 'tcp' || r.proto === 'udp') && chance(0.6)) r.ports = pick(PORT_LISTS);
      }
      if (chance(0.25)) {
        const when: Record<string, unknown> = {};
        if (chance(0.5)) when.days = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'].filter(() => chance(0.4));
        if ((when.days as string[] | undefined)?.length === 0) delete when.days;
        if (chance(0.8)) when.from = pick(HOURS);
        if (chance(0.8)) when.to = pick([...HOURS, '24:00']);
        if (when.from === when.to || (when.from === undefined && when.to === '00:00')) delete when.to;
        if (when.from === '00:00' && when.to === undefined) delete when.from;
        if (chance(0.4)) when.tz = pick(['UTC', '+02:00', '-05:30', '+14:00']);
        r.when = when;
      }
      if (action !== 'unplug' && chance(0.25)) r.encrypt = false;
      return r;
    });
    return {
      name,
      prefix: { text: `fd00:${t + 1}::/64` },
      vms: vmNames[t].map((v, i) => ({
        name: v,
        identityText: formatIpv6(parseIpv6Address(`fd00:${t + 1}::${i + 1}`)),
        level: chance(0.4) ? int(3) : undefined,
      })),
      policy: { groups, rules, tests: undefined },
      path: `tenants.${name}`,
    };
  });
}

function compiled(): { tenants: PolicyTenantInput[]; policy: CompiledPolicy } {
  for (;;) {
    const tenants = randomTenants();
    try {
      return { tenants, policy: compilePolicy(tenants, 1) };
    } catch (e) {
      // The generator may write an initiate whose sides overlap, or a window that is empty.
      if (!(e instanceof ConfigError)) throw e;
    }
  }
}

function randomTime(): number {
  const day = int(14);
  if (chance(0.3)) return MON + day * 86_400_000 + pick([0, 6, 9, 12.5, 17, 22]) * 3_600_000 + pick([0, -1, 1, 30_000]);
  return MON + Math.floor(random() * 14 * 86_400_000);
}

function randomPacket(): [number, number, number] {
  const proto = pick([6, 6, 17, 17, 58, 47]);
  if (proto === 58) return [proto, -1, pick([128, 129, 1, -1])];
  if (proto === 47) return [proto, -1, -1];
  if (chance(0.1)) return [proto, -1, -1]; // a later fragment
  return [proto, pick(PORTS), pick(PORTS)];
}

test('the compiled index decides as the naive evaluator on random policies', () => {
  let questions = 0;
  let packets = 0;
  const seen = new Set<string>();
  for (let n = 0; n < POLICIES; n++) {
    const { tenants, policy } = compiled();
    const ids = policy.model.vms.map((v) => v.identity);
    for (let q = 0; q < QUESTIONS_PER_POLICY; q++) {
      const src = chance(0.02) ? 'fd00:9::1' : pick(ids);
      const dst = pick(ids);
      const now = randomTime();
      const where = `policy ${n}, ${src} -> ${dst} at ${new Date(now).toISOString()}\n${policyDocument(tenants)}`;
      const got = policy.decide(src, dst, now);
      const want = naiveDirection(policy.model, src, dst, now);
      assert.is(dropName(got.drop), dropName(want.drop), `drop: ${where}`);
      assert.is(got.rule, want.rule, `rule: ${where}`);
      assert.is(got.validUntil, want.validUntil, `validUntil: ${where}`);
      assert.is(got.encrypt, want.encrypt, `encrypt: ${where}`);
      assert.is(got.flow, want.flow, `flow: ${where}`);
      seen.add(dropName(got.drop));
      questions++;
      for (let k = 0; k < PACKETS_PER_QUESTION; k++) {
        const [proto, sport, dport] = randomPacket();
        const verdict = got.drop !== Drop.None ? got.drop : got.filter === null ? Drop.None : got.filter.check(proto, sport, dport);
        const expected = naivePacket(policy.model, src, dst, now, proto, sport, dport);
        assert.is(dropName(verdict), dropName(expected), `packet ${proto} ${sport} -> ${dport}: ${where}`);
        seen.add(`packet ${dropName(verdict)}`);
        packets++;
      }
    }
  }
  assert.ok(questions >= 5000, `${questions} questions`);
  // The random policies must reach every outcome, or the comparison proves little.
  for (const outcome of ['none', 'policy/default-deny', 'policy/cross-tenant', 'policy/unplug-rule', 'policy/level', 'policy/diode', 'policy/time-window',
    'packet policy/proto-port', 'packet policy/unplug-rule', 'packet policy/fragment']) {
    assert.ok(seen.has(outcome), `no question ended in ${outcome} (${packets} packets)`);
  }
});

test.run();
