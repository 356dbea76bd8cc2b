import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ca, host, vm } from '../src/cli/cmd-pki.js';
import { loadConfig } from '../src/config/config.js';
import { NviError } from '../src/base/errors.js';
import { parseCertificate, pkiPaths } from '../src/trust/pki.js';
import { BindingVerifier } from '../src/trust/verifier.js';
import { Drop, dropName } from '../src/base/drops.js';
import { SqliteStore } from '../src/store/sqlite-store.js';

const here = dirname(fileURLToPath(import.meta.url));
const labKeys = resolve(here, '../../lab/pki/keys');

const YAML = `# a test cloud
version: 1
pki:
  dir: pki   # keys here
store:
  kind: embedded
  path: state/store.db
hosts:
  h1: { address: 10.77.0.1 }
  h2: { address: 10.77.0.2 }
tenants:
  blue:
    prefix: fd9a:3c7e:51b2:1::/64
    vms:
      web1: { host: h1, identity: fd9a:3c7e:51b2:1:f63b:ba70:5b22:fa85 }   # from lab/pki/keys/h1/vms/web1.key
      db1:  { host: h2, identity: fd9a:3c7e:51b2:1::dead }                 # not its key's identity
    rules: []
`;

/** A temp cloud with the lab's web1 and db1 keys, each in its host's key directory. */
function cloud(): string {
  const dir = mkdtempSync(join(tmpdir(), 'nvi-cli-'));
  writeFileSync(join(dir, 'nvi-switch.yaml'), YAML);
  for (const [host, k] of [['h1', 'web1'], ['h2', 'db1']]) {
    mkdirSync(join(dir, 'pki', 'keys', host, 'vms'), { recursive: true });
    copyFileSync(join(labKeys, host, 'vms', `${k}.key`), join(dir, 'pki', 'keys', host, 'vms', `${k}.key`));
  }
  return join(dir, 'nvi-switch.yaml');
}

/** Run a command with its output discarded. */
async function quiet(f: () => Promise<number>): Promise<number> {
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    return await f();
  } finally {
    process.stdout.write = write;
  }
}

async function refused(f: () => Promise<number>, code: string, message: RegExp): Promise<void> {
  try {
    await quiet(f);
  } catch (e) {
    assert.instance(e, NviError);
    assert.is((e as NviError).code, code);
    assert.match((e as Error).message, message);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

test('ca init writes the CA with a 0600 key and refuses to overwrite it without --force', async () => {
  const file = cloud();
  assert.is(await quiet(() => ca.run(['init', '-c', file])), 0);
  const p = pkiPaths(loadConfig(file).pkiDir);
  const first = readFileSync(p.caCert, 'utf8');
  assert.ok(parseCertificate(first).isCa);
  assert.is(statSync(p.caKey).mode & 0o777, 0o600);
  await refused(() => ca.run(['init', '-c', file]), 'NVI_ERR_PKI', /already exists.*--force/);
  assert.is(await quiet(() => ca.run(['init', '-c', file, '--force'])), 0);
  assert.is.not(readFileSync(p.caCert, 'utf8'), first);
});

test('host enroll issues the certificate and publishes the host record', async () => {
  const file = cloud();
  await quiet(() => ca.run(['init', '-c', file]));
  assert.is(await quiet(() => host.run(['enroll', 'h1', '-c', file])), 0);
  const cfg = loadConfig(file);
  const cert = parseCertificate(readFileSync(pkiPaths(cfg.pkiDir).hostCert('h1'), 'utf8'));
  assert.is(cert.commonName, 'h1');
  assert.equal(cert.ipAddresses, ['10.77.0.1']);
  const s = SqliteStore.open(cfg.store.path);
  assert.is((await s.lookupHost('h1'))?.address, '10.77.0.1');
  await s.close();
  await refused(() => host.run(['enroll', 'h9', '-c', file]), 'NVI_ERR_CONFIG', /hosts.h9: no such host/);
});

test('vm create with an existing key publishes a binding that verifies, then epoch 2 on a second run, and 3 after a detach', async () => {
  const file = cloud();
  await quiet(() => ca.run(['init', '-c', file]));
  await quiet(() => host.run(['enroll', 'h1', '-c', file]));
  const before = readFileSync(file, 'utf8');
  assert.is(await quiet(() => vm.run(['create', 'web1', '--tenant', 'blue', '--host', 'h1', '-c', file])), 0);
  assert.is(readFileSync(file, 'utf8'), before, 'already in the YAML with this identity: file untouched');
  const cfg = loadConfig(file);
  const s = SqliteStore.open(cfg.store.path);
  const b = (await s.lookup('fd9a:3c7e:51b2:1:f63b:ba70:5b22:fa85'))!;
  assert.is(b.epoch, 1);
  const anchor = readFileSync(pkiPaths(cfg.pkiDir).caCert, 'utf8');
  const v = new BindingVerifier(anchor, s, { now: () => Date.now() }, { verifyPerSecond: 10 });
  assert.is(dropName(await v.verify(b, { hostAddress: '10.77.0.1', host: 'h1' })), dropName(Drop.None));
  await quiet(() => vm.run(['create', 'web1', '--tenant', 'blue', '--host', 'h1', '-c', file]));
  assert.is((await s.lookup(b.identity))!.epoch, 2);
  assert.ok(await s.withdraw(b.identity, 2), 'detached: the store keeps epoch 2 as withdrawn');
  assert.is(await quiet(() => vm.run(['create', 'web1', '--tenant', 'blue', '--host', 'h1', '-c', file])), 0, 'created again');
  assert.is((await s.lookup(b.identity))!.epoch, 3, 'above the withdrawn epoch');
  await s.close();
});

test('vm create of a new VM adds one line to the YAML and keeps the rest of the file', async () => {
  const file = cloud();
  await quiet(() => ca.run(['init', '-c', file]));
  await quiet(() => vm.run(['create', 'web7', '--tenant', 'blue', '--host', 'h2', '-c', file]));
  const cfg = loadConfig(file);
  const web7 = cfg.vms.get('web7')!;
  assert.is(web7.host, 'h2');
  const lines = readFileSync(file, 'utf8').split('\n');
  const original = YAML.split('\n');
  const added = lines.findIndex((l) => l.startsWith('      web7: { host: h2, identity: '));
  assert.ok(added > 0);
  assert.equal([...lines.slice(0, added), ...lines.slice(added + 1)], original);
  assert.is(lines[added], `      web7: { host: h2, identity: ${web7.identityText} }`);
  assert.ok(existsSync(join(dirname(file), 'pki', 'keys', 'h2', 'vms', 'web7.key')), "the new key is in h2's key directory");
  assert.not.ok(existsSync(join(dirname(file), 'pki', 'vms', 'web7.key')), 'and nowhere else');
  assert.ok(existsSync(join(dirname(file), 'pki', 'vms', 'web7.crt')), 'the certificate is public, in the pki dir');
});

test('host enroll writes the host key to its own key directory', async () => {
  const file = cloud();
  await quiet(() => ca.run(['init', '-c', file]));
  await quiet(() => host.run(['enroll', 'h2', '-c', file]));
  assert.ok(existsSync(join(dirname(file), 'pki', 'keys', 'h2', 'host.key')));
  assert.is(statSync(join(dirname(file), 'pki', 'keys', 'h2', 'host.key')).mode & 0o777, 0o600);
});

test('vm create adds the VM after the last one when the VMs are written as block mappings of several lines', async () => {
  const file = cloud();
  writeFileSync(file, YAML.replace(
    /      web1: \{ host: h1, identity: ([^ ]+) \}.*\n      db1:  \{ host: h2, identity: ([^ ]+) \}.*\n/,
    '      web1:\n        host: h1\n        identity: $1\n      db1:\n        host: h2\n        identity: $2\n',
  ));
  const original = readFileSync(file, 'utf8');
  assert.match(original, /\n      db1:\n        host: h2\n/, 'the VMs are block mappings');
  await quiet(() => ca.run(['init', '-c', file]));
  await quiet(() => vm.run(['create', 'web7', '--tenant', 'blue', '--host', 'h1', '-c', file]));
  const lines = readFileSync(file, 'utf8').split('\n');
  const added = lines.findIndex((l) => l.startsWith('      web7: { host: h1, identity: '));
  assert.ok(added > 0, lines.join('\n'));
  assert.equal([...lines.slice(0, added), ...lines.slice(added + 1)], original.split('\n'));
  assert.is(lines[added - 1].trim().startsWith('identity: '), true, 'right after the last line of the last VM');
  assert.is(loadConfig(file).vms.get('web7')?.host, 'h1');
});

test('vm create refuses a VM whose key does not derive the identity in the YAML', async () => {
  const file = cloud();
  await quiet(() => ca.run(['init', '-c', file]));
  await refused(
    () => vm.run(['create', 'db1', '--tenant', 'blue', '--host', 'h2', '-c', file]),
    'NVI_ERR_CONFIG',
    /tenants.blue.vms.db1.identity: .* says fd9a:3c7e:51b2:1::dead, but the key .* derives fd9a:3c7e:51b2:1:2789:55aa:5f71:9793/,
  );
});

test('vm create refuses an unknown tenant, an unknown host and a missing --tenant', async () => {
  const file = cloud();
  await refused(() => vm.run(['create', 'x1', '--tenant', 'red', '--host', 'h1', '-c', file]), 'NVI_ERR_CONFIG', /tenants.red: no such tenant/);
  await refused(() => vm.run(['create', 'x1', '--tenant', 'blue', '--host', 'h9', '-c', file]), 'NVI_ERR_CONFIG', /hosts.h9: no such host/);
  await refused(() => vm.run(['create', 'x1', '--host', 'h1', '-c', file]), 'NVI_ERR_USAGE', /--tenant is required/);
});

test.run();
