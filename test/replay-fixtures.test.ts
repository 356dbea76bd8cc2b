// The shipped fixtures through host 1's egress and host 2's ingress (issue 2): every file
// meets its manifest; every allowed packet arrives byte for byte; no bad frame leaks; the
// counters add up; and tshark dissects the underlay and decrypts it with the exported SAs.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tsharkDecryptArgs } from '../src/esp/wireshark-sa.js';
import { ETH_HLEN } from '../src/wire/ethernet.js';
import { ROUTER_MAC } from '../src/dataplane/vm-port.js';
import { defaultManifest, readManifest, replayEntries, type FileResult, type FrameVerdict } from '../src/replay/manifest.js';
import { CONFIG_FILE, openOffline, type Offline } from './offline-fixture.js';
import { guardedSetup } from './guarded-setup.js';

let o: Offline;
let files: FileResult[];
let frames: FrameVerdict[];
const dir = mkdtempSync(join(tmpdir(), 'nvi-replay-test-'));

guardedSetup(test, async () => {
  o = await openOffline();
  ({ files, frames } = await replayEntries(o.off, readManifest(defaultManifest(CONFIG_FILE))));
  o.off.writeCaptures(dir);
});

test.after(() => {
  o.off.close();
  rmSync(dir, { recursive: true, force: true });
});

test('every fixture meets the outcome its manifest expects', () => {
  assert.ok(files.length >= 30, `${files.length} fixture files`);
  for (const f of files) {
    assert.ok(f.check !== null, `${f.file} has no expectation`);
    assert.ok(f.check!.ok, `${f.file}: ${f.check!.diff}`);
    assert.is(f.pending, 0, `${f.file}: packets still pending`);
  }
});

test('every delivered packet is the original IPv6 packet, byte for byte, in a frame from the switch to the right VM', () => {
  const byTag = new Map(frames.map((f) => [f.tag, f]));
  const delivered = o.off.delivered.filter((d) => d.tag >= 0);
  assert.is(delivered.length, frames.filter((f) => f.verdict.fate === 'delivered').length);
  assert.ok(delivered.length > 40);
  for (const d of delivered) {
    const orig = byTag.get(d.tag)!;
    const vm = o.config.vms.get(d.vm)!;
    assert.ok(d.data.subarray(ETH_HLEN).equals(orig.data.subarray(ETH_HLEN, ETH_HLEN + d.data.length - ETH_HLEN)), `${orig.file}#${orig.frame}: IPv6 packet changed`);
    assert.is(d.data.length, ETH_HLEN + 40 + orig.data.readUInt16BE(ETH_HLEN + 4), `${orig.file}#${orig.frame}: length`);
    assert.ok(d.data.subarray(0, 6).equals(vm.mac), `${orig.file}#${orig.frame}: destination MAC is ${d.vm}'s`);
    assert.ok(d.data.subarray(6, 12).equals(ROUTER_MAC), 'source MAC is the switch');
    assert.ok(orig.data.subarray(ETH_HLEN + 24, ETH_HLEN + 40).equals(vm.identity), `${orig.file}#${orig.frame} went to its destination`);
  }
});

test('no frame of a bad fixture reaches the underlay or any VM', () => {
  const bad = new Set(frames.filter((f) => f.file.split('/').pop()!.startsWith('bad-')).map((f) => f.tag));
  assert.ok(bad.size >= 25);
  for (const u of o.off.underlay) assert.not.ok(bad.has(u.tag), `bad frame ${u.tag} on the underlay`);
  for (const d of o.off.delivered) assert.not.ok(bad.has(d.tag), `bad frame ${d.tag} delivered`);
  for (const f of frames) if (bad.has(f.tag)) assert.is(f.verdict.fate, 'dropped', `${f.file}#${f.frame}`);
});

test('the counters of every pipeline add up to every packet in', () => {
  for (const [name, h] of o.off.hosts) {
    for (const p of [h.egress, h.ingress]) {
      const c = p.counters;
      assert.is(c.in + c.reinjected, c.delivered + c.underlay + c.consumed + c.replied + c.held + c.dropped(), `${name} ${p.name}`);
      assert.is(c.held, c.reinjected, `${name} ${p.name}: every held packet came back`);
    }
  }
  const h1 = o.off.hosts.get('h1')!.egress.counters;
  assert.is(h1.in, frames.length);
});

test('a miss never reorders a flow: on every SA the packets leave in the order they came', () => {
  const lastTag = new Map<number, number>();
  for (const u of o.off.underlay) {
    if (u.data[9] !== 50) continue;
    const spi = u.data.readUInt32BE(20);
    assert.ok(u.tag > (lastTag.get(spi) ?? -1), `SPI 0x${spi.toString(16)}: frame ${u.tag} after ${lastTag.get(spi)}`);
    lastTag.set(spi, u.tag);
  }
  assert.ok(lastTag.size >= 2);
});

function tshark(args: string[]): string[] {
  try {
    return execFileSync('tshark', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n').filter((l) => l.length > 0);
  } catch (e) {
    const err = e as { code?: string; stderr?: string };
    if (err.code === 'ENOENT') assert.unreachable('tshark is not installed (apt-get install tshark)');
    throw e;
  }
}

test('tshark dissects the underlay as IPv4 carrying ESP and the key exchange, nothing else', () => {
  const file = join(dir, 'underlay.pcap');
  const rows = tshark(['-r', file, '-T', 'fields', '-e', 'frame.protocols', '-e', 'ip.proto', '-e', 'udp.port']);
  assert.is(rows.length, o.off.underlay.length);
  let esp = 0;
  for (const r of rows) {
    const [protocols, proto, ports] = r.split('\t');
    assert.ok(protocols.startsWith('raw:ip:'), protocols);
    if (proto === '50') esp++;
    else assert.ok(proto === '17' && ports === '7011,7011', `unexpected underlay packet: ${r}`);
  }
  assert.is(esp, frames.filter((f) => f.verdict.path.length === 2).length);
});

test('tshark decrypts the ESP with the exported SAs to the original IPv6 packets', () => {
  const file = join(dir, 'underlay.pcap');
  const rows = tshark(['-r', file, ...tsharkDecryptArgs(o.sas), '-Y', 'esp', '-T', 'fields', '-e', 'esp.contained_data']);
  // The underlay's ESP packets in the order they were sent (a held packet leaves after later
  // packets of other pairs: pairs interleave, a pair's own order is kept).
  const esp = o.off.underlay.filter((u) => u.data[9] === 50);
  const byTag = new Map(frames.map((f) => [f.tag, f]));
  assert.is(rows.length, esp.length);
  assert.is(esp.length, frames.filter((f) => f.verdict.path.length === 2).length);
  rows.forEach((hex, k) => {
    const f = byTag.get(esp[k].tag)!;
    const ipv6 = f.data.subarray(ETH_HLEN, ETH_HLEN + 40 + f.data.readUInt16BE(ETH_HLEN + 4));
    assert.is(hex.replace(/:/g, ''), ipv6.toString('hex'), `${f.file}#${f.frame}`);
  });
});

test.run();
