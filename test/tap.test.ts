// TapPort against the kernel, inside a network namespace the test creates (nvi-tn-<pid>,
// removed at the end, also when a test fails). The TAP is opened here and its device moved
// into the namespace (the fd keeps working across the move); the namespace's own stack
// then pings through it and answers what we write.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawn } from 'node:child_process';
import { fstatSync } from 'node:fs';
import { Batch, FRAME_OFFSET } from '../src/dataplane/batch.js';
import { ETHERTYPE_IPV6, ETH_HLEN, ETH_OFF_DST, ETH_OFF_SRC, ETH_OFF_TYPE } from '../src/wire/ethernet.js';
import { formatMac, parseMac } from '../src/base/address.js';
import { ICMP6_ECHO_REQUEST, sealIcmp6, writeIcmp6Header } from '../src/wire/icmpv6.js';
import { IPV6_HLEN, IPV6_OFF_DST, IPV6_OFF_NEXT, IPV6_OFF_SRC, PROTO_ICMPV6 } from '../src/wire/ipv6.js';
import { formatIpv6, parseIpv6Address } from '../src/base/address.js';
import { ROUTER_MAC } from '../src/dataplane/vm-port.js';
import { TapPort } from '../src/io/tap.js';
import { loadNative } from '../src/native/addon.js';
import { guardedSetup } from './guarded-setup.js';
import { atExit } from './at-exit.js';

const NS = `nvi-tn-${process.pid}`;
const TAP = 'nvi-tt0';
const TAP_VNET = 'nvi-tt1';
const VM_MAC = '02:00:00:00:00:0a';
const VM_ADDR = 'fd00:4e56:1::1';
const SWITCH_ADDR = 'fd00:4e56:1::2';
const ICMP6_ECHO_REPLY = 129;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function cleanup(): void {
  for (const args of [['netns', 'del', NS], ['link', 'del', TAP], ['link', 'del', TAP_VNET]]) {
    try {
      ip(...args);
    } catch {
      // already gone
    }
  }
}
atExit(cleanup);

/** Configure a TAP that sits in NS as the VM's side of the link. */
function configureVmSide(dev: string, addr: string): void {
  ip('-n', NS, 'link', 'set', dev, 'address', VM_MAC);
  ip('-n', NS, 'addr', 'add', `${addr}/64`, 'dev', dev, 'nodad');
  ip('-n', NS, 'link', 'set', dev, 'up');
  // The switch is the VM's only neighbour: no neighbour discovery needed for the test.
  ip('-n', NS, 'neigh', 'replace', SWITCH_ADDR, 'lladdr', formatMac(ROUTER_MAC), 'dev', dev, 'nud', 'permanent');
}

function rxPackets(dev: string): number {
  const info = JSON.parse(ip('-n', NS, '-s', '-j', 'link', 'show', dev)) as { stats64: { rx: { packets: number } } }[];
  return info[0].stats64.rx.packets;
}

/** Wait until `done()` or the deadline; the port's callback does the work meanwhile. */
async function until(done: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return done();
}

interface Icmp {
  type: number;
  src: string;
  dst: string;
  ethSrc: string;
  ethDst: string;
  id: number;
}

/** The ICMPv6 messages among the frames of a batch (other frames: MLD, RS, ... are skipped). */
function icmpIn(b: Batch): Icmp[] {
  const out: Icmp[] = [];
  for (let i = 0; i < b.count; i++) {
    const f = b.data;
    const s = b.start[i];
    if (f.readUInt16BE(s + ETH_OFF_TYPE) !== ETHERTYPE_IPV6) continue;
    const l3 = s + ETH_HLEN;
    if (f[l3 + IPV6_OFF_NEXT] !== PROTO_ICMPV6) continue;
    out.push({
      type: f[l3 + IPV6_HLEN],
      src: formatIpv6(f, l3 + IPV6_OFF_SRC),
      dst: formatIpv6(f, l3 + IPV6_OFF_DST),
      ethSrc: formatMac(f.subarray(s + ETH_OFF_SRC, s + ETH_OFF_SRC + 6)),
      ethDst: formatMac(f.subarray(s + ETH_OFF_DST, s + ETH_OFF_DST + 6)),
      id: f.readUInt16BE(l3 + IPV6_HLEN + 4),
    });
  }
  return out;
}

/** An Ethernet frame with an ICMPv6 echo request from the switch's side to the VM. */
function echoRequest(id: number): Buffer {
  const payload = 16;
  const f = Buffer.alloc(ETH_HLEN + IPV6_HLEN + 8 + payload);
  parseMac(VM_MAC).copy(f, ETH_OFF_DST);
  ROUTER_MAC.copy(f, ETH_OFF_SRC);
  f.writeUInt16BE(ETHERTYPE_IPV6, ETH_OFF_TYPE);
  writeIcmp6Header(f, ETH_HLEN, parseIpv6Address(SWITCH_ADDR), parseIpv6Address(VM_ADDR), 8 + payload, 64);
  const m = ETH_HLEN + IPV6_HLEN;
  f[m] = ICMP6_ECHO_REQUEST;
  f.writeUInt16BE(id, m + 4);
  f.writeUInt16BE(1, m + 6);
  f.fill(0x5a, m + 8);
  sealIcmp6(f, ETH_HLEN, 8 + payload);
  return f;
}

let tap: TapPort;
const batch = new Batch();
let seen: Icmp[] = [];
let callbacks = 0;
/** The owner's loop: on readiness, read a batch, keep the ICMPv6 messages, recycle the batch. */
function drain(port: TapPort, portIndex: number): () => void {
  return () => {
    callbacks++;
    batch.reset();
    const n = port.read(batch, portIndex, 1234);
    assert.is(batch.count, n);
    for (let i = 0; i < n; i++) {
      assert.is(batch.start[i], Batch.slot(i) + FRAME_OFFSET);
      assert.is(batch.port[i], portIndex);
      assert.is(batch.time[i], 1234);
    }
    seen.push(...icmpIn(batch));
  };
}

guardedSetup(test, () => {
  cleanup();
  ip('netns', 'add', NS);
  ip('-n', NS, 'link', 'set', 'lo', 'up');
  tap = TapPort.open(TAP, { mtu: 1400 });
  ip('link', 'set', TAP, 'netns', NS);
  configureVmSide(TAP, VM_ADDR);
});

test.after(() => {
  tap?.close();
  cleanup();
});

test('open creates the device with the MTU asked for and a non-blocking fd', () => {
  assert.is(tap.name, TAP);
  const info = JSON.parse(ip('-n', NS, '-j', 'link', 'show', TAP)) as { mtu: number }[];
  assert.is(info[0].mtu, 1400);
  assert.ok(fstatSync(tap.fd).isCharacterDevice());
});

test('pings from the namespace arrive in read() with EtherType IPv6 and the VM\'s addresses', async () => {
  seen = [];
  tap.onReadable(drain(tap, 3));
  const ping = spawn('ip', ['netns', 'exec', NS, 'ping', '-6', '-c', '3', '-i', '0.2', '-W', '1', SWITCH_ADDR], { stdio: 'ignore' });
  const echo = () => seen.filter((m) => m.type === ICMP6_ECHO_REQUEST);
  const got = await until(() => echo().length >= 3, 5000);
  ping.kill();
  assert.ok(got, `saw ${echo().length} echo requests in ${seen.length} ICMPv6 messages`);
  for (const m of echo()) {
    assert.equal([m.ethSrc, m.ethDst, m.src, m.dst], [VM_MAC, formatMac(ROUTER_MAC), VM_ADDR, SWITCH_ADDR]);
  }
  assert.is(tap.rxFrames >= 3, true);
});

test('a frame written from JS reaches the namespace, whose answer comes back through read()', async () => {
  seen = [];
  const before = rxPackets(TAP);
  const out = new Batch();
  out.push(echoRequest(0x4e56), FRAME_OFFSET, 0, 0);
  assert.is(tap.write(out, Int32Array.of(0), 1), 1);
  assert.ok(await until(() => seen.some((m) => m.type === ICMP6_ECHO_REPLY && m.id === 0x4e56), 3000), 'no echo reply');
  assert.is(rxPackets(TAP), before + 1);
  const reply = seen.find((m) => m.type === ICMP6_ECHO_REPLY)!;
  assert.equal([reply.src, reply.dst, reply.ethDst], [VM_ADDR, SWITCH_ADDR, formatMac(ROUTER_MAC)]);
});

test('write counts a frame the kernel refuses and still writes the frames after it', () => {
  const out = new Batch();
  out.push(echoRequest(1), FRAME_OFFSET, 0, 0);
  out.push(Buffer.alloc(5), FRAME_OFFSET, 0, 0); // shorter than an Ethernet header: EINVAL
  out.push(echoRequest(2), FRAME_OFFSET, 0, 0);
  const refused = tap.txRefused;
  assert.is(tap.write(out, Int32Array.of(0, 1, 2), 3), 2);
  assert.is(tap.txRefused, refused + 1);
  assert.is(tap.lastErrno, 22);
});

test('a write whose frame lies outside the arena throws before writing anything', () => {
  const out = new Batch();
  out.push(echoRequest(3), FRAME_OFFSET, 0, 0);
  out.start[1] = out.data.length - 10;
  out.len[1] = 100;
  const written = tap.txFrames;
  assert.throws(() => tap.write(out, Int32Array.of(0, 1), 2), RangeError);
  assert.is(tap.txFrames, written);
});

test('a TAP opened in the namespace with a virtio-net header reads and writes the same frames', async () => {
  const vnet = TapPort.open(TAP_VNET, { netns: NS, vnetHdr: true });
  try {
    ip('-n', NS, 'link', 'set', TAP_VNET, 'address', VM_MAC);
    ip('-n', NS, 'link', 'set', TAP_VNET, 'up');
    // Same addresses as on nvi-tt0 would clash: the reply route must point here, so move them.
    ip('-n', NS, 'addr', 'del', `${VM_ADDR}/64`, 'dev', TAP);
    configureVmSide(TAP_VNET, VM_ADDR);
    seen = [];
    vnet.onReadable(drain(vnet, 7));
    const out = new Batch();
    out.push(echoRequest(0x7777), FRAME_OFFSET, 0, 0);
    assert.is(vnet.write(out, Int32Array.of(0), 1), 1);
    assert.ok(await until(() => seen.some((m) => m.type === ICMP6_ECHO_REPLY && m.id === 0x7777), 3000),
      'no echo reply through the vnet-header TAP');
  } finally {
    vnet.close();
  }
});

test('after close no callback runs, the fd is closed and the device is gone', async () => {
  const port = TapPort.open(TAP_VNET, { netns: NS });
  let calls = 0;
  port.onReadable(() => calls++);
  const fd = port.fd;
  port.close();
  port.close(); // idempotent
  assert.throws(() => fstatSync(fd), /EBADF/);
  assert.throws(() => ip('-n', NS, 'link', 'show', TAP_VNET));
  assert.is(port.read(batch, 0, 0), 0);
  await new Promise((r) => setTimeout(r, 30));
  assert.is(calls, 0);
});

test('a device deleted under an open port ends the port with a failure instead of a busy loop', async () => {
  const port = TapPort.open(TAP_VNET, { netns: NS });
  let calls = 0;
  port.onReadable(() => {
    calls++;
    batch.reset();
    port.read(batch, 0, 0);
  });
  ip('-n', NS, 'link', 'del', TAP_VNET);
  assert.ok(await until(() => port.failure !== null, 2000), 'no failure reported');
  const after = calls;
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(calls - after <= 1, `still called back ${calls - after} times`);
  assert.match(port.failure!, /EBADF/);
  port.close();
});

test('a TAP name longer than 15 bytes is refused with a clear error', () => {
  assert.throws(() => TapPort.open('nvi-this-is-too-long'),
    (e: Error & { code?: string }) => e.code === 'NVI_ERR_TAP_NAME' && /1\.\.15 bytes/.test(e.message));
  // The addon checks too, without crashing.
  assert.throws(() => loadNative().tapOpen('nvi-this-is-too-long', 0, 0, null, null), RangeError);
});

test('an MTU a slot cannot hold is refused before the device is created', () => {
  assert.throws(() => TapPort.open('nvi-tt9', { mtu: 9000 }), (e: Error & { code?: string }) => e.code === 'NVI_ERR_TAP_MTU');
  assert.throws(() => ip('link', 'show', 'nvi-tt9'));
});

test('a TAP in a namespace that does not exist is refused with the namespace named', () => {
  assert.throws(() => TapPort.open('nvi-tt9', { netns: 'nvi-tn-missing' }),
    (e: Error & { code?: string }) => e.code === 'NVI_ERR_TAP_OPEN' && /nvi-tn-missing.*ENOENT/.test(e.message));
});

test.run();
