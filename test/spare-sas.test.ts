// Spare SAs (issue 13, the first packet): keyed between two hosts ahead of any pair, taken by
// a new pair's miss, bound by the receiving host only once the first packet on it (the
// bind-ahead probe, or the pair's own) opened with the spare's key and its pair passed
// Algorithm 2 there.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop } from '../src/base/drops.js';
import { KX_INIT, decodeInit, encodeInit, ephemeralKey } from '../src/esp/handshake.js';
import { NodeEspCipher } from '../src/esp/esp-cipher.js';
import { Batch, UNDERLAY_OFFSET } from '../src/dataplane/batch.js';
import { IPV4_HLEN, makeOuterTemplate, writeOuter } from '../src/wire/ipv4.js';
import { PROTO_ESP } from '../src/wire/ipv6.js';
import { hostPrivateKey } from '../src/switch/cloud.js';
import { BindProbe } from '../src/switch/bind-probe.js';
import { vmCredentials } from '../src/switch/host-keys.js';
import { signBinding } from '../src/trust/binding.js';
import { SPARE_TTL_MS, MAX_SPARES_FROM_PEER } from '../src/switch/spares.js';
import { TestHub } from './test-hub.js';
import { explainSender } from '../src/switch/explain.js';
import { echoFrame, frames, openOffline, type Offline } from './offline-fixture.js';

const H1 = 0x0a4d0001;
const H2 = 0x0a4d0002;

/** INITs `from` sent through `hub` that name a pair (not a spare's). */
function pairInits(hub: TestHub, from: number): number {
  return hub.sent.filter((m) => m.from === from && m.type === KX_INIT && !decodeInit(m.msg).src.equals(Buffer.alloc(16))).length;
}

async function ping(o: Offline, from: string, to: string, seq = 1): Promise<void> {
  await o.off.sendFrames(from, frames([echoFrame(o.config, from, to, seq)]));
}

/** Two hosts with 2 spares each way, web1 -> web2 plugged (by INIT: the first contact) and the spares made. */
async function warmed(opts: { clock?: { now(): number }; cipher?: NodeEspCipher } = {}): Promise<{ o: Offline; hub: TestHub }> {
  const hub = new TestHub();
  const o = await openOffline({ hub, spares: 2, prefetchReplies: false, clock: opts.clock, cipher: opts.cipher });
  await ping(o, 'web1', 'web2');
  const h1 = o.off.hosts.get('h1')!;
  assert.is(h1.kx.counters.sparesUsed, 0, 'the first contact has no spare');
  assert.is(h1.kx.spares.ready, 2, 'h1 asked h2 for its spares meanwhile');
  assert.is(o.off.hosts.get('h2')!.spares.size, 2);
  return { o, hub };
}

test("a new pair's first packet leaves on a spare: no INIT for it, and the peer binds the spare once the pair passed its checks", async () => {
  const { o, hub } = await warmed();
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  const inits = pairInits(hub, H1);
  const delivered = h2.ingress.counters.delivered;
  await ping(o, 'web3', 'web2');
  assert.is(h2.ingress.counters.delivered, delivered + 1, 'delivered to web2');
  assert.is(pairInits(hub, H1), inits, 'no INIT for web3 -> web2');
  assert.is(h1.kx.counters.sparesUsed, 1);
  assert.is(h2.spareBinder.counts.bound, 1);
  assert.is(h1.probes.sent, 0, "web2's binding, verified before, is checked in microseconds: no probe");
  const cable = [...h1.egressCables.all()].find((c) => c.srcText === o.config.vms.get('web3')!.identityText)!;
  const inbound = [...h2.ingressCables.all()].find((c) => c.srcText === o.config.vms.get('web3')!.identityText)!;
  assert.ok(cable.sa && inbound && h2.sas.inboundOf(inbound)?.spi === cable.sa.spi, "h2's cable for the pair holds the spare's SPI as its inbound SA");
  assert.ok(!h2.spares.has(cable.sa.spi), 'no longer a spare at h2');
  assert.is(h1.kx.spares.ready, 2, 'the pool was filled again');
  // The pair's next packets use the bound SA like any.
  await ping(o, 'web3', 'web2', 2);
  assert.is(h2.ingress.counters.delivered, delivered + 2);
  assert.is(h2.spareBinder.counts.held, 1, 'only the first packet waited');
  o.off.close();
});

test('refused by the peer (its VM is gone): the spare goes, the packet counts as on an unknown SPI, and the pair asks by INIT, whose answer says why', async () => {
  const { o, hub } = await warmed();
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  const db1 = o.config.vms.get('db1')!;
  h2.detachPort(db1.identityText); // h1 still finds db1 at h2 in the store
  const unknown = h2.ingress.counters.drops[Drop.EspUnknownSpi];
  const before = h2.spares.all().map((s) => s.spi);
  await ping(o, 'web1', 'db1');
  assert.is(h1.kx.counters.sparesUsed, 1);
  assert.is(h2.spareBinder.counts.refused, 1);
  assert.is(h2.kx.counters.refusals[Drop.InnerUnknownDestination], 1, 'Algorithm 2 at h2 refused it');
  assert.is(h2.ingress.counters.drops[Drop.EspUnknownSpi], unknown + 1, 'the packet on the forgotten spare');
  assert.is(h1.kx.counters.sparesRejected, 1, 'h1 heard the SPI is unknown');
  assert.is(before.filter((spi) => h2.spares.has(spi)).length, 1, 'the refused spare is gone');
  assert.is(h1.kx.spares.ready, 2, 'h1 dropped its other spare (it cannot tell a refusal from a restart of h2) and asked for two more');
  assert.ok(h2.spares.size >= 3 && h2.spares.size <= 4, `h2 keeps those h1 dropped (1 or 2, as the refill raced the NOTIFY) until they expire: ${h2.spares.size}`);
  const inits = pairInits(hub, H1);
  await ping(o, 'web1', 'db1', 2);
  assert.is(pairInits(hub, H1), inits + 1, 'the next packet asked by INIT, not on a spare');
  assert.is(h1.kx.counters.sparesUsed, 1);
  assert.is(h2.kx.counters.refusals[Drop.InnerUnknownDestination], 2);
  const cable = [...h1.egressCables.all()].find((c) => c.dstText === db1.identityText)!;
  assert.ok(!cable.plugged && cable.rule.includes('h2 refused'), `unplugged at h1, with h2's reason: ${cable.rule}`);
  o.off.close();
});

test('a probe whose pair the peer refuses: the spare goes there, the pair\'s packet that follows counts as on an unknown SPI, and the pair asks by INIT', async () => {
  const { o, hub } = await warmed();
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  const db1 = o.config.vms.get('db1')!;
  h2.detachPort(db1.identityText); // h1 still finds db1 at h2 in the store
  o.off.verifiers.get('h1')!.forgetVerified();
  const unknown = h2.ingress.counters.drops[Drop.EspUnknownSpi];
  await ping(o, 'web1', 'db1');
  assert.is(h1.probes.sent, 1);
  assert.is(h2.spareBinder.counts.probes, 1);
  assert.is(h2.spareBinder.counts.refused, 1, 'h2 refused the pair the probe named');
  assert.is(h2.ingress.counters.drops[Drop.EspUnknownSpi], unknown + 1, "web1's packet, on the spare h2 forgot");
  assert.is(h1.kx.counters.sparesRejected, 1, 'h1 heard the SPI is unknown');
  const inits = pairInits(hub, H1);
  await ping(o, 'web1', 'db1', 2);
  assert.is(pairInits(hub, H1), inits + 1, 'the next packet asked by INIT');
  const cable = [...h1.egressCables.all()].find((c) => c.dstText === db1.identityText)!;
  assert.ok(!cable.plugged && cable.rule.includes('h2 refused'), `unplugged at h1, with h2's reason: ${cable.rule}`);
  o.off.close();
});

test("a packet on a spare's SPI that does not open with its key is dropped and the spare waits for the real one; one from another host is refused", async () => {
  const { o } = await warmed();
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  const spi = h2.spares.all()[0].spi;
  const forged = (from: number): void => {
    const b = new Batch();
    const at = Batch.slot(0) + UNDERLAY_OFFSET;
    const len = IPV4_HLEN + 16 + 48 + 16;
    writeOuter(b.data, at, makeOuterTemplate(from, H2, PROTO_ESP), len, 0);
    b.data.writeUInt32BE(spi, at + IPV4_HLEN);
    b.data.writeUInt32BE(1, at + IPV4_HLEN + 4);
    for (let k = IPV4_HLEN + 8; k < len; k++) b.data[at + k] = (k * 13) & 0xff;
    b.init(0, at, len, -1, 0);
    b.count = 1;
    h2.runIngress(b);
  };
  const auth = h2.ingress.counters.drops[Drop.EspAuthFailed];
  const peer = h2.ingress.counters.drops[Drop.EspWrongPeer];
  forged(H1);
  forged(0x0a4d0009);
  assert.is(h2.ingress.counters.drops[Drop.EspAuthFailed], auth + 1, 'the forgery does not open');
  assert.is(h2.ingress.counters.drops[Drop.EspWrongPeer], peer + 1, 'a spare is bound to the host that made it');
  assert.ok(h2.spares.has(spi), 'the spare stays');
  assert.is(h2.spareBinder.inFlight, 0, 'no check started');
  const delivered = h2.ingress.counters.delivered;
  // Both of h1's spares in turn: the real first packets bind them.
  await ping(o, 'web3', 'web2');
  await ping(o, 'web1', 'db1');
  assert.is(h2.ingress.counters.delivered, delivered + 2);
  assert.is(h2.spareBinder.counts.bound, 2);
  assert.is(h1.kx.counters.sparesUsed, 2);
  o.off.close();
});

test("the bind-ahead probe, where the sender verifies the destination's binding afresh: sent before the pair's packet, consumed by the peer, which binds the spare on it; a dummy on a bound SA is consumed once, a replay of it refused", async () => {
  const cipher = new NodeEspCipher(); // both hosts' keys
  const { o } = await warmed({ cipher });
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  const consumed = h2.ingress.counters.consumed;
  assert.ok(o.off.verifiers.get('h1')!.forgetVerified() > 0, 'h1 forgot the bindings it verified');
  await ping(o, 'web3', 'web2');
  assert.is(h1.probes.sent, 1);
  assert.is(h2.spareBinder.counts.probes, 1, 'the first packet on the spare was the probe');
  assert.is(h2.spareBinder.counts.bound, 1);
  assert.is(h2.ingress.counters.consumed, consumed + 1, 'consumed, not delivered');
  assert.is(h2.ingress.counters.delivered, 2, "web1's first ping and web3's: the probe reached no VM");
  // A dummy on the bound SA, as h1 would send it: consumed, its number in the replay window.
  const web3 = o.config.vms.get('web3')!;
  const cable = [...h1.egressCables.all()].find((c) => c.srcText === web3.identityText)!;
  let captured: Buffer | undefined;
  const probe = new BindProbe(cipher, () => ({ send: (b, idx) => ((captured = Buffer.from(b.view(idx[0]))), 1) }));
  assert.ok(probe.send(cable.sa!, makeOuterTemplate(H1, H2, PROTO_ESP), H2, cable.src, cable.dst));
  const again = (): void => {
    const b = new Batch();
    b.push(captured!, UNDERLAY_OFFSET, -1, 0);
    h2.runIngress(b);
  };
  const replays = h2.ingress.counters.drops[Drop.EspReplay];
  again();
  assert.is(h2.ingress.counters.consumed, consumed + 2, 'a dummy on a bound SA is consumed');
  again();
  assert.is(h2.ingress.counters.drops[Drop.EspReplay], replays + 1, 'the same dummy again is a replay');
  assert.is(h2.ingress.counters.delivered, 2);
  o.off.close();
});

test("a probe for a pair its sender then refuses (the destination's new binding is signed by another key): the peer bound the spare on its own checks, and nothing but the probe left", async () => {
  const { o } = await warmed();
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  const store = o.off.cloud.store;
  const web2 = o.config.vms.get('web2')!;
  const prev = (await store.lookup(web2.identityText))!;
  const { certificate } = vmCredentials(o.config, 'web2');
  const now = Date.now();
  await store.publish(signBinding({
    identity: web2.identityText, tenant: web2.tenant, vm: 'web2', host: prev.host, hostAddress: prev.hostAddress, epoch: prev.epoch + 1,
    notBefore: new Date(now - 60_000).toISOString(), notAfter: new Date(now + 86_400_000).toISOString(), certificate,
  }, vmCredentials(o.config, 'web3').privateKey)); // not web2's key
  const delivered = h2.ingress.counters.delivered;
  await ping(o, 'web3', 'web2');
  assert.is(h1.probes.sent, 1, 'the new binding was not verified yet: a probe');
  assert.is(h2.spareBinder.counts.probes, 1);
  assert.is(h2.spareBinder.counts.bound, 1, "h2's own checks (web3's binding, web2 here) passed");
  const cable = [...h1.egressCables.all()].find((c) => c.srcText === o.config.vms.get('web3')!.identityText)!;
  assert.ok(!cable.plugged && cable.sa === null, `h1 refused the pair itself: ${cable.rule}`);
  assert.is(h1.egress.counters.underlay, 1, "only web1's first ping left h1 as ESP: the pair's packet did not");
  assert.is(h2.ingress.counters.delivered, delivered, 'nothing reached web2');
  o.off.close();
});

test("a spare taken for a reply's cable (no probe: its binding was just verified) that goes before the reply (flushed) returns to its pool: its peer never bound it", async () => {
  const hub = new TestHub();
  const o = await openOffline({ hub, spares: 2 }); // replies' cables plugged ahead
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  await ping(o, 'web1', 'web2'); // first contact both ways: by INIT, spares asked for
  assert.is(h2.kx.spares.ready, 2);
  await ping(o, 'web3', 'web2');
  assert.is(h2.kx.counters.sparesUsed, 1, "h2 plugged web2 -> web3 (the reply's cable) on a spare");
  assert.is(h2.probes.sent, 0, 'with no probe: h2 verified web3 for the pair it accepted');
  assert.is(h2.kx.spares.ready, 2, 'and asked for one more');
  const keptAtH1 = h1.spares.size;
  h2.flushCables();
  assert.is(h2.kx.spares.ready, 3, 'the unused spare went back');
  assert.is(h1.spares.size, keptAtH1, 'h1 still keeps it unbound');
  await ping(o, 'web2', 'web3', 5);
  assert.is(h1.spareBinder.counts.bound, 1, 'a later pair binds it');
  assert.is(h1.ingress.counters.delivered, 1);
  o.off.close();
});

test("both hosts hand over to new processes: the spares come along, and a new pair's first packet after it leaves on one and is bound", async () => {
  const { o, hub } = await warmed();
  const spis = o.off.hosts.get('h2')!.spares.all().map((s) => s.spi).sort();
  await o.off.handOver('h1');
  await o.off.handOver('h2');
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  assert.is(h1.kx.spares.ready, 2, "h1's new process can send on both");
  assert.equal(h2.spares.all().map((s) => s.spi).sort(), spis, "h2's new process keeps the same ones");
  const inits = pairInits(hub, H1);
  const delivered = h2.ingress.counters.delivered;
  await ping(o, 'web3', 'web2');
  assert.is(h2.ingress.counters.delivered, delivered + 1);
  assert.is(pairInits(hub, H1), inits, 'no INIT');
  assert.is(h2.spareBinder.counts.bound, 1);
  o.off.close();
});

test('a peer that lost its spares (restarted without handing them over): the first packet on one is lost, and the initiator drops every spare of that peer', async () => {
  const { o, hub } = await warmed();
  const h2 = o.off.hosts.get('h2')!;
  for (const s of h2.spares.all()) h2.spares.remove(s, true); // as a new process that took nothing over
  const h1 = o.off.hosts.get('h1')!;
  await ping(o, 'web3', 'web2');
  assert.is(h1.kx.counters.sparesRejected, 1, 'h2 said the SPI is unknown');
  assert.is(h1.kx.spares.ready, 2, 'the other stale spare went too; two new ones came');
  const inits = pairInits(hub, H1);
  const delivered = h2.ingress.counters.delivered;
  await ping(o, 'web3', 'web2', 2);
  assert.is(pairInits(hub, H1), inits + 1, 'the pair asked by INIT');
  await ping(o, 'web1', 'db1');
  assert.is(h2.ingress.counters.delivered, delivered + 2, 'both delivered');
  assert.is(h2.spareBinder.counts.bound, 1, 'the other pair on a fresh spare');
  o.off.close();
});

test("explain on a host with a spare ready says the pair's first packet would leave on it", async () => {
  const { o } = await warmed();
  const h1 = o.off.hosts.get('h1')!;
  const [web3, db1] = [o.config.vms.get('web3')!, o.config.vms.get('db1')!];
  const e = await explainSender(h1, web3.identityText, db1.identityText);
  assert.ok(e.steps.some((st) => st.stage === 'sa' && st.text.startsWith('would send on a spare ESP SA with h2')), e.steps.map((st) => st.text).join('\n'));
  assert.is(h1.kx.spares.ready, 2, 'explain took nothing');
  o.off.close();
});

test('spares expire: the initiator discards its own after their time, the responder after twice that, and their keys go', async () => {
  let now = Date.now();
  const clock = { now: () => now };
  const cipher = new NodeEspCipher(); // both hosts' keys
  const { o } = await warmed({ clock, cipher });
  const [h1, h2] = [o.off.hosts.get('h1')!, o.off.hosts.get('h2')!];
  const keys = cipher.keyCount;
  const spareKeys = h2.spares.all().map((s) => s.key);
  now += SPARE_TTL_MS + 1;
  h1.sweep();
  h2.sweep();
  assert.is(h1.kx.spares.ready, 0, "h1's spares are past their time");
  assert.is(cipher.keyCount, keys - 2, 'their keys went, nothing else');
  assert.is(h2.spares.size, 2, 'h2 keeps them longer, so that it never forgets one h1 may still take');
  now += SPARE_TTL_MS;
  h2.sweep();
  assert.is(h2.spares.size, 0);
  assert.ok(spareKeys.every((k) => cipher.exportKey(k) === undefined), "h2's spare keys went");
  o.off.close();
});

test(`a host keeps at most ${MAX_SPARES_FROM_PEER} unbound spares from one peer; more spare INITs are refused`, async () => {
  const { o, hub } = await warmed();
  const h2 = o.off.hosts.get('h2')!;
  const key = hostPrivateKey(o.config, 'h1');
  const init = (k: number): Buffer => encodeInit({
    alg: o.config.switch.esp.cipher, requestId: Buffer.from([0xee, 0, 0, 0, 0, 0, 0, k]), timeMs: Date.now(),
    src: Buffer.alloc(16), dst: Buffer.alloc(16), ephemeral: ephemeralKey().publicRaw, host: 'h1',
  }, key);
  const more = MAX_SPARES_FROM_PEER - h2.spares.size + 3;
  for (let k = 0; k < more; k++) hub.inject(H1, H2, init(k));
  await o.off.settle();
  assert.is(h2.spares.size, MAX_SPARES_FROM_PEER);
  assert.is(h2.kx.counters.refusals[Drop.SaNegotiationFailed], 3, 'the last 3 refused');
  o.off.close();
});

test('spares off (switch.esp.spares: 0): every new pair asks by INIT, and the responder keeps no spares', async () => {
  const hub = new TestHub();
  const o = await openOffline({ hub, prefetchReplies: false, cipher: new NodeEspCipher(), spares: 0 });
  assert.is(o.config.switch.esp.spares, 2, 'on in the shipped config (this test turns them off)');
  await ping(o, 'web1', 'web2');
  await ping(o, 'web3', 'web2');
  assert.is(pairInits(hub, H1), 2);
  assert.is(o.off.hosts.get('h1')!.kx.counters.sparesAsked, 0);
  assert.is(o.off.hosts.get('h2')!.spares.size, 0);
  o.off.close();
});

test.run();
