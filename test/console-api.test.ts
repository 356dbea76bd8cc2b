// The tenant console's API on the shipped cloud (a real mapping store, the lab's CA), requests
// injected into the real server: every route refuses another tenant's token and a missing one,
// a tenant sees nothing of another tenant, bad input is refused with the field it fails on and
// publishes nothing, and a draft whose tests pass is published, signed, as the next revision.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { FastifyInstance } from 'fastify';
import { consoleServer } from '../src/console/server.js';
import { TenantPolicies } from '../src/console/tenant-policy.js';
import { issueToken, TokenBook } from '../src/console/tokens.js';
import { policyRefusal } from '../src/policy/signed-policy.js';
import type { CableInfo } from '../src/switch/cable-info.js';
import { loadCa } from '../src/trust/pki.js';
import { openOffline, type Offline } from './offline-fixture.js';

interface Fixture {
  o: Offline;
  app: FastifyInstance;
  tokens: { blue: string; green: string; operator: string };
  dir: string;
}

/** Cables as h2's switch would list them: one blue pair, one cross-tenant attempt from blue's db1 to green's vault1, one green pair. */
function cablesOf(o: Offline): CableInfo[] {
  const id = (vm: string): string => o.config.vms.get(vm)!.identityText;
  const c = (src: string, dst: string, state: string, rule: string): CableInfo => ({ direction: 'egress', src: id(src), dst: id(dst), srcVm: src, dstVm: dst, peer: 'h1', state, rule, packets: 3, bytes: 300, drops: 0, ageSeconds: 1 });
  return [c('web2', 'web1', 'plugged', 'blue/web-mesh'), c('db1', 'vault1', 'plugged', 'green/vault-from-db'), c('vault1', 'sensor1', 'unplugged: policy/diode', 'green/sensor-diode')];
}

async function setup(): Promise<Fixture> {
  const o = await openOffline();
  const dir = mkdtempSync(join(tmpdir(), 'nvi-console-'));
  const cfg = { ...o.config, stateDir: dir };
  const tokens = { blue: issueToken(cfg, { kind: 'tenant', tenant: 'blue' }), green: issueToken(cfg, { kind: 'tenant', tenant: 'green' }), operator: issueToken(cfg, { kind: 'operator' }) };
  const store = o.off.cloud.store;
  const app = consoleServer({
    tokens: TokenBook.load(cfg),
    policies: new TenantPolicies(store, loadCa(o.config.pkiDir).privateKey),
    binding: (id) => store.lookup(id),
    hosts: ['h1', 'h2'],
    cables: async (h) => (h === 'h2' ? cablesOf(o) : undefined),
  });
  await app.ready();
  return { o, app, tokens, dir };
}

function done(f: Fixture): void {
  void f.app.close();
  f.o.off.close();
  rmSync(f.dir, { recursive: true, force: true });
}

async function call(f: Fixture, method: string, url: string, token?: string, body?: unknown, headers: Record<string, string> = {}) {
  const r = await f.app.inject({
    method: method as 'GET',
    url,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined && typeof body !== 'string' ? { 'content-type': 'application/json' } : {}), ...headers },
    payload: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  let json: unknown;
  try {
    json = r.json();
  } catch {
    json = r.body;
  }
  return { status: r.statusCode, json: json as Record<string, unknown> & unknown[], text: r.body, type: String(r.headers['content-type']) };
}

test('every route: no token 401; green\'s token on blue\'s objects 403; the operator-only route refused to tenants', async () => {
  const f = await setup();
  const doc = (await call(f, 'GET', '/openapi.json')).json as unknown as { paths: Record<string, Record<string, unknown>> };
  const routes = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => ({ method: m.toUpperCase(), path })));
  assert.ok(routes.length >= 11, `the OpenAPI document lists the routes: ${routes.length}`);
  const table: string[] = [];
  for (const r of routes) {
    const url = r.path.replace('{tenant}', 'blue').replace('{vm}', 'web1');
    const body = r.method === 'GET' ? undefined : { rules: [], tests: [], groups: {}, revision: 1, src: 'web1', dst: 'web2' };
    const none = await call(f, r.method, url, undefined, body);
    assert.is(none.status, 401, `${r.method} ${url} without a token`);
    const green = await call(f, r.method, url, f.tokens.green, body);
    const expect = url.includes('/tenants/blue') || url === '/api/hosts' ? 403 : 200;
    assert.is(green.status, expect, `${r.method} ${url} with green's token: ${green.text}`);
    if (expect === 200) assert.not.match(green.text, /blue|web1|db1/, `${url} shows green nothing of blue`);
    table.push(`${r.method} ${url}: ${none.status}/${green.status}`);
  }
  assert.equal((await call(f, 'GET', '/api/tenants', f.tokens.green)).json, ['green']);
  assert.equal((await call(f, 'GET', '/api/tenants', f.tokens.operator)).json, ['blue', 'green']);
  assert.is((await call(f, 'GET', '/api/hosts', f.tokens.operator)).status, 200);
  assert.is((await call(f, 'GET', '/api/tenants/blue/vms', 'nvi_forged')).status, 401, 'an unknown token');
  done(f);
});

test('a tenant sees its VMs with host and epoch, and of a cable to another tenant only the identity at the far end', async () => {
  const f = await setup();
  const vms = (await call(f, 'GET', '/api/tenants/blue/vms', f.tokens.blue)).json as unknown as { name: string; host: string; epoch: number }[];
  assert.equal(vms.map((v) => v.name).sort(), ['db1', 'web1', 'web2', 'web3']);
  assert.ok(vms.every((v) => (v.host === 'h1' || v.host === 'h2') && v.epoch >= 1));
  assert.is((await call(f, 'GET', '/api/tenants/blue/vms/vault1', f.tokens.blue)).status, 404, "green's VM is no VM of blue");
  const cables = (await call(f, 'GET', '/api/tenants/blue/cables', f.tokens.blue)).json as unknown as { srcVm: string | null; dstVm: string | null; rule: string }[];
  assert.is(cables.length, 2, 'the blue pair and the cross-tenant one; not green\'s own');
  const cross = cables.find((c) => c.srcVm === 'db1')!;
  assert.is(cross.dstVm, null, "vault1's name is not shown");
  assert.is(cross.rule, "(another tenant's rule)");
  const green = (await call(f, 'GET', '/api/tenants/green/cables', f.tokens.green)).text;
  assert.not.match(green, /"srcVm":"db1"|web-mesh/, "green sees blue's end unnamed and none of blue's rules");
  const yaml = await call(f, 'GET', '/api/tenants/blue/policy.yaml', f.tokens.blue);
  assert.match(yaml.type, /yaml/);
  assert.match(yaml.text, /tenants:\n  blue:\n    groups:/);
  assert.not.match(yaml.text, /green:\n/);
  done(f);
});

test('bad input is refused with the field it fails on; nothing is published; the console keeps answering', async () => {
  const f = await setup();
  const blue = (await call(f, 'GET', '/api/tenants/blue/policy', f.tokens.blue)).json as unknown as { revision: number; groups: object; rules: object[]; tests: object[] };
  const put = (draft: object) => call(f, 'PUT', '/api/tenants/blue/policy', f.tokens.blue, { groups: blue.groups, rules: blue.rules, tests: blue.tests, revision: blue.revision, ...draft });
  const cases: [string, () => ReturnType<typeof call>, number, RegExp][] = [
    ['a malformed rule', () => put({ rules: [...blue.rules, { from: 'web', to: 'db', action: 'explode' }] }), 422, /tenants\.blue\.rules\[\d+\]\.action/],
    ['an unknown group', () => put({ rules: [...blue.rules, { from: 'nosuch', to: 'db', action: 'plug' }] }), 422, /nosuch/],
    ['a port out of range', () => put({ rules: [...blue.rules, { from: 'web', to: 'db', action: 'plug', proto: 'tcp', ports: [70000] }] }), 422, /ports\[0\]/],
    ['a body of 1 MB', () => call(f, 'PUT', '/api/tenants/blue/policy', f.tokens.blue, JSON.stringify({ rules: [], pad: 'x'.repeat(1 << 20) }), { 'content-type': 'application/json' }), 413, /too large/i],
    ['a wrong content type', () => call(f, 'PUT', '/api/tenants/blue/policy', f.tokens.blue, 'rules: []', { 'content-type': 'text/plain' }), 415, /content-type|media type/i],
    ['a level out of range', () => put({ levels: { web1: 5000 } }), 422, /tenants\.blue\.vms\.web1\.level/],
    ["a level for another tenant's VM", () => put({ levels: { vault1: 1 } }), 422, /vault1 is not a VM of tenant blue/],
    ['an unknown field', () => put({ surprise: 1 }), 400, /additional|surprise/],
    ['rules not a list', () => put({ rules: { a: 1 } }), 400, /rules/],
    ['an old revision', () => put({ revision: blue.revision - 1 }), 409, /revision/],
  ];
  for (const [what, go, status, message] of cases) {
    const r = await go();
    assert.is(r.status, status, `${what}: ${r.text.slice(0, 200)}`);
    assert.match(String((r.json as unknown as { error: string }).error), message, what);
    assert.is((await f.o.off.cloud.store.policy())!.revision, blue.revision, `${what}: nothing published`);
  }
  const checked = (await call(f, 'POST', '/api/tenants/blue/policy/check', f.tokens.blue, { ...blue, rules: [...blue.rules, { from: 'web', to: 'db', action: 'explode' }] })).json as unknown as { errors: { path: string }[] };
  assert.match(checked.errors[0].path, /^tenants\.blue\.rules\[\d+\]\.action$/, 'check names the field');
  assert.is((await call(f, 'GET', '/api/whoami', f.tokens.blue)).status, 200, 'still answering');
  done(f);
});

test('a draft whose tests pass is published as the next revision, signed by the CA; one whose tests fail is not', async () => {
  const f = await setup();
  const blue = (await call(f, 'GET', '/api/tenants/blue/policy', f.tokens.blue)).json as unknown as { revision: number; groups: object; rules: object[]; tests: object[] };
  const failing = { ...blue, tests: [...blue.tests, { src: 'web1', dst: 'web2', proto: 'udp', port: 53, expect: 'unplug' }] };
  const refused = await call(f, 'PUT', '/api/tenants/blue/policy', f.tokens.blue, failing);
  assert.is(refused.status, 422);
  assert.ok((refused.json as unknown as { check: { results: { passed: boolean }[] } }).check.results.some((r) => !r.passed));
  const rule = { name: 'no-dns', from: 'web', to: 'web', action: 'unplug', proto: 'udp', ports: [53] };
  const whatIf = (await call(f, 'POST', '/api/tenants/blue/policy/what-if', f.tokens.blue, { ...failing, rules: [...blue.rules, rule], src: 'web1', dst: 'web2', proto: 'udp', port: 53 })).json as unknown as { got: string; rule: string; steps: unknown[] };
  assert.is(whatIf.got, 'unplug');
  assert.is(whatIf.rule, 'blue/no-dns');
  assert.ok(whatIf.steps.length > 0, 'step by step');
  const ok = await call(f, 'PUT', '/api/tenants/blue/policy', f.tokens.blue, { ...failing, rules: [...blue.rules, rule] });
  assert.is(ok.status, 200, ok.text);
  const rec = (await f.o.off.cloud.store.policy())!;
  assert.is(rec.revision, blue.revision + 1);
  assert.is(policyRefusal(rec, f.o.off.cloud.anchorKey, blue.revision), undefined, 'signed by the CA, newer');
  assert.match(rec.document, /no-dns/);
  const levels = await call(f, 'PUT', '/api/tenants/blue/policy', f.tokens.blue, { ...failing, rules: [...blue.rules, rule], levels: { web1: 3 }, revision: rec.revision });
  assert.is(levels.status, 200, levels.text);
  assert.is(((await call(f, 'GET', '/api/tenants/blue/policy', f.tokens.blue)).json as unknown as { levels: Record<string, number | null> }).levels.web1, 3, 'a level set in the draft is published');
  const green = (await call(f, 'PUT', '/api/tenants/blue/policy', f.tokens.green, { ...failing, rules: [...blue.rules, rule], revision: rec.revision }));
  assert.is(green.status, 403, 'green cannot publish blue\'s policy');
  done(f);
});

test('with a certificate the console speaks TLS only', async () => {
  const o = await openOffline();
  const dir = mkdtempSync(join(tmpdir(), 'nvi-console-tls-'));
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  const cfg = { ...o.config, stateDir: dir };
  const token = issueToken(cfg, { kind: 'tenant', tenant: 'blue' });
  const app = consoleServer({
    tokens: TokenBook.load(cfg), policies: new TenantPolicies(o.off.cloud.store, loadCa(o.config.pkiDir).privateKey),
    binding: (id) => o.off.cloud.store.lookup(id), hosts: [], cables: async () => undefined,
  }, { cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  const get = (proto: typeof https | typeof http): Promise<{ status: number; body: string; cert?: string }> => new Promise((resolve, reject) => {
    const req = proto.get({ host: '127.0.0.1', port, path: '/api/whoami', headers: { authorization: `Bearer ${token}` }, rejectUnauthorized: false }, (res) => {
      let body = '';
      const cert = (res.socket as { getPeerCertificate?: () => { subject?: { CN?: string } } }).getPeerCertificate?.().subject?.CN;
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode!, body, cert }));
    });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
  });
  const tls = await get(https);
  assert.is(tls.status, 200);
  assert.equal(JSON.parse(tls.body), { kind: 'tenant', tenant: 'blue' });
  assert.is(tls.cert, '127.0.0.1', 'the configured certificate');
  await get(http).then((r) => assert.unreachable(`plain HTTP answered ${r.status}`), (e: Error) => assert.ok(e instanceof Error));
  await app.close();
  o.off.close();
  rmSync(dir, { recursive: true, force: true });
});

test.run();
