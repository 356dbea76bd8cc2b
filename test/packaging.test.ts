// packaging/nvi-switch@.service: systemd's own checker accepts the unit as an instance (no
// unknown key, an executable ExecStart), and it runs the switch the way the CLI takes it, with
// the state directory systemd gives it as the config's stateDir.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/config.js';
import { controlPath, hostStateDir } from '../src/switch/paths.js';
import { parse } from 'yaml';
import { REPO } from './e2e-fixture.js';

const UNIT = readFileSync(join(REPO, 'packaging', 'nvi-switch@.service'), 'utf8');

function verify(text: string): { code: number | null; err: string } {
  const dir = mkdtempSync(join(tmpdir(), 'nvi-unit-'));
  try {
    const file = join(dir, 'nvi-switch@h1.service');
    writeFileSync(file, text);
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    if (r.error) throw new Error(`systemd-analyze is missing (Debian's systemd package): ${r.error.message}`);
    return { code: r.status, err: `${r.stdout}${r.stderr}`.trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('systemd-analyze verify accepts the unit, without a warning', () => {
  const r = verify(UNIT);
  assert.is(r.code, 0, r.err);
  assert.is(r.err, '');
});

test('the check is real: an unknown key and a missing executable are reported', () => {
  assert.match(verify(UNIT.replace('NoNewPrivileges=yes', 'NoNewPrivilege=yes')).err, /Unknown key 'NoNewPrivilege'/);
  assert.is.not(verify(UNIT.replace('ExecStart=/usr/bin/node', 'ExecStart=/usr/bin/no-such-node')).code, 0);
});

test('the unit keeps only CAP_NET_ADMIN and CAP_NET_RAW, and runs `run --host %i` on /etc/nvi-switch/nvi-switch.yaml', () => {
  assert.match(UNIT, /^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW$/m);
  assert.match(UNIT, /^AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW$/m);
  assert.match(UNIT, /^ExecStart=\/usr\/bin\/node \/opt\/nvi-switch\/bin\/nvi-switch\.js run --host %i -c \/etc\/nvi-switch\/nvi-switch\.yaml$/m);
  assert.match(UNIT, /^StateDirectory=nvi-switch$/m);
});

test('stateDir in the config moves the control sockets and the hosts\' state there', () => {
  const doc = parse(readFileSync(join(REPO, 'nvi-switch.yaml'), 'utf8')) as Record<string, unknown>;
  const cfg = parseConfig({ ...doc, stateDir: '/var/lib/nvi-switch' }, '/etc/nvi-switch/nvi-switch.yaml');
  assert.is(controlPath(cfg, 'h1'), '/var/lib/nvi-switch/run/h1.sock');
  assert.is(hostStateDir(cfg, 'h2'), '/var/lib/nvi-switch/hosts/h2');
  const plain = parseConfig(doc, '/etc/nvi-switch/nvi-switch.yaml');
  assert.is(controlPath(plain, 'h1'), '/etc/nvi-switch/.nvi-state/run/h1.sock');
  assert.throws(() => parseConfig({ ...doc, stateDir: 7 }, '/x/nvi-switch.yaml'), /stateDir/);
});

test.run();
