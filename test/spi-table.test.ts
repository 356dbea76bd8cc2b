// The SPI table against a plain Map: random sets, replacements, deletes and lookups, with the
// table growing and shrinking through its sizes, and probe runs that wrap around its end.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SPI_MIN, SpiTable } from '../src/esp/spi-table.js';
import { rng } from './rng.js';

for (const [pool, ops] of [[12, 5_000], [300, 30_000], [5_000, 60_000]] as const) {
  test(`${ops} random operations on ${pool} SPIs agree with a Map at every step`, () => {
    const rand = rng(pool);
    // SPIs over the whole range: small, around 2^31 (negative as int32) and up to 2^32 - 1.
    const spis = Array.from({ length: pool }, (_, k) => (k % 3 === 0 ? SPI_MIN + k : k % 3 === 1 ? 0x80000000 + k : 0xffffffff - k));
    const table = new SpiTable<{ v: number }>();
    const map = new Map<number, { v: number }>();
    for (let k = 0; k < ops; k++) {
      const spi = spis[Math.floor(rand() * pool)];
      const r = rand();
      if (r < 0.5) {
        const v = { v: k };
        table.set(spi, v);
        map.set(spi, v);
      } else if (r < 0.85) {
        assert.is(table.delete(spi), map.delete(spi), `delete ${spi} at step ${k}`);
      } else {
        assert.is(table.get(spi), map.get(spi), `get ${spi} at step ${k}`);
      }
      assert.is(table.size, map.size, `size at step ${k}`);
      // Every so often, and at the end, the whole contents.
      if (k % 997 === 0 || k === ops - 1) {
        for (const s of spis) {
          assert.is(table.get(s), map.get(s), `get ${s} at step ${k}`);
          const slot = table.find(s); // the data path's lookup, in its two steps
          assert.is(slot < 0 ? undefined : table.valueAt(slot), map.get(s), `find ${s} at step ${k}`);
        }
        assert.equal(new Set(table.values()), new Set(map.values()), `values at step ${k}`);
      }
    }
    // Emptied one by one, it is empty.
    for (const s of [...map.keys()]) assert.ok(table.delete(s));
    assert.is(table.size, 0);
    for (const s of spis) assert.is(table.get(s), undefined);
  });
}

test('reserved SPIs and numbers that are not 32-bit SPIs are refused; a lookup of them finds nothing', () => {
  const t = new SpiTable<string>();
  for (const bad of [0, 1, 255, -1, 2 ** 32, 1.5, NaN]) assert.throws(() => t.set(bad, 'x'), RangeError, String(bad));
  t.set(256, 'a');
  t.set(0xffffffff, 'b');
  assert.is(t.get(0), undefined);
  assert.is(t.get(255), undefined);
  assert.is(t.delete(0), false);
  assert.is(t.get(256), 'a');
  assert.is(t.get(0xffffffff), 'b');
  assert.is(t.get(-1), 'b', 'the same 32 bits');
  assert.is(t.size, 2);
});

test('values() is a copy: deleting while walking it visits every entry once', () => {
  const t = new SpiTable<number>();
  for (let k = 0; k < 1000; k++) t.set(1000 + k * 7919, k);
  const seen = new Set<number>();
  for (const v of t.values()) {
    assert.not.ok(seen.has(v));
    seen.add(v);
    assert.ok(t.delete(1000 + v * 7919));
  }
  assert.is(seen.size, 1000);
  assert.is(t.size, 0);
});

test('scan() walks the table in slices from where the last one stopped; the slices of one pass cover every value once', () => {
  const t = new SpiTable<number>();
  for (let k = 0; k < 3000; k++) t.set(300 + k * 104_729, k);
  const seen: number[] = [];
  let at = 0;
  const slots = 8192; // 3000 entries, never more than half full: 8192 slots
  for (let k = 0; k < slots / 500 + 1; k++) at = t.scan(at, 500, (v) => seen.push(v));
  // 17 slices of 500 = 8500 slots: one pass and 308 slots of the next.
  const once = new Set(seen.slice(0, seen.length));
  assert.is(once.size, 3000, 'every value seen');
  assert.ok(seen.length >= 3000 && seen.length < 3000 + 308, `a pass and a little more: ${seen.length}`);
});

test.run();
