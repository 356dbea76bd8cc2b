// Single stages, each built alone and run on a hand-made batch: every row of a table is one
// packet and the fate, reason and parse results the stage must give it. Then the pipeline's
// shape check: a stage that settles a packet in a way it did not declare is caught.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop, dropName } from '../src/base/drops.js';
import { Batch, BATCH_MAX, FRAME_OFFSET, Next, NEXT_NAMES, PacketFlag, UNDERLAY_OFFSET } from '../src/dataplane/batch.js';
import { Cable, CableDirection, type CableSa } from '../src/dataplane/cable.js';
import { CableCache } from '../src/dataplane/cable-cache.js';
import { FlowMode, type DirectionDecision } from '../src/dataplane/decision.js';
import { FrameParse } from '../src/dataplane/egress/frame-parse.js';
import { IpGuard } from '../src/dataplane/egress/ip-guard.js';
import { EspDecap } from '../src/dataplane/ingress/esp-decap.js';
import { PairCheck } from '../src/dataplane/ingress/pair-check.js';
import { Pipeline } from '../src/dataplane/pipeline.js';
import { drop, settle, type Stage } from '../src/dataplane/stage.js';
import { Upcall, type MissResolver } from '../src/dataplane/upcall.js';
import { PortTable } from '../src/dataplane/port-table.js';
import { MacGuard } from '../src/dataplane/egress/mac-guard.js';
import { EspJobs, NodeEspCipher } from '../src/esp/esp-cipher.js';
import { InboundSa } from '../src/esp/sa.js';
import { ESP_HLEN, ESP_ICV_LEN, writeEspTrailer } from '../src/wire/esp.js';
import { ETH_HLEN, writeEthIpv6 } from '../src/wire/ethernet.js';
import { PROTO_ICMPV6, PROTO_TCP } from '../src/wire/ipv6.js';
import { SpiTable } from '../src/esp/spi-table.js';

const MAC = Buffer.from('02aabbccdd01', 'hex');
const ME = Buffer.from('fd000000000000010000000000000001', 'hex');
const PEER = Buffer.from('fd000000000000010000000000000002', 'hex');
const OTHER = Buffer.from('fd000000000000010000000000000003', 'hex');
const PORTS = new PortTable();
PORTS.add({ name: 'vm1', tenant: 't', mac: MAC, identity: ME, identityText: 'fd00:0:0:1::1', mtu: 1446 });
const PEER_HOST = 0x0a000002;

/** An IPv6 packet src -> dst: `next` header, then `body` (the upper layer or extension headers). */
function ipv6(src: Buffer, dst: Buffer, next: number, body: Buffer): Buffer {
  const p = Buffer.alloc(40 + body.length);
  p[0] = 0x60;
  p.writeUInt16BE(body.length, 4);
  p[6] = next;
  p[7] = 64;
  src.copy(p, 8);
  dst.copy(p, 24);
  body.copy(p, 40);
  return p;
}

function frame(ip: Buffer, etherType = 0x86dd): Buffer {
  const f = Buffer.alloc(ETH_HLEN + ip.length);
  writeEthIpv6(f, 0, MAC, MAC);
  f.writeUInt16BE(etherType, 12);
  ip.copy(f, ETH_HLEN);
  return f;
}

const echo = Buffer.from('8000000000010001', 'hex');
const tcpSyn = Buffer.concat([Buffer.from('c35004d200000000000000005002ffff00000000', 'hex')]);

/** The fate of each packet after `stage` ran once on a batch of `packets` (at `offset` in their slots). */
function run(stage: Stage, packets: Buffer[], offset = FRAME_OFFSET, prepare?: (b: Batch, i: number) => void): Batch {
  const b = new Batch();
  packets.forEach((p, i) => {
    b.push(p, offset, 0, 0);
    prepare?.(b, i);
  });
  b.stage = 1;
  stage.process(b, 1_000_000);
  return b;
}

function fate(b: Batch, i: number): string {
  return b.next[i] === Next.Drop ? dropName(b.reason[i] as Drop) : NEXT_NAMES[b.next[i]];
}

test('frame-parse: one verdict per malformed frame, parse results for good ones', () => {
  const hopByHopLate = ipv6(ME, PEER, 60, Buffer.concat([Buffer.from('0000010400000000', 'hex'), Buffer.from('3a00010400000000', 'hex'), echo])); // dst opts, then hop-by-hop
  hopByHopLate[40] = 0; // destination options' next header: hop-by-hop
  const badVersion = ipv6(ME, PEER, PROTO_ICMPV6, echo);
  badVersion[0] = 0x40;
  const padded = Buffer.concat([frame(ipv6(ME, PEER, PROTO_ICMPV6, echo)), Buffer.alloc(6)]);
  const rows: [string, Buffer, string][] = [
    ['an echo request', frame(ipv6(ME, PEER, PROTO_ICMPV6, echo)), 'active'],
    ['a frame shorter than Ethernet', Buffer.alloc(10), 'eth/truncated'],
    ['ARP', frame(Buffer.alloc(28), 0x0806), 'eth/not-ipv6'],
    ['IPv4 in an IPv6 EtherType', frame(badVersion), 'ipv6/bad-version'],
    ['an IPv6 header cut short', frame(ipv6(ME, PEER, PROTO_ICMPV6, echo)).subarray(0, ETH_HLEN + 30), 'ipv6/truncated'],
    ['a payload length beyond the frame', frame(ipv6(ME, PEER, PROTO_ICMPV6, echo)).subarray(0, ETH_HLEN + 44), 'ipv6/truncated'],
    ['hop-by-hop options after another extension header', frame(hopByHopLate), 'ipv6/ext-order'],
    ['Ethernet padding after the packet', padded, 'active'],
  ];
  const b = run(new FrameParse(), rows.map((r) => r[1]));
  rows.forEach(([what, , want], i) => assert.is(fate(b, i), want, what));
  assert.is(b.l3[0], Batch.slot(0) + FRAME_OFFSET + ETH_HLEN);
  assert.is(b.l4[0], b.l3[0] + 40);
  assert.is(b.proto[0], PROTO_ICMPV6);
  assert.is(b.len[7], ETH_HLEN + 40 + echo.length, 'padding trimmed');
});

test('mac-guard: the source MAC must be the port\'s; a packet whose port was detached meanwhile is port/gone', () => {
  const other = Buffer.from('02aabbccdd99', 'hex');
  const wrongMac = frame(ipv6(ME, PEER, PROTO_ICMPV6, echo));
  other.copy(wrongMac, 6);
  const ports = new PortTable();
  const p = ports.add({ name: 'vm1', tenant: 't', mac: MAC, identity: ME, identityText: 'x', mtu: 1446 });
  const gone = ports.add({ name: 'vm2', tenant: 't', mac: MAC, identity: PEER, identityText: 'y', mtu: 1446 });
  ports.remove(gone.index);
  const b = run(new MacGuard(ports), [frame(ipv6(ME, PEER, PROTO_ICMPV6, echo)), wrongMac, frame(ipv6(PEER, ME, PROTO_ICMPV6, echo))], FRAME_OFFSET, (b, i) => {
    b.port[i] = i < 2 ? p.index : gone.index;
  });
  assert.equal([0, 1, 2].map((i) => fate(b, i)), ['active', 'spoof/mac', 'port/gone']);
});

test('ip-guard: the source must be the port identity, the destination another identity', () => {
  const linkLocal = Buffer.from('fe800000000000000000000000000001', 'hex');
  const multicast = Buffer.from('ff020000000000000000000000000001', 'hex');
  const rows: [string, Buffer, Buffer, string][] = [
    ['own identity to a peer', ME, PEER, 'active'],
    ["another VM's identity as source", OTHER, PEER, 'spoof/source'],
    ['a link-local source', linkLocal, PEER, 'spoof/source'],
    ['to a link-local address', ME, linkLocal, 'dst/not-unicast'],
    ['to a multicast group', ME, multicast, 'dst/not-unicast'],
    ['to the unspecified address', ME, Buffer.alloc(16), 'dst/not-unicast'],
    ['to itself', ME, ME, 'dst/own-identity'],
  ];
  const b = run(new IpGuard(PORTS), rows.map((r) => frame(ipv6(r[1], r[2], PROTO_ICMPV6, echo))), FRAME_OFFSET, (b, i) => {
    b.l3[i] = b.start[i] + ETH_HLEN;
  });
  rows.forEach(([what, , , want], i) => assert.is(fate(b, i), want, what));
});

/** An inbound SA for PEER -> ME from PEER_HOST and the ESP packets of it: header, inner packet, trailer, ICV. */
function espSetup() {
  const cipher = new NodeEspCipher();
  const key = cipher.addKey('aes-128-gcm', Buffer.alloc(16, 7), Buffer.from('01020304', 'hex'));
  const cable = new Cable(CableDirection.Ingress, PEER, ME, Drop.None, 'test', null, 0);
  const sa: CableSa = new InboundSa(0x1234, key, PEER_HOST, cable);
  const spis = new SpiTable<typeof sa>();
  spis.set(sa.spi, sa);
  const seal = (seq: number, inner: Buffer, spi = sa.spi): Buffer => {
    const pkt = Buffer.alloc(ESP_HLEN + inner.length + 4 + 3 + ESP_ICV_LEN);
    pkt.writeUInt32BE(spi, 0);
    pkt.writeUInt32BE(seq, 4);
    pkt.writeUInt32BE(0, 8);
    pkt.writeUInt32BE(seq, 12);
    inner.copy(pkt, ESP_HLEN);
    const ptEnd = writeEspTrailer(pkt, ESP_HLEN + inner.length, inner.length);
    const jobs = new EspJobs(1);
    jobs.add(key, 0, ptEnd - ESP_HLEN, 0, 0);
    cipher.seal(pkt, jobs);
    return pkt.subarray(0, ptEnd + ESP_ICV_LEN);
  };
  return { cipher, sa, spis, seal };
}

function espBatch(stage: Stage, packets: Buffer[], from: number[] = []): Batch {
  return run(stage, packets, UNDERLAY_OFFSET, (b, i) => {
    b.l3[i] = b.start[i];
    b.flags[i] |= PacketFlag.Esp;
    b.peer[i] = from[i] ?? PEER_HOST;
  });
}

test('esp-decap: SA, peer, replay window, ICV, trailer and inner pair, each refusal under its own reason', () => {
  const { cipher, sa, spis, seal } = espSetup();
  const good = ipv6(PEER, ME, PROTO_ICMPV6, echo);
  sa.accept(0, 5000); // seen: up to 5000
  const flipped = Buffer.from(seal(5001, good));
  flipped[ESP_HLEN + 3] ^= 1;
  const rows: [string, Buffer, number | undefined, string][] = [
    ['a fresh authentic packet', seal(5001, good), undefined, 'active'],
    ['shorter than header, IV and ICV', seal(5002, good).subarray(0, 30), undefined, 'esp/truncated'],
    ['an SPI nobody installed', seal(5003, good, 0x9999), undefined, 'esp/unknown-spi'],
    ['from another host than the SA peer', seal(5004, good), 0x0a000063, 'esp/wrong-peer'],
    ['a number already received', seal(5000, good), undefined, 'esp/replay'],
    ['a number left of the window', seal(5000 - 2100, good), undefined, 'esp/left-of-window'],
    ['one flipped ciphertext bit', flipped, undefined, 'esp/auth-failed'],
    ['authentic, but for another pair', seal(5005, ipv6(OTHER, ME, PROTO_ICMPV6, echo)), undefined, 'inner/pair-mismatch'],
    ['the same number twice in one batch', seal(5001, good), undefined, 'esp/replay'],
  ];
  const b = espBatch(new EspDecap(spis, cipher), rows.map((r) => r[1]), rows.map((r) => r[2] ?? PEER_HOST));
  rows.forEach(([what, , , want], i) => assert.is(fate(b, i), want, what));
  assert.is(b.ref[0], sa.cable, 'the packet goes on with its cable');
  assert.is(b.len[0], good.length, 'the packet is now the inner IPv6 packet');
  assert.ok(b.data.subarray(b.start[0], b.start[0] + b.len[0]).equals(good));
  assert.is(sa.check(0, 5001), 1, 'only the accepted packet moved the window'); // ReplayCheck.Replay
  assert.is(sa.check(0, 5005), 0, 'the refused ones did not'); // ReplayCheck.Ok
});

/** A plugged (or unplugged) ingress cable PEER -> ME from PEER_HOST. */
function ingressCable(dropReason = Drop.None, encrypt = false): Cable {
  const d: DirectionDecision = { drop: dropReason, rule: 'test', revision: 1, validUntil: Infinity, encrypt, filter: null, flow: FlowMode.None };
  const c = new Cable(CableDirection.Ingress, PEER, ME, dropReason, 'test', d, 0);
  c.localPort = 0;
  c.peerAddr = PEER_HOST;
  c.lasts(0, Infinity, Infinity); // the pair-check runs at 0
  return c;
}

test('pair-check: an ESP packet needs its cable plugged; a plain one a cable from the right host that allows plain, or from this host itself', () => {
  const pending: string[] = [];
  const resolver: MissResolver = {
    plugEgress: () => new Promise(() => {}),
    plugIngress: (src) => {
      pending.push(src.toString('hex'));
      return new Promise(() => {}); // stays pending: the packet is held
    },
  };
  const run1 = (cache: CableCache, packet: Buffer, opts: { esp?: Cable; from?: number; local?: number }): string => {
    const upcall = new Upcall(resolver, { egress: new CableCache(10), ingress: cache }, { perCable: 4, total: 16, maxPending: 4 }, () => {});
    const stage = new PairCheck(cache, upcall, PORTS, opts.local ?? 0x0a000001);
    const b = run(stage, [packet], UNDERLAY_OFFSET, (b, i) => {
      b.l3[i] = b.start[i];
      b.peer[i] = opts.from ?? PEER_HOST;
      if (opts.esp) {
        b.flags[i] |= PacketFlag.Esp;
        b.ref[i] = opts.esp;
      }
    });
    return fate(b, 0);
  };
  const pkt = ipv6(PEER, ME, PROTO_TCP, tcpSyn);
  const withCable = (c: Cable): CableCache => {
    const cache = new CableCache(10);
    cache.insert(c);
    return cache;
  };
  const rows: [string, () => string, string][] = [
    ['ESP on a plugged cable', () => run1(new CableCache(10), pkt, { esp: ingressCable() }), 'active'],
    ['ESP on a cable unplugged since', () => run1(new CableCache(10), pkt, { esp: ingressCable(Drop.PolicyUnplugRule) }), 'policy/unplug-rule'],
    ['plain on a plugged plain cable', () => run1(withCable(ingressCable()), pkt, {}), 'active'],
    ['plain from another host', () => run1(withCable(ingressCable()), pkt, { from: 0x0a000063 }), 'ip6in4/wrong-peer'],
    ['plain on a cable that wants ESP', () => run1(withCable(ingressCable(Drop.None, true)), pkt, {}), 'ip6in4/encryption-required'],
    ['plain on a cable that wants ESP, from this host itself (a VM of another worker)', () => run1(withCable(ingressCable(Drop.None, true)), pkt, { local: PEER_HOST }), 'active'],
    ['plain on an unplugged cable', () => run1(withCable(ingressCable(Drop.PolicyCrossTenant)), pkt, {}), 'policy/cross-tenant'],
    ['plain to no VM of this host', () => run1(new CableCache(10), ipv6(PEER, OTHER, PROTO_TCP, tcpSyn), {}), 'inner/unknown-destination'],
    ['plain with no cable yet: held for the upcall', () => run1(new CableCache(10), pkt, {}), 'held'],
  ];
  for (const [what, go, want] of rows) assert.is(go(), want, what);
  assert.equal(pending, [PEER.toString('hex')], 'exactly the miss asked the resolver');
});

/** A stage that drops every packet for `reason` (declaring `declared`), or sends them to `out`. */
function rogue(declared: Drop[], reason: Drop | null, out: Next = Next.VmPort, outputs: Next[] = []): Stage {
  return {
    name: 'rogue',
    drops: declared,
    outputs,
    process(b: Batch): void {
      for (let i = 0; i < b.count; i++) {
        if (b.next[i] !== Next.Active) continue;
        if (reason !== null) drop(b, i, reason);
        else settle(b, i, out);
      }
    },
  };
}

function runPipeline(stage: Stage, check: boolean): Pipeline {
  const p = new Pipeline('test', [stage], check);
  const b = new Batch();
  b.push(frame(ipv6(ME, PEER, PROTO_ICMPV6, echo)), FRAME_OFFSET, 0, 0);
  p.process(b, 0);
  return p;
}

test('the shape check fails a stage that drops for a reason it did not declare', () => {
  assert.throws(() => runPipeline(rogue([Drop.SpoofMac], Drop.SpoofSource), true), /stage rogue settled packet 0 \(drop spoof\/source\), which it does not declare/);
  assert.not.throws(() => runPipeline(rogue([Drop.SpoofSource], Drop.SpoofSource), true));
  assert.not.throws(() => runPipeline(rogue([Drop.SpoofMac], Drop.SpoofSource), false), 'off: no check');
});

test('the shape check fails a stage that sends a packet to an output it did not declare', () => {
  assert.throws(() => runPipeline(rogue([], null, Next.Underlay, [Next.VmPort]), true), /output underlay\), which it does not declare/);
  assert.not.throws(() => runPipeline(rogue([], null, Next.Underlay, [Next.Underlay]), true));
});

test('the shape check fails a stage that settles a packet without recording itself', () => {
  const sneaky: Stage = { name: 'sneaky', drops: [], outputs: [Next.Consumed], process: (b) => { b.next[0] = Next.Consumed; } };
  assert.throws(() => runPipeline(sneaky, true), /settled packet 0 \(output consumed\) without drop\(\) or settle\(\)/);
});

test('counters by stage: each packet counted once, under the stage that settled it, adding up to every packet in', () => {
  const p = new Pipeline('test', [new FrameParse(), new IpGuard(PORTS), rogue([], null, Next.VmPort, [Next.VmPort])], true);
  const b = new Batch();
  for (const f of [frame(ipv6(ME, PEER, PROTO_ICMPV6, echo)), Buffer.alloc(8), frame(ipv6(OTHER, PEER, PROTO_ICMPV6, echo)), frame(ipv6(ME, PEER, PROTO_ICMPV6, echo))]) {
    b.push(f, FRAME_OFFSET, 0, 0);
  }
  p.process(b, 0);
  const s = p.counters.byStage();
  assert.equal(s, {
    'frame-parse': { drops: { 'eth/truncated': 1 } },
    'ip-guard': { drops: { 'spoof/source': 1 } },
    rogue: { delivered: 2 },
  });
  assert.is(p.counters.in, 4);
  assert.is(p.counters.delivered + p.counters.dropped(), 4);
  assert.ok(BATCH_MAX >= 4);
});

test.run();
