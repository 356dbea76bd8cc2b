// Golden tests of `nvi-switch explain`: the real miss path with a recorder attached, at a
// fixed time. To accept a deliberate change of the text: UPDATE_GOLDEN=1 node dist/test/explain.test.js

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = new URL('../../', import.meta.url).pathname;
const GOLDEN = new URL('../../test/golden/', import.meta.url).pathname;
const AT = '2026-12-01T00:00:00Z';

function explain(args: string[]): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, [`${ROOT}bin/nvi-switch.js`, 'explain', ...args, '-c', `${ROOT}nvi-switch.yaml`, '--at', AT], { encoding: 'utf8' });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status: number; stdout: string };
    return { code: err.status, out: err.stdout };
  }
}

function golden(name: string, args: string[], code: number): void {
  const r = explain(args);
  const file = `${GOLDEN}explain-${name}.txt`;
  if (process.env.UPDATE_GOLDEN === '1') writeFileSync(file, r.out);
  assert.ok(existsSync(file), `no golden file ${file}: write it on purpose with UPDATE_GOLDEN=1 node dist/test/explain.test.js, then read it`);
  assert.fixture(r.out, readFileSync(file, 'utf8'));
  assert.is(r.code, code, `exit code of explain ${args.join(' ')}`);
}

test('a plugged pair on two hosts: both algorithms pass and the packet passes', () => {
  golden('web1-db1-tcp-5432', ['web1', 'db1', 'tcp', '5432'], 0);
});

test('the reply side of initiate-only refuses a new connection at both ends', () => {
  golden('db1-web1-tcp-5432', ['db1', 'web1', 'tcp', '5432'], 3);
});

test('across tenants the sender unplugs before anything leaves', () => {
  golden('web1-vault1', ['web1', 'vault1'], 3);
});

test('an unplug rule on a plugged cable refuses telnet to a VM on the same host', () => {
  golden('web1-web3-tcp-23', ['web1', 'web3', 'tcp', '23'], 3);
});

test('the data diode passes one way and the level rule stops the other', () => {
  golden('sensor1-vault1-udp-514', ['sensor1', 'vault1', 'udp', '514'], 0);
  golden('vault1-sensor1-udp-514', ['vault1', 'sensor1', 'udp', '514'], 3);
});

test('the JSON form carries the same steps', () => {
  const r = JSON.parse(execFileSync(process.execPath, [`${ROOT}bin/nvi-switch.js`, 'explain', 'web1', 'web2', '--json', '-c', `${ROOT}nvi-switch.yaml`, '--at', AT], { encoding: 'utf8' })) as { side: string; drop: number; steps: { stage: string }[] }[];
  assert.equal(r.map((e) => e.side), ['sender', 'receiver']);
  assert.ok(r.every((e) => e.drop === 0));
  assert.ok(r[0].steps.some((s) => s.stage === 'verify') && r[0].steps.some((s) => s.stage === 'policy'));
});

test.run();
