// Ticks (src/base/ticks.ts): times as int32 milliseconds modulo 2^32 compare as the times
// themselves do while they are less than 2^31 ms apart, across the wrap too; and the records
// that keep them (cables in the cache, outbound SAs) expire, refresh and rekey across it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { deadline, earlier, MAX_AHEAD_MS, msOf, reached, tickOf } from '../src/base/ticks.js';
import { Drop } from '../src/base/drops.js';
import { Cable, CableDirection } from '../src/dataplane/cable.js';
import { CableCache } from '../src/dataplane/cable-cache.js';
import { DEFAULT_HARD_SEQ, InboundSa, OutboundSa } from '../src/esp/sa.js';

/** Milliseconds since 1970 up to about 2248; and offsets of less than 2^31 ms either way. */
const time = fc.integer({ min: 0, max: 2 ** 43 });
const offset = fc.integer({ min: -(2 ** 31) + 1, max: 2 ** 31 - 1 });
/** 5 s before the tick wraps from 2^31 - 1 to -2^31, in 2026. */
const BEFORE_WRAP = Math.floor(Date.UTC(2026, 11, 4) / 2 ** 32) * 2 ** 32 + 2 ** 31 - 5000;

test('reached, earlier and msOf agree with the times they stand for, less than 2^31 ms apart', () => {
  fc.assert(fc.property(time, offset, (a, d) => {
    const b = a + d;
    assert.is(reached(tickOf(b), tickOf(a)), b >= a);
    assert.is(reached(tickOf(a), tickOf(b)), a >= b);
    assert.is(earlier(tickOf(a), tickOf(b)), tickOf(Math.min(a, b)));
    assert.is(msOf(a, tickOf(b)), b);
  }), { numRuns: 20_000 });
  assert.ok(tickOf(BEFORE_WRAP + 5000) < 0 && tickOf(BEFORE_WRAP) > 0, 'the wrap lies between them');
  assert.ok(reached(tickOf(BEFORE_WRAP + 5000), tickOf(BEFORE_WRAP + 4999)), 'across the wrap');
});

test('deadline: at most MAX_AHEAD_MS ahead, Infinity included; nearer ones as they are', () => {
  fc.assert(fc.property(time, fc.integer({ min: -(2 ** 30), max: 2 ** 30 }), (now, ahead) => {
    assert.is(deadline(now, now + ahead), tickOf(now + ahead));
  }), { numRuns: 5000 });
  assert.is(deadline(BEFORE_WRAP, Infinity), tickOf(BEFORE_WRAP + MAX_AHEAD_MS));
  assert.is(deadline(BEFORE_WRAP, BEFORE_WRAP + 2 ** 40), tickOf(BEFORE_WRAP + MAX_AHEAD_MS));
  assert.not.ok(reached(tickOf(BEFORE_WRAP + MAX_AHEAD_MS - 1), deadline(BEFORE_WRAP, Infinity)), '"never" holds for 12.4 days');
});

function cable(k: number, now: number): Cable {
  const s = Buffer.alloc(16, 1);
  const d = Buffer.alloc(16, 2);
  d.writeUInt32BE(k, 12);
  return new Cable(CableDirection.Egress, s, d, Drop.None, 'test', null, now);
}

test('cables plugged 5 s before the wrap are swept when their time comes after it, not before', () => {
  const cache = new CableCache(100);
  const soon = cable(1, BEFORE_WRAP);
  soon.lasts(BEFORE_WRAP, BEFORE_WRAP + 1000, BEFORE_WRAP + 10_000);
  const never = cable(2, BEFORE_WRAP);
  never.lasts(BEFORE_WRAP, Infinity, Infinity);
  const fresh = cable(3, BEFORE_WRAP);
  cache.insert(soon);
  cache.insert(never);
  cache.insert(fresh);
  assert.is(cache.removeExpired(BEFORE_WRAP, () => {}), 1, 'a cable without a life given is a miss at once');
  assert.is(cache.findCable(fresh), undefined);
  assert.is(cache.removeExpired(BEFORE_WRAP + 9_999, () => {}), 0, '5 s after the wrap, 1 ms before its end');
  assert.ok(reached(tickOf(BEFORE_WRAP + 9_999), soon.refreshTick), 'due for its refresh');
  assert.is(cache.removeExpired(BEFORE_WRAP + 10_000, () => {}), 1);
  assert.is(cache.findCable(soon), undefined);
  assert.is(cache.removeExpired(BEFORE_WRAP + MAX_AHEAD_MS - 1, () => {}), 0, 'Infinity lasts 12.4 days');
  assert.is(cache.findCable(never), never);
});

test('an inbound SA is current until retireBy; then it ends at the earliest tick it was given, at -2^31 (the tick kept for "current") too, 1 ms later', () => {
  fc.assert(fc.property(time, fc.array(offset, { minLength: 1, maxLength: 4 }), (now, ends) => {
    const sa = new InboundSa(0x100, 0, 1, null);
    assert.ok(sa.current);
    const ticks = ends.map((e) => tickOf(now + e));
    for (const t of ticks) sa.retireBy(t);
    assert.not.ok(sa.current);
    const first = ticks.reduce((a, b) => earlier(a, b));
    assert.is(sa.retireTick, first === -(2 ** 31) ? first + 1 : first);
  }));
  const edge = new InboundSa(0x101, 0, 1, null);
  edge.retireBy(-(2 ** 31));
  assert.equal([edge.current, edge.retireTick], [false, -(2 ** 31) + 1]);
  edge.retireBy(-(2 ** 31) + 5); // later: the earlier end stays
  assert.is(edge.retireTick, -(2 ** 31) + 1);
  edge.retireBy(-(2 ** 31) - 1 | 0); // 2^31 - 1: 2 ms earlier across the wrap
  assert.is(edge.retireTick, 2 ** 31 - 1);
});

test('an outbound SA asks for its rekey by age across the wrap, and at 12.4 days at the latest', () => {
  const limits = { softPackets: 1e9, softBytes: 1e12, softAgeMs: 60_000, hardSeq: DEFAULT_HARD_SEQ };
  const sa = new OutboundSa(0x1234, 0, BEFORE_WRAP, limits);
  assert.not.ok(sa.wantsRekey(BEFORE_WRAP + 59_999));
  assert.ok(sa.wantsRekey(BEFORE_WRAP + 60_000));
  const long = new OutboundSa(0x1235, 0, BEFORE_WRAP, { ...limits, softAgeMs: 30 * 86_400_000 });
  assert.not.ok(long.wantsRekey(BEFORE_WRAP + MAX_AHEAD_MS - 1));
  assert.ok(long.wantsRekey(BEFORE_WRAP + MAX_AHEAD_MS));
});

test.run();
