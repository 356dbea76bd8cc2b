// The `port:` of a VM in nvi-switch.yaml: which kinds there are, their defaults, and the errors
// for a port that cannot work, each naming its path in the file.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { streamPortPath } from '../src/switch/paths.js';
import { atExit } from './at-exit.js';

const SHIPPED = fileURLToPath(new URL('../../nvi-switch.yaml', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'nvi-config-ports-'));
atExit(() => rmSync(dir, { recursive: true, force: true }));

/** The shipped config with web1's `port:` set to `port` (as YAML text of a flow map). */
function withPort(port: unknown): CloudConfig {
  const doc = parseDocument(readFileSync(SHIPPED, 'utf8'));
  doc.setIn(['tenants', 'blue', 'vms', 'web1', 'port'], doc.createNode(port));
  const file = join(dir, 'nvi-switch.yaml');
  writeFileSync(file, doc.toString());
  return loadConfig(file);
}

test('without port: a TAP the switch owns, named by tap:', () => {
  const cfg = loadConfig(SHIPPED);
  assert.equal(cfg.vms.get('web1')!.port, { kind: 'tap' });
  assert.is(cfg.vms.get('web1')!.tap, 'nvi-web1');
});

test('qemu-tap and stream are read; a stream socket without a path goes under the host state directory', () => {
  assert.equal(withPort({ kind: 'qemu-tap' }).vms.get('web1')!.port, { kind: 'qemu-tap' });
  const cfg = withPort({ kind: 'stream' });
  assert.equal(cfg.vms.get('web1')!.port, { kind: 'stream' });
  assert.is(streamPortPath(cfg, 'h1', 'web1'), join(dir, '.nvi-state', 'hosts', 'h1', 'ports', 'web1.sock'));
  assert.equal(withPort({ kind: 'stream', path: '/run/nvi/web1.sock' }).vms.get('web1')!.port, { kind: 'stream', path: '/run/nvi/web1.sock' });
});

for (const [what, port, message] of [
  ['an unknown kind', { kind: 'vhost' }, /tenants\.blue\.vms\.web1\.port\.kind: "vhost" is not a port kind \(tap, qemu-tap, stream\)/],
  ['a path on a TAP port', { kind: 'qemu-tap', path: '/x' }, /web1\.port\.path: only a stream port has a path/],
  ['a relative socket path', { kind: 'stream', path: 'web1.sock' }, /web1\.port\.path: "web1.sock": the socket path must be absolute/],
  ['a socket path too long for sun_path', { kind: 'stream', path: `/${'x'.repeat(120)}` }, /web1\.port\.path: a unix socket path has at most 107 bytes; this one has 121/],
  ['an unknown key', { kind: 'stream', queues: 4 }, /web1\.port.*queues/],
] as const) {
  test(`${what} is an error naming its path`, () => {
    try {
      withPort(port);
    } catch (e) {
      assert.match((e as Error).message, message);
      return;
    }
    assert.unreachable('loadConfig accepted it');
  });
}

test.run();
