// A VM port on a TAP the hypervisor owns (TapPort.attach: an AF_PACKET socket on the TAP's host
// side), against the kernel in a namespace of the test's own (nvi-tp-<pid>, removed at the end).
// The "hypervisor" is a second fd on the same TAP, opened by name as QEMU opens it: what it
// writes is what the guest sends, what it reads is what the guest receives.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { Batch } from '../src/dataplane/batch.js';
import { TapPort } from '../src/io/tap.js';
import { guardedSetup } from './guarded-setup.js';
import { atExit } from './at-exit.js';

const NS = `nvi-tp-${process.pid}`;
const DEV = 'nvi-qt0';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function cleanup(): void {
  try {
    ip('netns', 'del', NS);
  } catch {
    // already gone
  }
}
atExit(cleanup);

/** A frame of `len` bytes from `src` MAC byte with a numbered payload. */
function frame(n: number, len = 100): Buffer {
  const f = Buffer.alloc(len, n & 0xff);
  Buffer.from([0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1]).copy(f, 0);
  f.writeUInt16BE(0x88b5, 12); // IEEE local experimental: the host's stack ignores it
  f.writeUInt32BE(n, 14);
  return f;
}

/** Write frames through `port` as the switch does: copied into a batch, sent by index. */
function send(port: TapPort, frames: Buffer[]): number {
  const b = new Batch();
  const idx = new Int32Array(frames.length);
  frames.forEach((f, k) => {
    const at = Batch.slot(k) + 64;
    f.copy(b.data, at);
    b.init(k, at, f.length, 0, 0);
    idx[k] = k;
  });
  b.count = frames.length;
  return port.write(b, idx, frames.length);
}

/** Read what `port` has (waiting up to `ms` for `want` frames); returns their sequence numbers. */
async function receive(port: TapPort, want: number, ms = 2000): Promise<number[]> {
  const got: number[] = [];
  const end = Date.now() + ms;
  const b = new Batch();
  while (got.length < want && Date.now() < end) {
    b.reset();
    const n = port.read(b, 0, 0);
    for (let i = 0; i < n; i++) if (b.data.readUInt16BE(b.start[i] + 12) === 0x88b5) got.push(b.data.readUInt32BE(b.start[i] + 14));
    if (n === 0) await new Promise((r) => setTimeout(r, 5));
  }
  return got;
}

let port: TapPort;

guardedSetup(test, () => {
  cleanup();
  ip('netns', 'add', NS);
  port = TapPort.attach(DEV, { netns: NS, mtu: 1400 });
});

test('attach makes the TAP when it is missing, persistent, up, with the host stack kept off it', () => {
  const link = JSON.parse(ip('-n', NS, '-d', '-j', 'link', 'show', DEV)) as { flags: string[]; mtu: number; linkinfo: { info_kind: string; info_data: { pi: boolean; persist?: boolean } } }[];
  assert.is(link[0].linkinfo.info_kind, 'tun');
  assert.ok(link[0].flags.includes('UP'), `flags ${link[0].flags.join(',')}`);
  assert.is(link[0].mtu, 1400);
  const sysctl = (key: string): string => execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-n', key], { encoding: 'utf8' }).trim();
  assert.is(sysctl(`net.ipv6.conf.${DEV}.disable_ipv6`), '1');
  assert.is(sysctl(`net.ipv4.conf.${DEV}.arp_ignore`), '8');
});

test('frames cross both ways between the hypervisor fd and the port, in order, not echoed back', async () => {
  const vm = TapPort.open(DEV, { netns: NS });
  try {
    assert.is(send(vm, Array.from({ length: 50 }, (_, k) => frame(k))), 50, 'the guest sends 50');
    assert.equal(await receive(port, 50), Array.from({ length: 50 }, (_, k) => k), 'the port reads them in order');
    assert.is(send(port, Array.from({ length: 40 }, (_, k) => frame(1000 + k, 1400))), 40, 'the switch sends 40');
    assert.equal(await receive(vm, 40), Array.from({ length: 40 }, (_, k) => 1000 + k), 'the guest receives them');
    assert.equal(await receive(port, 1, 200), [], 'the port does not read its own frames (PACKET_IGNORE_OUTGOING)');
  } finally {
    vm.close();
  }
});

test('the hypervisor stops and starts again: the TAP stays and the port works on without reopening', async () => {
  const first = TapPort.open(DEV, { netns: NS });
  send(first, [frame(1)]);
  assert.equal(await receive(port, 1), [1]);
  first.close(); // QEMU exits
  assert.ok(JSON.parse(ip('-n', NS, '-j', 'link', 'show', DEV)).length === 1, 'the TAP is still there');
  const n = send(port, [frame(2)]); // to a stopped VM: the driver drops it
  assert.ok(n <= 1);
  assert.is(port.failure, null, 'no failure while the VM is away');
  const second = TapPort.open(DEV, { netns: NS });
  try {
    send(second, [frame(3)]);
    assert.equal(await receive(port, 1), [3]);
    send(port, [frame(4)]);
    assert.equal(await receive(second, 1), [4]);
  } finally {
    second.close();
  }
});

test('a TAP deleted under the port: the port reports its failure instead of spinning', async () => {
  ip('-n', NS, 'link', 'del', DEV);
  let fired = 0;
  port.onReadable(() => {
    fired++;
    port.read(new Batch(), 0, 0);
  });
  const end = Date.now() + 2000;
  while (port.failure === null && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  assert.ok(port.failure, 'failure set');
  assert.match(port.failure!, /(poll|read) failed with E[A-Z]+/, port.failure!);
  const before = fired;
  await new Promise((r) => setTimeout(r, 100));
  assert.is(fired, before, 'no more callbacks once failed');
  port.close();
});

test('a bad name is refused; an interface of another kind is attached as it is (OVS system ports too)', () => {
  assert.throws(() => TapPort.attach('bad name', { netns: NS }), /TAP name/);
  ip('-n', NS, 'link', 'add', 'nvi-v0', 'type', 'veth', 'peer', 'name', 'nvi-v1');
  const p = TapPort.attach('nvi-v0', { netns: NS });
  p.close();
  assert.match(ip('-n', NS, '-d', 'link', 'show', 'nvi-v0'), /veth/, 'not replaced by a TAP');
});

test.run();
