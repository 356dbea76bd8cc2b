// Policy config errors name the YAML path; the policy document compiles as the YAML does;
// the shipped nvi-switch.yaml passes its own policy tests.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../src/config/config.js';
import { ConfigError } from '../src/base/errors.js';
import { formatIpv6, parseIpv6Address } from '../src/base/address.js';
import { compilePolicy, type PolicyTenantInput } from '../src/policy/compile.js';
import { compilePolicyDocument, policyDocument } from '../src/policy/document.js';
import { runPolicyTests } from '../src/policy/policy-tests.js';
import { run as policyCommand } from '../src/cli/cmd-policy.js';

const MON = Date.UTC(2024, 0, 1);

function blue(policy: { groups?: unknown; rules?: unknown; tests?: unknown }): PolicyTenantInput[] {
  const vm = (name: string, i: number, level?: number): PolicyTenantInput['vms'][number] => ({ name, identityText: formatIpv6(parseIpv6Address(`fd00:1::${i}`)), level });
  return [
    {
      name: 'blue',
      prefix: { text: 'fd00:1::/64' },
      vms: [vm('web1', 1), vm('web2', 2), vm('db1', 3, 2)],
      policy: { groups: policy.groups ?? { web: ['web1', 'web2'] }, rules: policy.rules, tests: policy.tests },
      path: 'tenants.blue',
    },
    { name: 'green', prefix: { text: 'fd00:2::/64' }, vms: [{ name: 'vault1', identityText: 'fd00:2::1', level: undefined }], policy: { groups: undefined, rules: undefined, tests: undefined }, path: 'tenants.green' },
  ];
}

function throwsAt(f: () => unknown, message: string): void {
  try {
    f();
  } catch (e) {
    assert.instance(e, ConfigError);
    assert.is((e as Error).message, message);
    return;
  }
  assert.unreachable(`no error; expected ${message}`);
}

const R = (r: Record<string, unknown>): unknown[] => [r];
const ERRORS: readonly (readonly [string, { groups?: unknown; rules?: unknown; tests?: unknown }, string])[] = [
  ['a port out of range', { rules: [{ from: 'web', to: 'web', action: 'plug' }, { from: 'web', to: 'db1', action: 'plug', proto: 'tcp', ports: [80, 70000] }] },
    'tenants.blue.rules[1].ports[1]: port must be 1-65535, got 70000'],
  ['a port range that runs backwards', { rules: R({ from: 'web', to: 'db1', action: 'plug', proto: 'udp', ports: ['90-80'] }) }, 'tenants.blue.rules[0].ports[0]: range 90-80 runs backwards'],
  ['ports without tcp or udp', { rules: R({ from: 'web', to: 'db1', action: 'plug', proto: 'icmp', ports: [1] }) }, 'tenants.blue.rules[0].ports: ports need proto tcp or udp'],
  ['an unknown key in a rule', { rules: R({ from: 'web', to: 'db1', action: 'plug', port: [80] }) },
    'tenants.blue.rules[0].port: unknown key (expected one of name, from, to, action, proto, ports, when, encrypt)'],
  ['an unknown action', { rules: R({ from: 'web', to: 'db1', action: 'allow' }) }, 'tenants.blue.rules[0].action: expected one of plug, unplug, diode, initiate, got "allow"'],
  ['an unknown protocol', { rules: R({ from: 'web', to: 'db1', action: 'plug', proto: 'sctp' }) }, 'tenants.blue.rules[0].proto: proto must be tcp, udp, icmp, any or a number 0-255; got "sctp"'],
  ['a rule naming an unknown member', { rules: R({ from: 'web', to: 'db9', action: 'plug' }) }, 'tenants.blue.rules[0].to: tenant blue has no VM or group "db9" (known: *, web1, web2, db1, web)'],
  ['a rule naming an unknown tenant', { rules: R({ from: 'web', to: 'red:db1', action: 'plug' }) }, 'tenants.blue.rules[0].to: unknown tenant "red" in "red:db1"'],
  ['a rule of another tenant\'s VMs only', { rules: R({ from: 'green:vault1', to: 'green:*', action: 'plug' }) }, 'tenants.blue.rules[0]: a rule of tenant blue must name at least one of its own VMs or groups on a side'],
  ['two rules with one name', { rules: [{ name: 'a', from: 'web', to: 'web', action: 'plug' }, { name: 'a', from: 'web', to: 'db1', action: 'plug' }] }, 'tenants.blue.rules[1].name: rule name blue/a used twice'],
  ['encrypt on an unplug', { rules: R({ from: 'web', to: 'db1', action: 'unplug', encrypt: false }) }, 'tenants.blue.rules[0].encrypt: encrypt applies to plug, diode and initiate rules only'],
  ['an initiate whose sides share two VMs', { rules: R({ from: 'web', to: '*', action: 'initiate' }) }, 'tenants.blue.rules[0]: initiate from and to both hold web1 and web2: each could only reply to the other; use plug'],
  ['a bad day', { rules: R({ from: 'web', to: 'db1', action: 'plug', when: { days: ['mon', 'funday'] } }) }, 'tenants.blue.rules[0].when.days[1]: expected one of mon, tue, wed, thu, fri, sat, sun, got "funday"'],
  ['a bad time', { rules: R({ from: 'web', to: 'db1', action: 'plug', when: { from: '9:00' } }) }, 'tenants.blue.rules[0].when.from: expected a time "HH:MM" (00:00-23:59), got "9:00"'],
  ['a time zone name', { rules: R({ from: 'web', to: 'db1', action: 'plug', when: { tz: 'Europe/Paris' } }) }, 'tenants.blue.rules[0].when.tz: expected "UTC" or an offset "+HH:MM" / "-HH:MM" (at most 14 hours), got "Europe/Paris"'],
  ['an empty window', { rules: R({ from: 'web', to: 'db1', action: 'plug', when: { from: '10:00', to: '10:00' } }) }, 'tenants.blue.rules[0].when: from and to are equal; leave both out for the whole day'],
  ['a group cycle', { groups: { a: ['b'], b: ['web1', 'a'] } }, 'tenants.blue.groups.a: group cycle: blue:a -> blue:b -> blue:a'],
  ['a group named as a VM', { groups: { web1: ['web2'] } }, 'tenants.blue.groups.web1: web1 is already a VM of tenant blue (groups and VMs share one namespace)'],
  ['a group member that does not exist', { groups: { web: ['web1', 'web9'] } }, 'tenants.blue.groups.web[1]: tenant blue has no VM or group "web9" (known: *, web1, web2, db1, web)'],
  ['a test that names a group', { tests: [{ src: 'web', dst: 'db1', expect: 'plug' }] }, 'tenants.blue.tests[0].src: blue:web is a group; a test names one VM'],
  ['a tcp test without a port', { tests: [{ src: 'web1', dst: 'db1', proto: 'tcp', expect: 'plug' }] }, 'tenants.blue.tests[0]: a tcp test needs a port'],
  ['a test with a bad time', { tests: [{ src: 'web1', dst: 'db1', at: 'monday', expect: 'plug' }] }, 'tenants.blue.tests[0].at: expected an ISO 8601 time like "2025-03-03T09:30:00Z", got "monday"'],
];

for (const [what, policy, message] of ERRORS) {
  test(`${what} is an error naming its path`, () => throwsAt(() => compilePolicy(blue(policy), 1), message));
}

test('a policy document compiles to the same decisions as the YAML sections', () => {
  const tenants = blue({
    rules: [
      { name: 'mesh', from: 'web', to: 'web', action: 'plug' },
      { from: 'web', to: 'db1', action: 'initiate', proto: 'tcp', ports: [5432], when: { days: ['mon'], from: '08:00', to: '18:00' } },
      { from: 'db1', to: 'green:vault1', action: 'diode', encrypt: false },
    ],
  });
  const a = compilePolicy(tenants, 3);
  const b = compilePolicyDocument(policyDocument(tenants), 3);
  const ids = a.model.vms.map((v) => v.identity);
  for (const s of ids) {
    for (const d of ids) {
      for (const at of [MON + 9 * 3_600_000, MON + 20 * 3_600_000]) {
        const x = a.decide(s, d, at);
        const y = b.decide(s, d, at);
        assert.equal({ ...y, filter: y.filter?.describe() }, { ...x, filter: x.filter?.describe() });
      }
    }
  }
  assert.is(b.model.vms[2].level, 2);
});

test('a policy document with an identity outside its prefix is an error naming its path', () => {
  const doc = JSON.parse(policyDocument(blue({}))) as { tenants: { vms: { identity: string }[] }[] };
  doc.tenants[0].vms[1].identity = 'fd00:3::2';
  throwsAt(() => compilePolicyDocument(JSON.stringify(doc), 1), 'tenants.blue.vms.web2.identity: fd00:3::2 is not inside the tenant prefix fd00:1::/64');
});

test('a policy document with a non-canonical identity is an error naming its path', () => {
  const doc = JSON.parse(policyDocument(blue({}))) as { tenants: { vms: { identity: string }[] }[] };
  doc.tenants[0].vms[0].identity = 'FD00:1:0:0::1';
  throwsAt(() => compilePolicyDocument(JSON.stringify(doc), 1), 'tenants.blue.vms.web1.identity: not in canonical form (RFC 5952): fd00:1::1');
});

test('a policy document of another version is an error', () => {
  throwsAt(() => compilePolicyDocument('{"version":2,"tenants":[]}', 1), 'version: must be between 1 and 1, got 2');
});

test('policy tests report the rule that decided, and failures', () => {
  const tenants = blue({
    rules: [{ name: 'mesh', from: 'web', to: 'web', action: 'plug' }, { name: 'no-ssh', from: 'web', to: 'web', action: 'unplug', proto: 'tcp', ports: [22] }],
    tests: [
      { src: 'web1', dst: 'web2', proto: 'tcp', port: 80, expect: 'plug' },
      { src: 'web1', dst: 'web2', proto: 'tcp', port: 22, expect: 'unplug' },
      { src: 'web1', dst: 'db1', expect: 'plug' },
    ],
  });
  const r = runPolicyTests(compilePolicy(tenants, 1), tenants, MON);
  assert.equal(r.map((x) => [x.case, x.passed, x.got, x.rule, x.reason]), [
    ['web1 -> web2 tcp/80', true, 'plug', 'blue/mesh', 'none'],
    ['web1 -> web2 tcp/22', true, 'unplug', 'blue/no-ssh', 'policy/unplug-rule'],
    ['web1 -> db1', false, 'unplug', 'default-deny', 'policy/default-deny'],
  ]);
});

test('the shipped nvi-switch.yaml passes all its policy tests', () => {
  const cfg = loadConfig(fileURLToPath(new URL('../../nvi-switch.yaml', import.meta.url)));
  const tenants = [...cfg.tenants.values()];
  const results = runPolicyTests(compilePolicy(tenants, 1), tenants, MON);
  assert.ok(results.length >= 6, `${results.length} cases`);
  for (const r of results) assert.ok(r.passed, `${r.tenant}[${r.index}] ${r.case}: expected ${r.expect}, got ${r.got} (${r.rule}, ${r.reason})`);
});

test('policy test prints each case and exits 1 when one fails', async () => {
  const shipped = readFileSync(fileURLToPath(new URL('../../nvi-switch.yaml', import.meta.url)), 'utf8');
  const last = '      - { src: web1, dst: web3, proto: tcp, port: 23, expect: unplug }\n';
  assert.ok(shipped.includes(last));
  const dir = mkdtempSync(join(tmpdir(), 'nvi-policy-'));
  const file = join(dir, 'nvi-switch.yaml');
  writeFileSync(file, shipped.replace(last, `${last}      - { src: db1, dst: web2, expect: plug }\n`));
  const out: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string): boolean => out.push(chunk) > 0) as typeof process.stdout.write;
  let code: number;
  try {
    code = await policyCommand(['test', '-c', file]);
  } finally {
    process.stdout.write = write;
    rmSync(dir, { recursive: true });
  }
  assert.is(code, 1);
  const text = out.join('');
  assert.ok(text.includes('pass  blue[0]   web1 -> web2 tcp/80: plug (blue/web-mesh)\n'), text);
  assert.ok(text.includes('FAIL  blue[4]   db1 -> web2: expected plug, got unplug (blue/web-opens-db, policy/initiate-only)\n'), text);
  assert.ok(text.endsWith('6 passed, 1 failed\n'), text);
});

test.run();
