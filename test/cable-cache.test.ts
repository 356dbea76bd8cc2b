import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Cable, CableDirection, MAX_PORTS, identityKeyOf } from '../src/dataplane/cable.js';
import { PortTable } from '../src/dataplane/port-table.js';
import { DEFAULT_HARD_SEQ, InboundSa, OutboundSa } from '../src/esp/sa.js';
import { formatIpv6 } from '../src/base/address.js';
import { CableCache, EVICT_SCAN } from '../src/dataplane/cable-cache.js';
import { DROP_INFO, Drop } from '../src/base/drops.js';
import { pairHash } from '../src/dataplane/pair-hash.js';

function id(n: number): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0xfd;
  b.writeUInt32BE(n, 12);
  return b;
}

/** A cable whose pair hash the test chooses, so that pairs collide (a Cable's own is its pair's pairHash). */
class HashedCable extends Cable {
  constructor(private readonly forced: number, src: Buffer, dst: Buffer, drop: Drop) {
    super(CableDirection.Egress, src, dst, drop, 'test', null, 0);
  }

  override get hash(): number {
    return this.forced;
  }
}

function cable(src: number, dst: number, hash?: number, drop = Drop.None): Cable {
  const s = id(src);
  const d = id(dst);
  const c = hash === undefined ? new Cable(CableDirection.Egress, s, d, drop, 'test', null, 0) : new HashedCable(hash, s, d, drop);
  c.lasts(0, Infinity, Infinity); // the tests sweep at times far below 12 days
  return c;
}

/** The text of identity id(n). */
function text(n: number): string {
  return formatIpv6(id(n));
}

function packet(src: number, dst: number): Buffer {
  return Buffer.concat([id(src), id(dst)]);
}

test('a cable keeps its direction and drop reason beside its flags: every drop, both directions, flags set and cleared', () => {
  const drops = Object.keys(DROP_INFO).map(Number) as Drop[];
  assert.ok(drops.length > 50, `${drops.length} drop reasons`);
  for (const d of drops) {
    for (const dir of [CableDirection.Egress, CableDirection.Ingress]) {
      const c = new Cable(dir, id(1), id(2), d, 'test', null, 0);
      c.used = true;
      c.refreshing = true;
      c.refreshAgain = true;
      c.refreshing = false;
      assert.is(c.drop, d, `drop ${d}`);
      assert.is(c.direction, dir);
      assert.is(c.plugged, d === Drop.None);
      assert.equal([c.used, c.refreshing, c.refreshAgain], [true, false, true]);
      c.used = false;
      c.refreshAgain = false;
      assert.equal([c.used, c.refreshing, c.refreshAgain, c.drop, c.direction], [false, false, false, d, dir]);
    }
  }
});

test('a cable keeps its source and local ports in one field: each -1 .. MAX_PORTS - 1, set apart, and nothing else', () => {
  const c = new Cable(CableDirection.Egress, id(1), id(2), Drop.None, 'test', null, 0);
  assert.equal([c.srcPort, c.localPort], [-1, -1]);
  for (const [s, l] of [[0, -1], [-1, 0], [MAX_PORTS - 1, -1], [-1, MAX_PORTS - 1], [MAX_PORTS - 1, MAX_PORTS - 1], [17, 4242], [0, 0]]) {
    c.srcPort = s;
    c.localPort = l;
    assert.equal([c.srcPort, c.localPort], [s, l], `${s} ${l}`);
    c.srcPort = 3; // the other stays
    assert.equal([c.srcPort, c.localPort], [3, l]);
    c.localPort = 5;
    assert.equal([c.srcPort, c.localPort], [3, 5]);
  }
  c.used = true;
  c.srcPort = MAX_PORTS - 1;
  assert.equal([c.used, c.drop, c.direction], [true, Drop.None, CableDirection.Egress]);
  for (const bad of [MAX_PORTS, -2, 1.5, NaN]) {
    assert.throws(() => (c.srcPort = bad), /port index/);
    assert.throws(() => (c.localPort = bad), /port index/);
  }
  assert.equal([c.srcPort, c.localPort], [MAX_PORTS - 1, 5], 'a refused value changes nothing');
});

test("a cable's SA field is the outbound SA on egress and the inbound list on ingress, never both", () => {
  const out = new OutboundSa(0x1234, 1, 0, { softPackets: 1, softBytes: 1, softAgeMs: 1, hardSeq: DEFAULT_HARD_SEQ });
  const e = new Cable(CableDirection.Egress, id(1), id(2), Drop.None, 'test', null, 0);
  e.sa = out;
  assert.is(e.sa, out);
  assert.is(e.inbound, null);
  e.inbound = null; // nothing to clear on egress: the outbound SA stays
  assert.is(e.sa, out);
  assert.throws(() => (e.inbound = new InboundSa(1, 2, 3, e)), /egress cable has no inbound SA/);
  const i = new Cable(CableDirection.Ingress, id(2), id(1), Drop.None, 'test', null, 0);
  const sa = new InboundSa(0x99, 2, 0x0a000002, i);
  i.inbound = sa;
  assert.is(i.inbound, sa);
  assert.is(i.sa, null);
  i.sa = null;
  assert.is(i.inbound, sa);
  assert.throws(() => (i.sa = out), /ingress cable has no outbound SA/);
  assert.is(i.inbound, sa);
});

test('a port table refuses a port beyond what a cable can keep', () => {
  const t = new PortTable();
  const port = (n: number) => ({ name: `vm${n}`, tenant: 'blue', mac: Buffer.alloc(6), identity: id(n), identityText: text(n), mtu: 1400 });
  for (let n = 0; n < MAX_PORTS; n++) t.add(port(n));
  assert.is(t.byIdentity(text(MAX_PORTS - 1))!.index, MAX_PORTS - 1);
  assert.throws(() => t.add(port(MAX_PORTS)), /at most 32767 VM ports/);
  t.remove(100);
  assert.is(t.add(port(MAX_PORTS)).index, 100, 'a freed slot is taken again');
});

test('a cable is found by its pair, and not by another pair', () => {
  const cache = new CableCache(10);
  const c = cable(1, 2);
  cache.insert(c);
  const p = packet(1, 2);
  assert.is(cache.find(pairHash(p, 0, p, 16), p, 0, 16), c);
  const q = packet(2, 1);
  assert.is(cache.find(pairHash(q, 0, q, 16), q, 0, 16), undefined);
});

test('pairs that collide on the hash sit side by side and are told apart by their bytes', () => {
  const cache = new CableCache(10);
  const a = cable(1, 2, 77);
  const b = cable(3, 4, 77);
  const c = cable(5, 6, 77);
  for (const x of [a, b, c]) cache.insert(x);
  assert.is(cache.size, 3);
  assert.is(cache.find(77, packet(1, 2), 0, 16), a);
  assert.is(cache.find(77, packet(3, 4), 0, 16), b);
  assert.is(cache.find(77, packet(5, 6), 0, 16), c);
  assert.is(cache.find(77, packet(7, 8), 0, 16), undefined);
  const b2 = cable(3, 4, 77, Drop.PolicyDefaultDeny);
  assert.is(cache.insert(b2), b, 'the replaced cable is returned');
  assert.is(cache.size, 3);
  assert.is(cache.find(77, packet(3, 4), 0, 16), b2);
  assert.ok(cache.remove(a));
  assert.not.ok(cache.remove(a));
  assert.is(cache.find(77, packet(1, 2), 0, 16), undefined);
  assert.is(cache.find(77, packet(5, 6), 0, 16), c);
});

test('the cache is bounded: a full cache evicts a cable unused for a whole turn of its hand, and reports it', () => {
  const evicted: Cable[] = [];
  const cache = new CableCache(3, (c) => evicted.push(c));
  const [a, b, c] = [1, 2, 3].map((n) => cable(n, 100));
  [a, b, c].forEach((x) => cache.insert(x));
  const d = cable(4, 100);
  cache.insert(d); // every cable is new (marked): the hand clears them all, then evicts one
  assert.is(evicted.length, 1);
  assert.is(cache.size, 3);
  const [kept, unused] = [a, b, c].filter((x) => x !== evicted[0]);
  const p = packet(kept.src.readUInt32BE(12), 100);
  assert.is(cache.find(kept.hash, p, 0, 16), kept); // used since the hand passed
  cache.insert(cable(5, 100)); // d is still marked from its insert, kept is marked by the find
  assert.equal(evicted.slice(1), [unused], 'the one cable not used since the hand passed');
  assert.is(cache.find(kept.hash, p, 0, 16), kept);
  assert.is(cache.findCable(d), d);
  assert.is(cache.evictions, 2);
});

test('with every cable in use, one eviction looks at no more than EVICT_SCAN slots and still evicts exactly one cable', () => {
  const evicted: Cable[] = [];
  const cache = new CableCache(2000, (c) => evicted.push(c));
  const cables: Cable[] = [];
  for (let k = 0; k < 2000; k++) {
    const c = cable(k, k + 1);
    cache.insert(c);
    cables.push(c);
  }
  for (const c of cables) c.used = true; // all found since the hand last passed
  cache.insert(cable(5000, 5001));
  assert.is(evicted.length, 1);
  assert.is(cache.size, 2000);
  const cleared = cables.filter((c) => !c.used).length;
  assert.ok(cleared > 0 && cleared < EVICT_SCAN, `marks cleared by one eviction: ${cleared} (a whole turn would clear ${cables.length})`);
  // With the marks gone again, the hand takes the first cable it meets, as before.
  for (const c of cables) c.used = false;
  cache.insert(cable(6000, 6001));
  assert.is(evicted.length, 2);
  assert.ok(cables.includes(evicted[1]) && evicted[1] !== evicted[0], 'an unused cable went, not the new one');
});

test('differential: the cache holds what a plain map holds, less what it reported evicted, over 20k random operations', () => {
  let seed = 7;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  for (const max of [1, 5, 64, 300]) {
    const model = new Map<number, Cable>(); // by pair number
    const cache = new CableCache(max, (c) => {
      const k = c.src.readUInt32BE(12);
      assert.is(model.get(k), c, 'only a cached cable is evicted, once');
      model.delete(k);
    });
    for (let op = 0; op < 20_000; op++) {
      const k = rand(max * 3);
      const p = packet(k, k + 1);
      const hash = k % 2 === 0 ? k % 13 : 2 ** 30 - 1 - (k % 11); // few hashes, at both ends of the table: long runs and probes that wrap
      const r = rand(10);
      if (r < 4) {
        const c = cable(k, k + 1, hash);
        const before = model.get(k);
        assert.is(cache.insert(c), before);
        model.set(k, c);
      } else if (r < 6) {
        const c = model.get(k);
        if (c) {
          assert.ok(cache.remove(c));
          model.delete(k);
        } else {
          assert.not.ok(cache.remove(cable(k, k + 1, hash)));
        }
      } else {
        assert.is(cache.find(hash, p, 0, 16), model.get(k));
      }
      assert.ok(cache.size <= max);
      assert.is(cache.size, model.size);
    }
    for (const [k, c] of model) assert.is(cache.find(c.hash, packet(k, k + 1), 0, 16), c);
    assert.is([...cache.all()].length, model.size);
  }
});

test("a cable's hash is its pair's pairHash, the one the packet path computes from the packet", () => {
  for (let k = 0; k < 2000; k++) {
    const s = id(k * 7919);
    const d = id(k * 104_729 + 1);
    s[3] = k & 0xff; // the prefix words vary too
    d[7] = (k * 31) & 0xff;
    const c = new Cable(CableDirection.Egress, s, d, Drop.None, 'test', null, 0);
    const want = pairHash(s, 0, d, 0);
    if (c.hash !== want) assert.unreachable(`pair ${k}: ${c.hash} against ${want}`);
  }
  const c = cable(1, 2);
  const cache = new CableCache(4);
  cache.insert(c);
  assert.is(cache.find(pairHash(id(1), 0, id(2), 0), packet(1, 2), 0, 16), c, 'found by the hash of the packet');
});

test('the pair hash spreads: 100k pairs give almost no collisions in 30 bits', () => {
  const seen = new Set<number>();
  for (let k = 0; k < 100_000; k++) seen.add(cable(k, k * 7 + 1).hash);
  assert.ok(seen.size > 99_980, `${100_000 - seen.size} collisions`);
  for (const h of seen) assert.ok(h >= 0 && h < 2 ** 30);
});

test('removeExpired frees the cables whose lifetime ended, except one being verified again', () => {
  const cache = new CableCache(10);
  const live = cable(1, 2);
  live.expiresTick = 2000;
  const dead = cable(3, 4, 77);
  dead.expiresTick = 1000;
  const chained = cable(5, 6, 77); // same hash as dead: still found after its removal
  chained.expiresTick = 5000;
  const busy = cable(7, 8);
  busy.expiresTick = 1000;
  busy.refreshing = true;
  for (const c of [live, dead, chained, busy]) cache.insert(c);
  const removed: Cable[] = [];
  assert.is(cache.removeExpired(1500, (c) => removed.push(c)), 1);
  assert.equal(removed, [dead]);
  assert.is(cache.size, 3);
  assert.is(cache.findCable(chained), chained);
  assert.equal(cache.cablesOf(text(3)), [], 'the identity index forgets it too');
  busy.refreshing = false;
  assert.is(cache.removeExpired(2000, () => {}), 2, 'live reaches its end, busy is no longer busy');
  assert.equal([...cache.all()], [chained]);
});

test('removeExpired with a slot budget sweeps a big cache a slice at a time, going on where it stopped, and a whole pass frees every expired cable', () => {
  const cache = new CableCache(5000);
  for (let k = 0; k < 5000; k++) {
    const c = cable(k, k + 1);
    c.expiresTick = k % 2 === 0 ? 1000 : 9000; // half of them ended
    cache.insert(c);
  }
  const slots = 16_384; // 2^k, at least twice the cables: 5000 -> 16,384
  const perCall: number[] = [];
  let total = 0;
  for (let call = 0; call < slots / 1024; call++) {
    const n = cache.removeExpired(5000, () => total++, 1024);
    perCall.push(n);
  }
  assert.is(total, 2500, 'a whole pass (16 slices of 1024 slots) freed all 2500');
  assert.ok(perCall.every((n) => n < 1024 / 2 + 50), `no slice did more than its share: ${perCall}`);
  assert.ok(perCall.filter((n) => n > 0).length > 10, `the work is spread over the slices: ${perCall}`);
  assert.is(cache.size, 2500);
  for (const c of cache.all()) assert.is(c.expiresTick, 9000);
  assert.is(cache.removeExpired(5000, () => {}, 1024), 0, 'nothing left to free');
});

test('after a peak the sweep gives the slots back: the cables left are found, and the table grows again as cables come', () => {
  const cache = new CableCache(20_000);
  const all = Array.from({ length: 20_000 }, (_, k) => {
    const c = cable(k, k + 1);
    c.expiresTick = k % 400 === 0 ? 9000 : 1000; // 50 outlive the peak
    cache.insert(c);
    return c;
  });
  assert.is(cache.slotCount, 65_536, '20k cables: 2^16 slots');
  let freed = 0;
  for (let call = 0; call < 64 && freed < 19_950; call++) freed += cache.removeExpired(5000, () => {}, 16_384);
  assert.is(freed, 19_950);
  assert.is(cache.size, 50);
  assert.is(cache.slotCount, 256, '50 cables a quarter full: 256 slots');
  for (const c of all.filter((x) => x.expiresTick === 9000)) assert.is(cache.findCable(c), c);
  assert.equal(cache.cablesOf(text(400)), [all[400]], 'the identity index is untouched');
  for (let k = 0; k < 1000; k++) cache.insert(cable(100_000 + k, k));
  assert.is(cache.size, 1050);
  assert.is(cache.slotCount, 4096, 'grown again: at least twice the cables');
  for (const c of all.filter((x) => x.expiresTick === 9000)) assert.is(cache.findCable(c), c);
  assert.is(cache.removeExpired(5000, () => {}), 0, 'a sweep with nothing to free leaves a table this full as it is');
  assert.is(cache.slotCount, 4096);
});

test('removeExpired frees no more cables a call than its removal budget, and its calls together free every expired cable', () => {
  const cache = new CableCache(3000);
  for (let k = 0; k < 3000; k++) {
    const c = cable(k, k + 1);
    c.expiresTick = k % 3 === 0 ? 9000 : 1000; // 2000 end together
    cache.insert(c);
  }
  const perCall: number[] = [];
  for (let n = cache.removeExpired(5000, () => {}, Infinity, 300); n > 0; n = cache.removeExpired(5000, () => {}, Infinity, 300)) perCall.push(n);
  assert.ok(perCall.every((n) => n <= 300), `at most 300 a call: ${perCall}`);
  assert.is(perCall.reduce((a, b) => a + b, 0), 2000, 'all of them, over the calls');
  assert.is(cache.size, 1000);
  for (const c of cache.all()) assert.is(c.expiresTick, 9000);
});

test('the identity index follows inserts, replacements, removals and evictions, for one cable and for many', () => {
  const cache = new CableCache(4);
  const [A, B, C, D, E, G] = [1, 2, 3, 4, 5, 20];
  const named = (src: number, dst: number): Cable => cable(src, dst);
  const sorted = (xs: readonly Cable[]): Cable[] => [...xs].sort((a, b) => a.hash - b.hash);
  const a = named(A, B);
  cache.insert(a);
  assert.equal(cache.cablesOf(text(A)), [a], 'one cable');
  assert.equal(cache.cablesOf(text(B)), [a]);
  const b = named(A, C);
  const c = named(A, D);
  cache.insert(b);
  cache.insert(c);
  assert.equal(sorted(cache.cablesOf(text(A))), sorted([a, b, c]), 'three cables of A');
  assert.equal(cache.cablesOf(text(C)), [b]);
  const self = named(E, E); // both ends the same identity: listed once
  cache.insert(self);
  assert.equal(cache.cablesOf(text(E)), [self]);
  const a2 = named(A, B); // the same pair again: replaces a
  cache.insert(a2);
  assert.equal(sorted(cache.cablesOf(text(A))), sorted([a2, b, c]), 'the replaced cable is gone from the index');
  assert.equal(cache.cablesOf(text(B)), [a2]);
  cache.remove(b);
  cache.remove(c);
  assert.equal(cache.cablesOf(text(A)), [a2], 'back to one');
  assert.equal(cache.cablesOf(text(C)), []);
  cache.remove(self);
  assert.equal(cache.cablesOf(text(E)), []);
  for (let k = 0; k < 4; k++) cache.insert(named(10 + k, G)); // one of the five evicted (the cache holds 4)
  assert.is(cache.evictions, 1);
  const left = [...cache.all()];
  assert.equal(sorted([...cache.cablesOf(text(A)), ...cache.cablesOf(text(G))]), sorted(left), 'an evicted cable leaves the index, the others stay');
  assert.equal(cache.cablesOf('not an address'), [], 'text that is no address: no cables');
  cache.clear();
  assert.equal(cache.cablesOf(text(G)), []);
});

test('identities whose index keys collide share an entry but are told apart by their bytes', () => {
  // Find two identities with the same 30-bit key (a birthday search: about 2^15 tries).
  const seen = new Map<number, number>();
  let pair: [number, number] | undefined;
  for (let n = 1; !pair; n++) {
    const k = identityKeyOf(id(n));
    const other = seen.get(k);
    if (other !== undefined) pair = [other, n];
    else seen.set(k, n);
  }
  const [x, y] = pair;
  assert.is(identityKeyOf(id(x)), identityKeyOf(id(y)));
  const cache = new CableCache(10);
  const cx = cable(x, 7);
  const cy = cable(8, y);
  cache.insert(cx);
  cache.insert(cy);
  assert.equal(cache.cablesOf(text(x)), [cx], `only ${text(x)}'s cable, not that of ${text(y)} under the same key`);
  assert.equal(cache.cablesOf(text(y)), [cy]);
  cache.remove(cx);
  assert.equal(cache.cablesOf(text(x)), []);
  assert.equal(cache.cablesOf(text(y)), [cy], 'the other stays indexed');
  assert.is(cx.srcText, text(x), "a cable's text is made from its words");
  assert.is(cy.dstText, text(y));
});

test('clear() forgets the per-port counts too, so a port\'s quota starts from nothing', () => {
  const cache = new CableCache(10);
  for (let k = 0; k < 3; k++) {
    const c = cable(1, 10 + k);
    c.srcPort = 0;
    cache.insert(c);
  }
  assert.is(cache.portCount(0), 3);
  cache.clear();
  assert.is(cache.portCount(0), 0);
  assert.is(cache.evictOldestOfPort(0), undefined, 'nothing of port 0 is left to evict');
});

test.run();
