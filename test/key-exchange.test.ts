// The host-to-host key exchange on an imperfect network (issue 4): lost and forged
// messages, silence, floods, stale requests; packets waiting (encrypted or not at all)
// until their SA exists; a make-before-break rekey that loses nothing. Spare SAs are off
// here: every pair asks by INIT (test/spare-sas.test.ts covers spares).

import { randomBytes } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KX_ANSWER, KX_INIT, NotifyReason, decodeAnswer, encodeAnswer, encodeInit, encodeNotify, ephemeralKey } from '../src/esp/handshake.js';
import { Drop } from '../src/base/drops.js';
import { NodeEspCipher } from '../src/esp/esp-cipher.js';
import { hostPrivateKey } from '../src/switch/cloud.js';
import { DEFAULT_KX } from '../src/switch/key-exchange.js';
import { TestHub } from './test-hub.js';
import { echoFrame, frames, openOffline, type Offline } from './offline-fixture.js';

const H1 = 0x0a4d0001;
const H2 = 0x0a4d0002;
const FAST = { retryMs: 20, tries: 4 };

/** Poll until `cond` holds (each turn of the event loop, up to `ms`); fail with `what` otherwise. */
async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function ping(o: Offline, n = 1, from = 'web1', to = 'web2', first = 1): Promise<void> {
  await o.off.sendFrames(from, frames(Array.from({ length: n }, (_, k) => echoFrame(o.config, from, to, first + k))));
}

function countOf(hub: TestHub, type: number, from: number): number {
  return hub.sent.filter((m) => m.type === type && m.from === from).length;
}

test('lost INITs are sent again with backoff until one gets through', async () => {
  const hub = new TestHub();
  let lose = 2;
  hub.decide = (msg) => (msg[0] === KX_INIT && lose-- > 0 ? 'drop' : 'pass');
  const o = await openOffline({ spares: 0, hub, kx: FAST });
  await ping(o);
  const h1 = o.off.hosts.get('h1')!;
  assert.is(o.off.hosts.get('h2')!.ingress.counters.delivered, 1);
  assert.is(h1.kx.counters.resends, 2);
  assert.is(countOf(hub, KX_INIT, H1), 3);
  o.off.close();
});

test('a lost ANSWER is answered again from the cache: one SA, not two', async () => {
  const hub = new TestHub();
  let lose = 1;
  hub.decide = (msg) => (msg[0] === KX_ANSWER && lose-- > 0 ? 'drop' : 'pass');
  const o = await openOffline({ spares: 0, hub, kx: FAST });
  await ping(o);
  const h2 = o.off.hosts.get('h2')!;
  assert.is(h2.ingress.counters.delivered, 1);
  assert.is(h2.kx.counters.initsRetransmitted, 1);
  assert.is(h2.kx.counters.accepted, 1);
  assert.is(h2.sas.spis.size, 1);
  o.off.close();
});

test('a forged ANSWER is ignored and the real one still plugs the cable', async () => {
  const hub = new TestHub();
  let forged = false;
  hub.decide = (msg, from, to) => {
    if (msg[0] === KX_INIT && !forged) {
      forged = true;
      // Someone answers first, with the right request id and a signature that is not h2's.
      const fake = Buffer.alloc(48 + 3 + 64);
      fake[0] = KX_ANSWER;
      fake[1] = 1;
      msg.copy(fake, 4, 4, 12);
      fake.writeUInt32BE(0x1234, 12);
      randomBytes(32).copy(fake, 16);
      fake[48] = 2;
      fake.write('h2', 49);
      randomBytes(64).copy(fake, 51);
      hub.inject(to, from, fake);
    }
    return 'pass';
  };
  const o = await openOffline({ spares: 0, hub, kx: FAST });
  await ping(o);
  const h1 = o.off.hosts.get('h1')!;
  assert.ok(h1.kx.counters.answersIgnored >= 1);
  assert.is(h1.kx.counters.answersAccepted, 1);
  assert.is(o.off.hosts.get('h2')!.ingress.counters.delivered, 1);
  o.off.close();
});

test('silence unplugs the cable at the sender after the last try, and nothing leaves unencrypted', async () => {
  const hub = new TestHub();
  hub.decide = (msg) => (msg[0] === KX_INIT ? 'drop' : 'pass');
  const o = await openOffline({ spares: 0, hub, kx: FAST });
  await ping(o, 3);
  const h1 = o.off.hosts.get('h1')!;
  assert.is(countOf(hub, KX_INIT, H1), FAST.tries);
  assert.is(h1.kx.counters.timeouts, 1);
  assert.is(h1.egress.counters.drops[Drop.SaNegotiationFailed], 3, 'the three held packets are dropped under the reason');
  assert.is(o.off.underlay.filter((u) => u.data[9] !== 17).length, 0, 'no ESP and no plain IPv6-in-IPv4 left h1');
  o.off.close();
});

test('packets wait, bounded, until their SA exists, then leave encrypted and in order', async () => {
  const hub = new TestHub();
  hub.decide = (msg) => (msg[0] === KX_ANSWER ? 'hold' : 'pass');
  const o = await openOffline({ spares: 0, hub, kx: { retryMs: 10_000 }, prefetchReplies: false }); // every ANSWER is held: one direction only
  const h1 = o.off.hosts.get('h1')!;
  // No settle: the answer is held, so the packets stay in the upcall queue.
  const pending = ping(o, 70);
  await until(() => hub.held.length > 0, "h2's ANSWER, held back");
  assert.is(o.off.underlay.filter((u) => u.data[9] !== 17).length, 0, 'nothing but the key exchange on the underlay');
  assert.is(h1.upcall.queued, 64, 'the queue holds at most queuePerCable packets');
  assert.is(h1.egress.counters.drops[Drop.UpcallQueueFull], 6);
  hub.release();
  await pending;
  const esp = o.off.underlay.filter((u) => u.data[9] === 50);
  assert.is(esp.length, 64);
  assert.equal(esp.map((u) => u.tag), Array.from({ length: 64 }, (_, k) => k), 'in the order they came');
  assert.is(o.off.hosts.get('h2')!.ingress.counters.delivered, 64);
  o.off.close();
});

test('a flood of INITs from one address is rate-limited per source', async () => {
  const hub = new TestHub();
  const o = await openOffline({ spares: 0, hub });
  const h2 = o.off.hosts.get('h2')!;
  const junk = Buffer.alloc(200);
  junk[0] = KX_INIT;
  junk[1] = 1;
  for (let k = 0; k < 1000; k++) hub.inject(0x0a4d0063, H2, junk);
  await until(() => h2.kx.counters.initsReceived === 1000, 'the 1000 INITs at h2');
  await o.off.settle();
  // The clock stands still: the bucket's burst gets through (to be found malformed), no token comes back.
  const burst = DEFAULT_KX.initBurst;
  assert.is(h2.kx.counters.initsRateLimited, 1000 - burst);
  assert.is(h2.kx.counters.initsMalformed, burst);
  await ping(o);
  assert.is(h2.ingress.counters.delivered, 1, 'another source is not affected');
  o.off.close();
});

test('an INIT outside the time skew is ignored, even when signed by a real host', async () => {
  const hub = new TestHub();
  const o = await openOffline({ spares: 0, hub });
  const cfg = o.config;
  const eph = ephemeralKey();
  const old = encodeInit({
    alg: 'aes-128-gcm', requestId: randomBytes(8), timeMs: Date.now() - 10 * 60_000,
    src: cfg.vms.get('web1')!.identity, dst: cfg.vms.get('web2')!.identity, ephemeral: eph.publicRaw, host: 'h1',
  }, hostPrivateKey(cfg, 'h1'));
  hub.inject(H1, H2, old);
  const h2kx = o.off.hosts.get('h2')!.kx.counters;
  await until(() => h2kx.initsReceived === 1, 'the INIT at h2');
  await o.off.settle();
  const h2 = o.off.hosts.get('h2')!;
  assert.is(h2.kx.counters.initsStale, 1);
  assert.is(h2.sas.spis.size, 0);
  o.off.close();
});

test('a rekey before the volume limit replaces the SA without losing a packet, and the old SA retires after its grace time', async () => {
  let now = Date.now();
  const clock = { now: () => now };
  const o = await openOffline({ spares: 0, clock, saLimits: { softPackets: 100 } });
  const h1 = o.off.hosts.get('h1')!;
  const h2 = o.off.hosts.get('h2')!;
  await ping(o, 1);
  for (let k = 0; k < 10; k++) await ping(o, 50, 'web1', 'web2', 2 + k * 50);
  assert.ok(h1.counts.rekeys >= 4, `${h1.counts.rekeys} rekeys`);
  assert.is(h2.ingress.counters.delivered, 501, 'every packet arrived');
  assert.is(h2.ingress.counters.dropped(), 0);
  const spis = new Set(o.off.underlay.filter((u) => u.data[9] === 50).map((u) => u.data.readUInt32BE(20)));
  assert.ok(spis.size >= 5, `${spis.size} SPIs used`);
  assert.ok(h2.sas.spis.size >= 2, 'old inbound SAs stay for their grace time');
  now += o.config.switch.esp.grace * 1000 + 1;
  h2.sweep();
  assert.is(h2.sas.spis.size, 1, 'after the grace time only the current SA is left');
  o.off.close();
});

test('the INIT leaves before the destination binding is verified, and the cable plugs once both are done; no INIT for a pair the policy refuses', async () => {
  const hub = new TestHub();
  const o = await openOffline({ spares: 0, hub, prefetchReplies: false });
  const v1 = o.off.verifiers.get('h1')!;
  let verifiedAtInit = -1;
  hub.decide = (msg, from) => {
    if (msg[0] === KX_INIT && from === H1 && verifiedAtInit < 0) verifiedAtInit = v1.counters.verified + v1.counters.refused;
    return 'pass';
  };
  await ping(o, 1);
  assert.is(verifiedAtInit, 0, "no verification had ended when h1's INIT left");
  assert.is(v1.counters.verified, 1, "web2's binding was verified");
  assert.is(o.off.hosts.get('h2')!.ingress.counters.delivered, 1);
  await o.off.sendFrames('sensor1', frames([echoFrame(o.config, 'sensor1', 'vault1', 1)])); // allowed by the diode: a control
  await o.off.sendFrames('web1', frames([echoFrame(o.config, 'web1', 'vault1', 1)])); // cross tenant: refused by the policy
  assert.is(countOf(hub, KX_INIT, H1), 2, 'INITs for web1 -> web2 and sensor1 -> vault1 only');
  o.off.close();
});

test("a miss asked again (its far end's binding changed during the key exchange) leaves no key of the first answer behind", async () => {
  const hub = new TestHub();
  const cipher = new NodeEspCipher();
  let holdAnswers = true;
  hub.decide = (msg) => (msg[0] === KX_ANSWER && holdAnswers ? 'hold' : 'pass');
  const o = await openOffline({ spares: 0, hub, cipher, prefetchReplies: false });
  const h1 = o.off.hosts.get('h1')!;
  const h2 = o.off.hosts.get('h2')!;
  const sent = ping(o, 1);
  await until(() => hub.held.length === 1, "h2's ANSWER");
  h1.bindingChanged(o.config.vms.get('web2')!.identityText); // a migration seen half-way: the answer may rest on the old binding
  holdAnswers = false;
  hub.release();
  await sent;
  await until(() => h2.ingress.counters.delivered === 1, 'the packet, after the second key exchange');
  assert.is(h1.upcall.counts.restarted, 1, 'the miss was asked again');
  assert.is(countOf(hub, KX_INIT, H1), 2, 'two key exchanges');
  const outbound = [...h1.egressCables.all()].filter((c) => c.sa !== null).length;
  assert.is(outbound, 1);
  assert.is(cipher.keyCount, outbound + h2.sas.spis.size, "h1's one outbound key and h2's inbound keys: the first answer's outbound key is gone");
  o.off.close();
});

test('an idle cable ends: sweep frees it and its keys on both hosts, and the next packet plugs it again', async () => {
  let now = Date.now();
  const clock = { now: () => now };
  const cipher = new NodeEspCipher();
  const o = await openOffline({ spares: 0, clock, cipher, prefetchReplies: false }); // one direction: its cable and its two keys
  const h1 = o.off.hosts.get('h1')!;
  const h2 = o.off.hosts.get('h2')!;
  await ping(o, 1);
  assert.is(h1.egressCables.size, 1);
  assert.is(h2.ingressCables.size, 1);
  assert.is(cipher.keyCount, 2, 'the outbound key at h1, the inbound key at h2');
  now += o.config.switch.cables.ttl * 1000; // verified again from now on, not yet over
  h1.sweep();
  h2.sweep();
  assert.is(h1.egressCables.size + h2.ingressCables.size, 2, 'a cable due for verification stays');
  now += o.config.switch.cables.ttl * 1000; // 2 ttl without a packet: over
  h1.sweep();
  h2.sweep();
  assert.is(h1.egressCables.size + h2.ingressCables.size, 0);
  assert.is(h1.counts.expiredCables + h2.counts.expiredCables, 2);
  assert.is(h2.sas.spis.size, 0, 'the inbound SA retired with its cable');
  assert.is(cipher.keyCount, 0, 'no key left behind');
  await ping(o, 1, 'web1', 'web2', 2);
  assert.is(h2.ingress.counters.delivered, 2, 'the next packet plugged the pair again');
  assert.is(cipher.keyCount, 2);
  o.off.close();
});

test("the responder's ANSWER leaves before it starts plugging the reply's cable (the initiator does not wait for that)", async () => {
  const hub = new TestHub();
  const o = await openOffline({ spares: 0, hub });
  const h2 = o.off.hosts.get('h2')!;
  let prefetchesAtAnswer = -1;
  hub.decide = (msg, from) => {
    if (msg[0] === KX_ANSWER && from === H2) prefetchesAtAnswer = h2.upcall.counts.prefetches;
    return 'pass';
  };
  await ping(o, 1);
  assert.is(prefetchesAtAnswer, 0, 'no prefetch had started when the ANSWER was sent');
  assert.is(h2.upcall.counts.prefetches, 1, 'the prefetch came after it');
  const init = hub.sent.findIndex((m) => m.type === KX_INIT && m.from === H2);
  const answer = hub.sent.findIndex((m) => m.type === KX_ANSWER && m.from === H2);
  assert.ok(answer >= 0 && init > answer, "h2's own INIT (the reply's cable) went after its ANSWER");
  o.off.close();
});

test("the receiving host plugs the reply's cable as it accepts the request's: the reply leaves without a miss of its own", async () => {
  const o = await openOffline({ spares: 0 });
  const h1 = o.off.hosts.get('h1')!;
  const h2 = o.off.hosts.get('h2')!;
  await ping(o, 1);
  assert.is(h2.upcall.counts.prefetches, 1, 'h2 plugged web2 -> web1 when it accepted web1 -> web2');
  assert.is(h2.upcall.counts.misses, 0);
  const reply = [...h2.egressCables.all()].find((c) => c.srcText === o.config.vms.get('web2')!.identityText);
  assert.ok(reply?.plugged && reply.sa, 'plugged, on its own SA');
  assert.is(h1.upcall.counts.prefetches, 0, "h1 had web1 -> web2 already: no ping-pong");
  await ping(o, 1, 'web2', 'web1');
  assert.is(h2.upcall.counts.misses, 0, 'the reply found its cable');
  assert.is(h1.ingress.counters.delivered, 1);
  // Off, the reply pays its own miss.
  const off = await openOffline({ spares: 0, prefetchReplies: false });
  await ping(off, 1);
  await ping(off, 1, 'web2', 'web1');
  assert.is(off.off.hosts.get('h2')!.upcall.counts.misses, 1);
  o.off.close();
  off.off.close();
});

test('a NOTIFY about an SPI the host does not send on is not verified; one about its SA, forged, is refused; signed, it unplugs the cable', async () => {
  const hub = new TestHub();
  const o = await openOffline({ spares: 0, hub, kx: FAST });
  await ping(o, 1);
  const h1 = o.off.hosts.get('h1')!;
  const cable = [...h1.egressCables.all()].find((c) => c.sa !== null)!;
  const spi = cable.sa!.spi;
  const c = h1.kx.counters;
  const notify = (s: number, key = hostPrivateKey(o.config, 'h2')): void =>
    hub.inject(H2, H1, encodeNotify({ reason: NotifyReason.UnknownSpi, spi: s, timeMs: Date.now(), host: 'h2' }, key));
  // Signed with the wrong key: it would be refused if it were verified.
  notify(spi ^ 1, hostPrivateKey(o.config, 'h1'));
  notify(spi ^ 1);
  await until(() => c.notifiesUnmatched === 2, 'two unmatched NOTIFYs');
  assert.is(c.notifiesRefused, 0, 'neither was verified');
  notify(spi, hostPrivateKey(o.config, 'h1'));
  await until(() => c.notifiesRefused === 1, 'the forged NOTIFY refused');
  assert.ok(h1.egressCables.findCable(cable) === cable, 'the cable stays after the forged one');
  notify(spi);
  await until(() => c.notifiesReceived === 1, 'the signed NOTIFY received');
  assert.is(h1.egressCables.findCable(cable), undefined, 'the cable is unplugged');
  assert.is(c.notifiesUnmatched, 2);
  o.off.close();
});

test('a signed INIT with a low-order X25519 key is refused, and the responder keeps running', async () => {
  const hub = new TestHub();
  const o = await openOffline({ spares: 0, hub, kx: FAST });
  const cfg = o.config;
  // u = 0 is a point of low order: any private key gives the all-zero secret with it.
  const init = encodeInit({
    alg: 'aes-128-gcm', requestId: randomBytes(8), timeMs: Date.now(),
    src: cfg.vms.get('web1')!.identity, dst: cfg.vms.get('web2')!.identity, ephemeral: Buffer.alloc(32), host: 'h1',
  }, hostPrivateKey(cfg, 'h1'));
  hub.inject(H1, H2, init);
  const h2 = o.off.hosts.get('h2')!;
  await until(() => h2.kx.counters.badKeys === 1, 'the bad key counted');
  await until(() => countOf(hub, KX_ANSWER, H2) === 1, 'the refusal sent');
  assert.is(h2.kx.counters.refusals[Drop.SaNegotiationFailed], 1);
  assert.is(h2.kx.counters.accepted, 0);
  assert.is(h2.sas.spis.size, 0, 'no SA installed');
  await ping(o, 1);
  assert.is(h2.ingress.counters.delivered, 1, 'the next, honest key exchange plugs the cable');
  o.off.close();
});

test('a signed ANSWER with a low-order X25519 key ends the handshake unplugged, and the initiator keeps running', async () => {
  const hub = new TestHub();
  let initRaw: Buffer | undefined;
  let cfg: Offline['config'] | undefined;
  hub.decide = (msg, from, to) => {
    if (msg[0] === KX_INIT) initRaw = Buffer.from(msg);
    if (msg[0] !== KX_ANSWER || from !== H2) return 'pass';
    // h2's own answer, signed again by h2 with u = 1 (a point of low order) as its key.
    const real = decodeAnswer(msg, initRaw!);
    const lowOrder = Buffer.alloc(32);
    lowOrder[0] = 1;
    hub.inject(from, to, encodeAnswer({ status: 0, requestId: real.requestId, spi: real.spi, ephemeral: lowOrder, host: 'h2' }, initRaw!, hostPrivateKey(cfg!, 'h2')));
    return 'drop';
  };
  const o = await openOffline({ spares: 0, hub, kx: FAST });
  cfg = o.config;
  await ping(o, 1);
  const h1 = o.off.hosts.get('h1')!;
  await until(() => h1.kx.counters.badKeys === 1, 'the bad key counted');
  await o.off.settle();
  assert.is(h1.kx.counters.answersAccepted, 0);
  assert.not.ok(h1.kx.busy, 'the handshake is over, not waiting for another answer');
  const cable = [...h1.egressCables.all()].find((c) => c.dstText === cfg!.vms.get('web2')!.identityText);
  assert.is(cable?.drop, Drop.SaNegotiationFailed, 'unplugged for the failed key exchange');
  assert.is(o.off.hosts.get('h2')!.ingress.counters.delivered, 0);
  o.off.close();
});

test.run();
