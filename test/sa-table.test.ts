// The inbound SAs of the SA table through a pair's life: rekeys (the newest is current, the
// ones before it in grace until sweep retires them), cables replaced and moved away (their
// SAs follow without a walk over every SA), eviction, and a random run checked against a
// model kept beside it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { CableDirection, Cable, type CableSa } from '../src/dataplane/cable.js';
import { CableCache } from '../src/dataplane/cable-cache.js';
import { Drop } from '../src/base/drops.js';
import { MemoryLogger } from '../src/base/log.js';
import { msOf, tickOf } from '../src/base/ticks.js';
import { NodeEspCipher } from '../src/esp/esp-cipher.js';
import { DEFAULT_HARD_SEQ, OutboundSa } from '../src/esp/sa.js';
import { CONTEXT_IDLE_SWEEPS, SaTable } from '../src/switch/sa-table.js';
import { NativeEspCipher } from '../src/esp/native-esp-cipher.js';
import { EspJobs } from '../src/esp/esp-cipher.js';
import { rng } from './rng.js';
import { Rekeyer } from '../src/switch/rekey.js';
import { PortTable } from '../src/dataplane/port-table.js';
import type { SaRequest, SaResult } from '../src/switch/key-exchange.js';

const GRACE = 1000;

function id(n: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0xfd000000, 0);
  b.writeUInt32BE(n, 12);
  return b;
}

/** An ingress cable of pair (n -> 1), plugged. */
function ingress(n: number): Cable {
  const s = id(n);
  const d = id(1);
  return new Cable(CableDirection.Ingress, s, d, Drop.None, 'test', null, 0);
}

/** When `sa` stops accepting packets (ms since 1970), told at `now`; Infinity while it is current. */
function retireAt(sa: CableSa, now: number): number {
  return sa.current ? Infinity : msOf(now, sa.retireTick);
}

function setup(max = 100): { table: SaTable; cache: CableCache; cipher: NodeEspCipher; clock: { t: number; now: () => number }; key: () => number } {
  const cipher = new NodeEspCipher();
  // 100 s before the int32 tick wraps (src/base/ticks.ts): the SAs' times cross it.
  const clock = { t: 2 ** 40 + 2 ** 31 - 100_000, now(): number { return this.t; } };
  let table!: SaTable;
  const cache = new CableCache(max, (c) => table.evicted(c));
  const egress = new CableCache(max);
  table = new SaTable({ egress, ingress: cache }, cipher, clock, GRACE, new MemoryLogger());
  return { table, cache, cipher, clock, key: () => cipher.addKey('aes-128-gcm', randomBytes(16), randomBytes(4)) };
}

test('the sweep gives back the cipher contexts of keys idle for CONTEXT_IDLE_SWEEPS sweeps, and keeps those in use', () => {
  const cipher = new NativeEspCipher();
  const clock = { t: 2 ** 40, now(): number { return this.t; } };
  const table = new SaTable({ egress: new CableCache(10), ingress: new CableCache(10) }, cipher, clock, GRACE, new MemoryLogger());
  const [busy, idle] = [0, 1].map(() => cipher.addKey('aes-128-gcm', randomBytes(16), randomBytes(4)));
  const buf = Buffer.alloc(256);
  const seal = (...keys: number[]): void => {
    const jobs = new EspJobs(4);
    for (const k of keys) jobs.add(k, 0, 64, 0, 0);
    cipher.seal(buf, jobs);
  };
  seal(busy, idle);
  assert.is(table.cipherContexts, 2);
  for (let s = 1; s < CONTEXT_IDLE_SWEEPS; s++) {
    seal(busy);
    table.sweep();
  }
  assert.is(table.cipherContexts, 2, `idle for ${CONTEXT_IDLE_SWEEPS - 1} sweeps: kept`);
  table.sweep();
  assert.is(table.cipherContexts, 1, `idle for ${CONTEXT_IDLE_SWEEPS}: gone; the key in use keeps its context`);
  assert.is(cipher.keyCount, 2, 'both keys stay');
});

test('a rekey makes the new SA current; the old one serves its grace time, then sweep retires it with its key', () => {
  const { table, cache, cipher, clock, key } = setup();
  const c1 = ingress(2);
  const a = table.installInbound(c1, 0x1000, key(), 7);
  assert.is(table.inboundOf(c1), a);
  assert.is(cache.size, 1);
  clock.t += 10;
  const c2 = ingress(2); // the answer of the next key exchange carries a new cable of the same pair
  const b = table.installInbound(c2, 0x2000, key(), 7);
  assert.is(cache.size, 1, 'one cable per pair');
  assert.is(table.inboundOf(c2), b);
  assert.is(table.inboundOf(c1), undefined);
  assert.is(retireAt(a, clock.t), clock.t + GRACE);
  assert.is(table.currentPairs, 1);
  assert.is(table.spis.size, 2);
  clock.t += GRACE - 1;
  table.sweep();
  assert.is(table.spis.size, 2, 'not before its time');
  clock.t += 1;
  table.sweep();
  assert.is(table.spis.size, 1);
  assert.is(table.spis.get(0x1000), undefined);
  assert.is(cipher.keyCount, 1, 'its key went with it');
  assert.is(table.counts.retiredSas, 1);
});

test('a replaced cable hands every SA that carries it to the next one; eviction retires the current SA only', () => {
  const { table, cache, clock, key } = setup();
  const c1 = ingress(3);
  const a = table.installInbound(c1, 0x1000, key(), 7);
  const b = table.installInbound(c1, 0x2000, key(), 7); // a rekey onto the same cable object
  assert.is(retireAt(a, clock.t), clock.t + GRACE);
  const c2 = ingress(3);
  cache.insert(c2);
  table.replaced(c1, c2);
  assert.is(a.cable, c2);
  assert.is(b.cable, c2);
  assert.is(table.inboundOf(c2), b);
  assert.is(c1.inbound, null);
  cache.remove(c2);
  table.evicted(c2);
  assert.is(table.spis.get(0x2000), undefined, 'the current SA went with its cable');
  assert.is(table.spis.get(0x1000), a, 'the one in grace stays for its time');
  clock.t += GRACE;
  table.sweep();
  assert.is(table.spis.size, 0);
  assert.is(c2.inbound, null, 'nothing left on the cable');
});

test('a cable moved away: its SAs carry the moved cable until the move grace, and the pair has no current SA', () => {
  const { table, clock, key } = setup();
  const c1 = ingress(4);
  const a = table.installInbound(c1, 0x1000, key(), 7);
  const moved = ingress(4);
  table.movedAway(c1, moved, clock.t + 50);
  assert.is(a.cable, moved);
  assert.is(retireAt(a, clock.t), clock.t + 50);
  assert.is(table.inboundOf(moved), undefined);
  assert.is(table.currentPairs, 0);
  clock.t += 50;
  table.sweep();
  assert.is(table.spis.size, 0);
});

test('a random run of installs, rekeys, replacements, moves, evictions and sweeps agrees with a model', () => {
  const rand = rng(13);
  const { table, cache, cipher, clock, key } = setup(40);
  // The model: each SA's retire time (Infinity while current), its pair and the cable object it carries.
  const model = new Map<number, { pair: number; retireAt: number; cable: Cable }>();
  let spi = 0x10000;
  const cableOf = (pair: number): Cable | undefined => [...cache.all()].find((c) => c.hasSrc(id(pair)));
  for (let step = 0; step < 4000; step++) {
    const pair = 2 + Math.floor(rand() * 60);
    const r = rand();
    const cached = cableOf(pair);
    if (r < 0.45) {
      // A key exchange (a new cable, or a rekey onto the cached one).
      const c = cached && rand() < 0.5 ? cached : ingress(pair);
      const before = cache.size;
      for (const [, m] of model) if (m.pair === pair && m.retireAt === Infinity) m.retireAt = clock.t + GRACE;
      const sa = table.installInbound(c, ++spi, key(), 7);
      model.set(sa.spi, { pair, retireAt: Infinity, cable: c });
      // A full cache evicted another pair's cable: its current SA retired.
      if (cached === undefined && before === cache.max) {
        for (const [s, m] of model) if (m.retireAt === Infinity && !cableOf(m.pair)) model.delete(s);
      }
    } else if (r < 0.65 && cached) {
      const next = ingress(pair);
      cache.insert(next);
      table.replaced(cached, next);
      for (const [, m] of model) if (m.cable === cached) m.cable = next;
    } else if (r < 0.75 && cached) {
      const moved = ingress(pair);
      cache.insert(moved);
      table.movedAway(cached, moved, clock.t + 30);
      // The SAs on the moved cable; older ones of the pair, on a cable replaced before, keep their time.
      for (const [, m] of model) {
        if (m.cable !== cached) continue;
        m.retireAt = Math.min(m.retireAt, clock.t + 30);
        m.cable = moved;
      }
    } else if (r < 0.85 && cached) {
      cache.remove(cached);
      table.evicted(cached);
      for (const [s, m] of model) if (m.pair === pair && m.retireAt === Infinity) model.delete(s);
    } else {
      clock.t += Math.floor(rand() * 200);
      table.sweep();
      for (const [s, m] of model) if (clock.t >= m.retireAt) model.delete(s);
    }
    // The table holds exactly the model's SAs, with their times; each current one is its pair's cached cable's.
    assert.is(table.spis.size, model.size, `step ${step}`);
    for (const [s, m] of model) {
      const sa = table.spis.get(s) as CableSa;
      assert.ok(sa, `SPI ${s} at step ${step}`);
      assert.is(retireAt(sa, clock.t), m.retireAt, `retireAt of ${s} at step ${step}`);
      assert.is(sa.cable, m.cable, `cable of ${s} at step ${step}`);
      if (m.retireAt === Infinity) assert.is(table.inboundOf(cableOf(m.pair)!), sa, `current of pair ${m.pair} at step ${step}`);
    }
    assert.is(table.currentPairs, [...model.values()].filter((m) => m.retireAt === Infinity).length);
    assert.is(cipher.keyCount, model.size, `keys at step ${step}`);
  }
  assert.ok(tickOf(clock.t) < 0, 'the run crossed the int32 wrap of the ticks');
});

/** An egress cable of pair (1 -> n) to `peer` with an SA of SPI `spi`. */
function egress(n: number, peer: number, sa: OutboundSa): Cable {
  const s = id(1);
  const d = id(n);
  const c = new Cable(CableDirection.Egress, s, d, Drop.None, 'test', null, 0);
  c.peerAddr = peer;
  c.sa = sa;
  return c;
}

const LIMITS = { softPackets: 1e9, softBytes: 1e12, softAgeMs: 1e9, hardSeq: DEFAULT_HARD_SEQ };

test("a peer's NOTIFY unplugs exactly its cable with that SPI, through the (peer, SPI) index; rekeys, replacements and evictions keep the index exact", () => {
  const rand = rng(29);
  const cipher = new NodeEspCipher();
  const clock = { now: (): number => 0 };
  let table!: SaTable;
  const egressCache = new CableCache(30, (c) => table.evicted(c), (c) => table.indexOutbound(c));
  table = new SaTable({ egress: egressCache, ingress: new CableCache(10) }, cipher, clock, GRACE, new MemoryLogger());
  const peers = [0x0a000001, 0x0a000002, 0x0a000003];
  const newSa = (peer: number): OutboundSa => {
    // The peer chooses SPIs unique among its own: a small space, so that peers share SPIs.
    const used = new Set([...egressCache.all()].filter((c) => c.sa !== null && c.peerAddr === peer).map((c) => c.sa!.spi));
    let spi: number;
    do spi = 256 + Math.floor(rand() * 40); while (used.has(spi));
    return new OutboundSa(spi, cipher.addKey('aes-128-gcm', randomBytes(16), randomBytes(4)), 0, LIMITS);
  };
  const cached = (): Cable[] => [...egressCache.all()];
  for (let step = 0; step < 5000; step++) {
    const n = 2 + Math.floor(rand() * 45);
    const peer = peers[Math.floor(rand() * peers.length)];
    const have = cached().find((c) => c.hasDst(id(n)));
    const r = rand();
    if (r < 0.35) {
      // A plug (a new pair: a full cache evicts one), or a re-plug of the pair with a new SA.
      const c = egress(n, peer, newSa(peer));
      const old = egressCache.insert(c);
      if (old) table.replaced(old, c);
    } else if (r < 0.5 && have) {
      const next = egress(n, have.peerAddr, have.sa!); // a refresh keeps the SA
      egressCache.insert(next);
      table.replaced(have, next);
    } else if (r < 0.65 && have) {
      const old = have.sa!;
      have.sa = newSa(have.peerAddr);
      table.rekeyed(have, old);
    } else if (r < 0.72 && have) {
      egressCache.remove(have);
      table.evicted(have);
    } else {
      const spi = 256 + Math.floor(rand() * 40);
      const target = cached().find((c) => c.sa!.spi === spi && c.peerAddr === peer);
      const before = egressCache.size;
      table.spiRejected(spi, peer);
      assert.is(egressCache.size, before - (target ? 1 : 0), `step ${step}: NOTIFY of 0x${spi.toString(16)} from ${peer}`);
      if (target) assert.is(egressCache.findCable(target), undefined);
    }
    const all = cached();
    assert.is(table.outboundIndexed, all.length, `step ${step}: one index entry per cached egress cable`);
    assert.is(cipher.keyCount, new Set(all.map((c) => c.sa)).size, `step ${step}: one key per live SA`);
  }
});

test('a pair plugged again with a new SA that has the same SPI from the same peer (the peer lost its state) keeps its index entry: a NOTIFY still finds it', () => {
  const cipher = new NodeEspCipher();
  let table!: SaTable;
  const egressCache = new CableCache(10, (c) => table.evicted(c), (c) => table.indexOutbound(c));
  table = new SaTable({ egress: egressCache, ingress: new CableCache(10) }, cipher, { now: () => 0 }, GRACE, new MemoryLogger());
  const key = (): number => cipher.addKey('aes-128-gcm', randomBytes(16), randomBytes(4));
  const peer = 0x0a000009;
  const c1 = egress(5, peer, new OutboundSa(0x4444, key(), 0, LIMITS));
  egressCache.insert(c1);
  const c2 = egress(5, peer, new OutboundSa(0x4444, key(), 0, LIMITS));
  table.replaced(egressCache.insert(c2)!, c2);
  assert.is(cipher.keyCount, 1, 'the old SA\'s key went');
  assert.is(table.outboundIndexed, 1);
  table.spiRejected(0x4444, peer);
  assert.is(egressCache.size, 0, 'the NOTIFY unplugged the new cable');
  assert.is(table.outboundIndexed, 0);
  assert.is(cipher.keyCount, 0);
});


test('an answer the upcall did not install gives its SA key back, unless the cable left in place sends on the same SA', () => {
  const { table, cipher } = setup();
  const sa = (spi: number): OutboundSa => new OutboundSa(spi, cipher.addKey('aes-128-gcm', randomBytes(16), randomBytes(4)), 0, LIMITS);
  const fresh = egress(3, 9, sa(0x300)); // a miss's first answer, with a new SA
  assert.is(cipher.keyCount, 1);
  table.unused(fresh, undefined);
  assert.is(cipher.keyCount, 0, 'its key is gone');
  const plugged = egress(4, 9, sa(0x400));
  const sameSa = egress(4, 9, plugged.sa!); // a refresh's answer that kept the plugged cable's SA
  table.unused(sameSa, plugged);
  assert.is(cipher.keyCount, 1, 'the plugged cable still sends on it');
  table.unused(egress(4, 9, sa(0x401)), plugged);
  assert.is(cipher.keyCount, 1, "a refresh's answer with a new SA: that one goes");
  const refused = egress(5, 9, sa(0x500));
  refused.sa = null;
  table.unused(refused, undefined);
  assert.is(cipher.keyCount, 2, 'a cable without an SA gives nothing back');
});

test("a rekey's new SA goes to the pair's cable when it still goes to the same peer, and is discarded when the pair moved to another host meanwhile", async () => {
  const cipher = new NodeEspCipher();
  let table!: SaTable;
  const egressCache = new CableCache(10, (c) => table.evicted(c), (c) => table.indexOutbound(c));
  table = new SaTable({ egress: egressCache, ingress: new CableCache(10) }, cipher, { now: () => 0 }, GRACE, new MemoryLogger());
  const key = (): number => cipher.addKey('aes-128-gcm', randomBytes(16), randomBytes(4));
  const ports = new PortTable();
  ports.add({ name: 'web1', tenant: 'blue', mac: Buffer.alloc(6), identity: id(1), identityText: '::1', mtu: 1400 });
  const asked: SaRequest[] = [];
  let answer!: (r: SaResult) => void;
  const kx = { establish: (req: SaRequest) => (asked.push(req), new Promise<SaResult>((r) => (answer = r))), discard: () => {}, hasSpare: () => false, takeSpare: () => undefined };
  const rekeyer = new Rekeyer(ports, egressCache, kx, cipher, new MemoryLogger(), (c, old) => table.rekeyed(c, old));
  const plug = (peer: number, spi: number): Cable => {
    const c = egress(5, peer, new OutboundSa(spi, key(), 0, LIMITS));
    c.srcPort = 0;
    const old = egressCache.insert(c);
    if (old) table.replaced(old, c);
    return c;
  };
  const settle = () => new Promise((r) => setImmediate(r));

  const c = plug(0x0a000002, 0x500);
  rekeyer.rekey(c);
  assert.is(asked[0].peerAddress, 0x0a000002);
  const fresh = new OutboundSa(0x501, key(), 0, LIMITS);
  answer({ ok: true, sa: fresh });
  await settle();
  assert.is(c.sa, fresh, 'the same peer: the new SA replaces the old one');
  assert.equal([cipher.keyCount, table.outboundIndexed, rekeyer.counts.rekeys], [1, 1, 1]);

  rekeyer.rekey(c);
  const moved = plug(0x0a000003, 0x600); // the pair is plugged to another host before the answer comes
  const late = new OutboundSa(0x502, key(), 0, LIMITS);
  answer({ ok: true, sa: late });
  await settle();
  assert.is(egressCache.findCable(c)!.sa!.spi, 0x600, 'the cable to the other host keeps its own SA');
  assert.is(moved.sa!.spi, 0x600);
  assert.equal([cipher.keyCount, table.outboundIndexed, rekeyer.counts.rekeys], [1, 1, 1], "the late SA's key went, nothing else changed");
  table.spiRejected(0x600, 0x0a000003);
  assert.is(egressCache.size, 0, 'the (peer, SPI) index still finds the cable to the new host');
});

test.run();
