import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { REPLAY_WINDOW, ReplayCheck, ReplayWindow } from '../src/esp/replay-window.js';

const W = REPLAY_WINDOW;
const OK = ReplayCheck.Ok;
const REPLAY = ReplayCheck.Replay;
const LEFT = ReplayCheck.LeftOfWindow;

/** Receive (check, then accept when Ok, as after a verified ICV) and return the check result. */
function receive(w: ReplayWindow, hi: number, lo: number): ReplayCheck {
  const r = w.check(hi, lo);
  if (r === OK) w.accept(hi, lo);
  return r;
}

// A numbered table, read top to bottom against one window: each row is a packet and what it must get.
const TABLE: [number, number, ReplayCheck][] = [
  /* 1 */ [0, 0, REPLAY], // sequence number 0 is never valid
  /* 2 */ [0, 1, OK],
  /* 3 */ [0, 1, REPLAY],
  /* 4 */ [0, 3, OK],
  /* 5 */ [0, 2, OK], // late but inside the window
  /* 6 */ [0, 2, REPLAY],
  /* 7 */ [0, W, OK], // the window is now [1, W]
  /* 8 */ [0, 1, REPLAY], // still inside, and seen
  /* 9 */ [0, W + 1, OK], // window [2, W + 1]
  /* 10 */ [0, 1, LEFT],
  /* 11 */ [0, 2, REPLAY],
  /* 12 */ [0, W + 2, OK], // window [3, W + 2]
  /* 13 */ [0, 2, LEFT],
  /* 14 */ [0, 3, REPLAY],
  /* 15 */ [0, 5 * W, OK], // a jump clears every block
  /* 16 */ [0, 4 * W + 1, OK], // the bottom of the new window
  /* 17 */ [0, 4 * W + 1, REPLAY],
  /* 18 */ [0, 4 * W, LEFT],
  /* 19 */ [0, 5 * W - 1, OK],
  /* 20 */ [0, 5 * W - 1, REPLAY],
  /* 21 */ [0, 5 * W, REPLAY],
];

test('the numbered table: replays, late packets inside the window, packets left of it', () => {
  const w = new ReplayWindow();
  TABLE.forEach(([hi, lo, want], k) => {
    assert.is(receive(w, hi, lo), want, `row ${k + 1}: (${hi}, ${lo})`);
  });
});

test('check alone never moves the window: a packet that failed authentication can come again', () => {
  const w = new ReplayWindow();
  assert.is(w.check(0, 100), OK);
  assert.is(w.check(0, 100), OK);
  assert.equal(w.top(), [0, 0]);
  w.accept(0, 100);
  assert.is(w.check(0, 100), REPLAY);
});

test('the window is at least 1024 packets wide', () => {
  assert.ok(W >= 1024, `window ${W}`);
  const w = new ReplayWindow();
  receive(w, 0, 5000);
  assert.is(w.check(0, 5000 - 1024), OK);
  assert.is(w.check(0, 5000 - W + 1), OK);
  assert.is(w.check(0, 5000 - W), LEFT);
});

test('the high half is inferred across the 2^32 boundary (RFC 4303 appendix A)', () => {
  const w = new ReplayWindow();
  receive(w, 0, 0xffff_fff0);
  assert.is(w.inferHigh(0xffff_fff8), 0, 'just above the top: same subspace');
  assert.is(w.inferHigh(5), 1, 'a small low half after a high top: the next subspace');
  assert.is(receive(w, w.inferHigh(5), 5), OK);
  assert.equal(w.top(), [1, 5]);
  // Now the window spans two subspaces (case B): a late packet from below 2^32.
  assert.is(w.inferHigh(0xffff_fff8), 0);
  assert.is(receive(w, 0, 0xffff_fff8), OK);
  assert.is(receive(w, 0, 0xffff_fff8), REPLAY);
  assert.is(receive(w, 0, 0xffff_fff0), REPLAY);
  assert.is(receive(w, w.inferHigh(6), 6), OK);
});

test('an old packet below the window is left of it, not a guess at the next 2^32 subspace', () => {
  const w = new ReplayWindow();
  receive(w, 0, W + 10);
  assert.is(w.inferHigh(1), 0);
  assert.is(w.check(w.inferHigh(1), 1), LEFT);
  receive(w, 0, 0xffff_fff0);
  assert.is(w.inferHigh(3), 1, 'a small number after a top near 2^32 is ahead, in the next subspace');
  assert.is(w.inferHigh(0x9000_0000), 0, 'far below the top and not close ahead: old');
  assert.is(w.check(0, 0x9000_0000), LEFT);
});

test('below the first packet there is no high half to infer: left of the window', () => {
  const w = new ReplayWindow();
  receive(w, 0, 10);
  const hi = w.inferHigh(0xffff_ff00);
  assert.is(hi, -1);
  assert.is(w.check(hi, 0xffff_ff00), LEFT);
});

test('a differential run against a set of every number seen agrees on every packet', () => {
  // Reference: the window accepts n iff n > top - W and n was not seen, with n >= 1.
  let seed = 12345;
  const rand = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
  const w = new ReplayWindow();
  const seen = new Set<number>();
  let top = 0;
  for (let k = 0; k < 200_000; k++) {
    const jitter = (rand() % (2 * W + 64)) - W - 32;
    const n = Math.max(0, top + jitter + (rand() % 3 === 0 ? 40 : 0));
    const want = n === 0 || seen.has(n) ? REPLAY : n <= top - W ? LEFT : OK;
    const got = receive(w, Math.floor(n / 2 ** 32), n % 2 ** 32);
    if (got !== want) assert.unreachable(`packet ${k}: n=${n} top=${top}: got ${got}, want ${want}`);
    if (got === OK) {
      seen.add(n);
      top = Math.max(top, n);
    }
  }
});

test('windows share chunks of blocks and stay apart: 600 windows, interleaved, each against its own set of numbers seen', () => {
  let seed = 99;
  const rand = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
  const windows = Array.from({ length: 600 }, () => ({ w: new ReplayWindow(), seen: new Set<number>(), top: 0 })); // in one chunk
  for (let k = 0; k < 300_000; k++) {
    const r = windows[rand() % windows.length];
    const n = Math.max(0, r.top + (rand() % (2 * W + 64)) - W - 32 + (rand() % 3 === 0 ? 40 : 0));
    const want = n <= r.top - W ? LEFT : n === 0 || r.seen.has(n) ? REPLAY : OK;
    const got = receive(r.w, 0, n);
    if (got !== want) assert.unreachable(`packet ${k}: n=${n} top=${r.top}: got ${got}, want ${want}`);
    if (got === OK) {
      r.seen.add(n);
      r.top = Math.max(r.top, n);
    }
  }
});

test('a window takes its blocks only when its top reaches 32, and answers the same before and after', () => {
  const model = (w: { seen: Set<number>; top: number }, n: number): ReplayCheck =>
    n <= w.top - W ? LEFT : n === 0 || w.seen.has(n) ? REPLAY : OK;
  const r = { w: new ReplayWindow(), seen: new Set<number>(), top: 0 };
  const got = (n: number): void => {
    r.seen.add(n);
    r.top = Math.max(r.top, n);
  };
  const before = ReplayWindow.stored.windows;
  const order = [5, 1, 31, 3, 3, 0, 17, 30, 2, 31, 29]; // below 32, out of order, with replays
  for (const n of order) {
    const want = model(r, n);
    assert.is(receive(r.w, 0, n), want, `packet ${n} before the blocks`);
    if (want === OK) got(n);
  }
  assert.not.ok(r.w.hasBlocks, 'top 31: no blocks yet');
  assert.is(ReplayWindow.stored.windows, before, 'no place taken in the store');
  for (let n = 0; n <= 40; n++) assert.is(r.w.check(0, n), model(r, n), `check ${n} without blocks`);
  const saved = r.w.save();
  assert.is(saved.bits.length, 64, 'a window without blocks saves all 64 of them');
  for (const n of [40, 4, 33, 32, 6, 40]) {
    const want = model(r, n);
    assert.is(receive(r.w, 0, n), want, `packet ${n} across the change`);
    if (want === OK) got(n);
  }
  assert.ok(r.w.hasBlocks, 'top 40: it has its blocks');
  assert.is(ReplayWindow.stored.windows, before + 1);
  for (let n = 0; n <= 80; n++) assert.is(r.w.check(0, n), model(r, n), `check ${n} with blocks`);
  const again = new ReplayWindow();
  again.load(saved);
  for (const n of [1, 2, 3, 5, 17, 29, 30, 31]) assert.is(again.check(0, n), REPLAY, `the saved window still has ${n}`);
  assert.is(again.check(0, 4), OK);
  const big = new ReplayWindow();
  assert.is(receive(big, 1, 7), OK, 'a first number in a higher 2^32 subspace takes the blocks at once');
  assert.ok(big.hasBlocks);
  assert.is(receive(big, 1, 7), REPLAY);
  const idle = new ReplayWindow();
  idle.release();
  assert.is(ReplayWindow.stored.windows, before + 3, 'a window released without blocks gives nothing back');
  assert.is(idle.check(0, 1), LEFT);
  for (const w of [r.w, again, big]) w.release();
  assert.is(ReplayWindow.stored.windows, before);
});

test('property: around the change to blocks, any order of numbers gets what the set of numbers seen says', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 2 * W + 64 })), { maxLength: 120 }), (ns) => {
      const w = new ReplayWindow();
      const seen = new Set<number>();
      let top = 0;
      for (const n of ns) {
        const want = n <= top - W ? LEFT : n === 0 || seen.has(n) ? REPLAY : OK;
        if (receive(w, 0, n) !== want) return false;
        if (want === OK) {
          seen.add(n);
          top = Math.max(top, n);
        }
      }
      w.release();
      return true;
    }),
    { numRuns: 3000 },
  );
});

test('a released window refuses every packet and moves nothing; its blocks go to a new window, which starts empty', () => {
  const old = new ReplayWindow();
  for (let n = 1; n <= 3000; n++) receive(old, 0, n);
  const saved = old.save();
  old.release();
  old.release(); // twice: the second does nothing
  assert.is(old.check(0, 3001), LEFT, 'no packet passes a released window');
  assert.is(old.check(0, 10_000), LEFT);
  const fresh = new ReplayWindow(); // takes the released blocks
  old.accept(0, 3001); // a caller that ignored check(): nothing happens, to either window
  assert.equal(old.top(), [0, 3000]);
  for (let n = 1; n <= 40; n++) assert.is(receive(fresh, 0, n), OK, `packet ${n}: the new window starts empty`);
  assert.is(receive(fresh, 0, 0), REPLAY, 'sequence number 0 is still never valid');
  assert.throws(() => old.load(saved), /released/);
  const again = new ReplayWindow();
  again.load(saved);
  assert.is(receive(again, 0, 3000), REPLAY, 'a saved window carries over to a live one');
  assert.is(receive(again, 0, 3001), OK);
  fresh.release();
  again.release();
});

test('after a peak the windows left are moved together and the chunks freed go back; each still answers as before', () => {
  const before = ReplayWindow.stored; // windows of the tests before this one live here too
  const model = (w: { seen: Set<number>; top: number }, n: number): ReplayCheck =>
    n <= w.top - W ? LEFT : n === 0 || w.seen.has(n) ? REPLAY : OK;
  const filled = (i: number) => {
    const r = { w: new ReplayWindow(), seen: new Set<number>(), top: 0 };
    for (let k = 0; k < 1 + (i % 40); k++) {
      const n = 1 + ((i * 7919 + k * 2654435) % 3000);
      if (receive(r.w, 0, n) === OK) {
        r.seen.add(n);
        r.top = Math.max(r.top, n);
      }
    }
    return r;
  };
  const all = Array.from({ length: 20_000 }, (_, i) => filled(i));
  const peak = ReplayWindow.stored;
  assert.ok(peak.chunks - before.chunks >= 4, `20,000 windows take 5 chunks of 4096 (${before.chunks} -> ${peak.chunks})`);
  const kept = all.filter((_, i) => i % 50 === 0); // 400, spread over every chunk
  for (const [i, r] of all.entries()) if (i % 50 !== 0) r.w.release();
  let dropped = 0;
  for (let d = ReplayWindow.compact(4); d > 0; d = ReplayWindow.compact(4)) {
    assert.ok(d <= 4, 'no more chunks a call than asked for');
    dropped += d;
  }
  const after = ReplayWindow.stored;
  assert.is(after.windows, before.windows + kept.filter((r) => r.top >= 32).length, 'windows whose top stayed below 32 hold no blocks');
  assert.is(after.chunks, peak.chunks - dropped);
  assert.ok(dropped >= 3, `chunks given back: ${dropped}`);
  assert.ok(after.windows * 2 > (after.chunks - 1) * 4096, 'compacted until the windows fill half of the chunks left');
  for (const [k, r] of kept.entries()) {
    for (let n = 0; n <= 3100; n++) {
      if (r.w.check(0, n) !== model(r, n)) assert.unreachable(`kept window ${k}, packet ${n}: got ${r.w.check(0, n)}, want ${model(r, n)}`);
    }
  }
  // New windows take the free places left among the kept ones, start empty, and touch no kept one.
  const fresh = Array.from({ length: 300 }, () => new ReplayWindow());
  for (const f of fresh) for (let n = 1; n <= 40; n++) assert.is(f.check(0, n), OK, 'a new window starts empty');
  for (const f of fresh) for (let n = 1; n <= 3000; n += 3) receive(f, 0, n);
  for (const r of kept) for (let n = 1; n <= 3000; n += 97) assert.is(r.w.check(0, n), model(r, n));
  // A second peak takes the dropped chunks' places again. A moved window, released, frees its
  // new place and not the old one, which another window holds by now: the windows made after
  // it must not share blocks with that one.
  const second = Array.from({ length: 12_000 }, (_, i) => filled(i + 1));
  for (const r of kept) r.w.release();
  const third = Array.from({ length: 300 }, () => new ReplayWindow());
  for (const w of third) for (let n = 1; n <= 3000; n += 3) receive(w, 0, n);
  for (const [k, r] of second.entries()) {
    for (let n = 1; n <= 3000; n += 29) if (r.w.check(0, n) !== model(r, n)) assert.unreachable(`second peak, window ${k}, packet ${n}`);
  }
  for (const w of [...fresh, ...third, ...second.map((r) => r.w)]) w.release();
});

test.run();
