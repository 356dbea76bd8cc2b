// A host holds only its own credentials: a switch whose key directory holds another host's
// VM key refuses to start, with an error that names the key and where it belongs.

import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NviError } from '../src/base/errors.js';
import { loadConfig } from '../src/config/config.js';
import { checkHostKeys } from '../src/switch/host-keys.js';

const REPO = new URL('../../', import.meta.url).pathname;

/** A copy of the lab's config and pki in a temporary directory. */
function copyLab(): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'nvi-keys-'));
  cpSync(join(REPO, 'lab', 'pki'), join(dir, 'pki'), { recursive: true });
  const yaml = readFileSync(join(REPO, 'nvi-switch.yaml'), 'utf8').replace('dir: lab/pki', 'dir: pki');
  writeFileSync(join(dir, 'nvi-switch.yaml'), yaml);
  return { dir, file: join(dir, 'nvi-switch.yaml') };
}

test("each lab host's key directory holds its own keys only", () => {
  const cfg = loadConfig(join(REPO, 'nvi-switch.yaml'));
  for (const h of cfg.hosts.keys()) checkHostKeys(cfg, h);
});

test("a key directory with another host's VM key is refused, naming the key and its host", () => {
  const { dir, file } = copyLab();
  try {
    cpSync(join(dir, 'pki', 'keys', 'h2', 'vms', 'web2.key'), join(dir, 'pki', 'keys', 'h1', 'vms', 'web2.key'));
    assert.throws(() => checkHostKeys(loadConfig(file), 'h1'), (e: Error) => e instanceof NviError && e.code === 'NVI_ERR_PKI' && /web2.key is the key of VM web2, which runs on host h2/.test(e.message));
    checkHostKeys(loadConfig(file), 'h2'); // h2 itself is fine
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a key directory with the key of a VM the config does not know is refused', () => {
  const { dir, file } = copyLab();
  try {
    cpSync(join(dir, 'pki', 'keys', 'h1', 'vms', 'web1.key'), join(dir, 'pki', 'keys', 'h1', 'vms', 'ghost.key'));
    assert.throws(() => checkHostKeys(loadConfig(file), 'h1'), /ghost.key is the key of VM ghost, which is in no tenant of the config/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("nvi-switch run refuses to start on a host holding another host's VM key, before it touches anything", () => {
  const { dir, file } = copyLab();
  try {
    cpSync(join(dir, 'pki', 'keys', 'h2', 'vms', 'db1.key'), join(dir, 'pki', 'keys', 'h1', 'vms', 'db1.key'));
    const r = spawnSync(process.execPath, [join(REPO, 'bin', 'nvi-switch.js'), 'run', '--host', 'h1', '-c', file], { encoding: 'utf8', timeout: 20_000 });
    assert.is.not(r.status, 0);
    assert.match(r.stderr, /db1.key is the key of VM db1, which runs on host h2.*\[NVI_ERR_PKI\]/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
