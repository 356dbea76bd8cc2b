import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { MAX_HOLES, REPLAY_WINDOW, ReplayCheck, ReplayWindow } from '../src/esp/replay-window.js';

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

/** A window beside the model it must agree with: the numbers seen, and the top. */
function modelled() {
  const r = { w: new ReplayWindow(), seen: new Set<number>(), top: 0 };
  const want = (n: number): ReplayCheck => (n <= r.top - W ? LEFT : n === 0 || r.seen.has(n) ? REPLAY : OK);
  /** Receive n; fails unless the window answers as the model. */
  const send = (n: number, what = ''): void => {
    const expected = want(n);
    const got = receive(r.w, Math.floor(n / 2 ** 32), n % 2 ** 32);
    if (got !== expected) assert.unreachable(`${what} packet ${n} (top ${r.top}): got ${got}, want ${expected}`);
    if (got === OK) {
      r.seen.add(n);
      r.top = Math.max(r.top, n);
    }
  };
  /** Every number from `from` to `to`: checked against the model, nothing moved. */
  const agrees = (from: number, to: number, what: string): void => {
    for (let n = Math.max(0, from); n <= to; n++) {
      const got = r.w.check(Math.floor(n / 2 ** 32), n % 2 ** 32);
      if (got !== want(n)) assert.unreachable(`${what}: check ${n} (top ${r.top}): got ${got}, want ${want(n)}`);
    }
  };
  return { r, send, agrees };
}

test('a window keeps its top and up to 6 holes without blocks; a 7th hole gives it blocks, and the answers stay the same', () => {
  const before = ReplayWindow.stored.windows;
  const { r, send, agrees } = modelled();
  for (let n = 1; n <= 5000; n++) send(n, 'in order');
  assert.not.ok(r.w.hasBlocks, 'in order: no blocks');
  agrees(5000 - W - 10, 5010, 'in order');
  for (const n of [5003, 5001, 5006, 5009, 5011]) send(n, 'six holes'); // 5002, 5004, 5005, 5007, 5008, 5010 not received
  assert.equal([MAX_HOLES, r.w.hasBlocks], [6, false]);
  assert.is(ReplayWindow.stored.windows, before, 'no place taken in the store');
  agrees(5011 - W - 10, 5020, 'six holes');
  send(5004, 'late, into its hole');
  send(5004, 'and again');
  send(5013, 'a hole for the one filled'); // 5012
  assert.not.ok(r.w.hasBlocks);
  const saved = r.w.save();
  send(5015, 'a 7th hole'); // 5014
  assert.ok(r.w.hasBlocks, 'seven holes: blocks');
  assert.is(ReplayWindow.stored.windows, before + 1);
  agrees(5015 - W - 10, 5025, 'with blocks');
  for (const n of [5002, 5005, 5007, 5014, 5002, 5016]) send(n, 'late, with blocks');
  const again = new ReplayWindow();
  again.load(saved);
  const got = [5002, 5004, 5005, 5007, 5008, 5009, 5010, 5011, 5012, 5013].map((n) => again.check(0, n));
  assert.equal(got, [OK, REPLAY, OK, OK, OK, REPLAY, OK, REPLAY, OK, REPLAY], 'a window saved without blocks carries its holes over');
  assert.not.ok(again.hasBlocks, 'and is loaded without blocks');
  const big = new ReplayWindow();
  assert.is(receive(big, 1, 7), OK, 'a first number in a higher 2^32 subspace skips more than 6 inside the window: blocks');
  assert.ok(big.hasBlocks);
  assert.is(receive(big, 1, 7), REPLAY);
  assert.is(receive(big, 1, 6), OK);
  const idle = new ReplayWindow();
  idle.release();
  assert.is(ReplayWindow.stored.windows, before + 2, 'a window released without blocks gives nothing back');
  assert.is(idle.check(0, 1), LEFT);
  for (const w of [r.w, again, big]) w.release();
  assert.is(ReplayWindow.stored.windows, before);
});

test('holes that fall left of the window go: a lost packet costs a hole only for the next 2016 numbers', () => {
  const { r, send, agrees } = modelled();
  for (let n = 1; n <= 110; n++) if (n % 20 !== 0) send(n, 'five lost'); // 20, 40, 60, 80, 100 lost
  const lost = new Set([150, 2150, 2160]);
  for (let n = 111; n <= 2226; n++) if (!lost.has(n)) send(n, 'three more lost'); // 8 in all
  assert.not.ok(r.w.hasBlocks, '20 to 100 went left of the window before a 7th hole came');
  agrees(r.top - W - 5, r.top + 5, 'after the holes went');
  send(2150, 'late');
  assert.not.ok(r.w.hasBlocks);
  agrees(r.top - W - 5, r.top + 5, 'after the late one');
});

test('shrink: a window whose losses fell behind gives its blocks back and answers as before; one with 7 holes keeps them; the sweep asks a bounded number of windows, from where it stopped', () => {
  const before = ReplayWindow.stored.windows;
  const { r, send, agrees } = modelled();
  for (let n = 1; n <= 3000; n++) if (n % 500 !== 0 && n !== 2990 && n !== 2995) send(n, 'lossy'); // holes 2500, 2990, 2995 (and older ones gone left)
  send(2999 + 10, 'a jump: more holes'); // 3000..3008 skipped: blocks
  assert.ok(r.w.hasBlocks);
  assert.not.ok(r.w.shrink(), 'many holes inside the window: it keeps its blocks');
  for (let n = 3010; n <= 3010 + W; n++) send(n, 'in order until the holes fall behind');
  send(3010 + W + 2, 'one new hole'); // 3010 + W + 1
  assert.ok(r.w.hasBlocks, 'still holding blocks');
  assert.is(ReplayWindow.stored.windows, before + 1);
  assert.ok(r.w.shrink(), 'one hole: the blocks go back');
  assert.not.ok(r.w.hasBlocks);
  assert.is(ReplayWindow.stored.windows, before, 'its place is free');
  agrees(r.top - W - 10, r.top + 10, 'after shrink');
  send(3010 + W + 1, 'late, into its hole, without blocks');
  const t = r.top;
  for (let n = t + 2; n <= t + 14; n += 2) send(n, 'holes again'); // blocks again at the 7th
  assert.ok(r.w.hasBlocks, 'it takes blocks again when it needs them');
  agrees(r.top - W - 10, r.top + 10, 'with blocks again');

  // The sweep's walk: windows with blocks, some that can give them back.
  const lossy = (holes: number): ReplayWindow => {
    const w = new ReplayWindow();
    receive(w, 0, 100); // 1..99 skipped: blocks
    for (let n = 1; n < 100; n++) if (n > holes) receive(w, 0, n);
    return w;
  };
  const ws = [lossy(1), lossy(8), lossy(2), lossy(7), lossy(0)];
  assert.ok(ws.every((w) => w.hasBlocks));
  const stored = ReplayWindow.stored.windows;
  const first = ReplayWindow.shrink(1);
  assert.ok(first <= 1, 'one window asked, at most one gave');
  let gave = first;
  for (let k = 1; k < stored; k++) gave += ReplayWindow.shrink(1); // one whole turn, a window at a time
  assert.equal(ws.map((w) => w.hasBlocks), [false, true, false, true, false], 'lossy(8) and lossy(7) keep theirs (more than 6 holes)');
  assert.ok(r.w.hasBlocks, 'and so does the first window (7 holes)');
  assert.ok(gave >= 3, `the three others gave theirs back: ${gave}`);
  assert.is(ReplayWindow.stored.windows, stored - gave);
  assert.equal([1, 2, 3].map((n) => ws[2].check(0, n)), [OK, OK, REPLAY], 'holes 1 and 2 carried over');
  for (const w of [...ws, r.w]) w.release();
  assert.is(ReplayWindow.stored.windows, before);
});

/** Saved blocks of a window that received every number up to `lo` (high half 0), and nothing above. */
function receivedUpTo(lo: number): number[] {
  const bits = new Array<number>(64).fill(0xffff_ffff);
  const t = lo & 31;
  bits[(lo >>> 5) & 63] = t === 31 ? 0xffff_ffff : 2 ** (t + 1) - 1;
  return bits;
}

test('across the 2^32 boundary without blocks: holes on both sides keep their high half', () => {
  const { r, send, agrees } = modelled();
  const top = 2 ** 32 - 3;
  r.w.load({ hi: 0, lo: top, bits: receivedUpTo(top) });
  r.top = top;
  for (let n = top - W + 1; n <= top; n++) r.seen.add(n);
  assert.not.ok(r.w.hasBlocks, 'a saved window without holes is loaded without blocks');
  for (const n of [2 ** 32 - 1, 2 ** 32 + 1, 2 ** 32 + 3]) send(n, 'across'); // holes 2^32 - 2, 2^32, 2^32 + 2
  assert.not.ok(r.w.hasBlocks, 'three holes');
  agrees(top - W - 5, 2 ** 32 + 10, 'three holes across 2^32');
  send(2 ** 32, 'late, above 2^32');
  agrees(top - W - 5, 2 ** 32 + 10, 'two holes left, one on each side');
  const from = 2 ** 32 + 4;
  for (let n = from; n <= from + W; n++) send(n, 'in order, until both holes are left of the window');
  agrees(from + W - W - 10, from + W + 5, 'the holes went');
  send(from + W + 6, 'five new holes'); // the two old ones must have gone, or this makes 7
  assert.not.ok(r.w.hasBlocks, 'the holes on both sides of 2^32 went when they fell left of the window');
  send(from + W + 9, 'two more'); // 7 in all
  assert.ok(r.w.hasBlocks);
  agrees(from - 5, from + W + 20, 'with blocks, after 2^32');
  for (const n of [from + W + 1, from + W + 7, from + W + 7]) send(n, 'late, with blocks');
  r.w.release();
});

test('a saved window with more than 6 holes is loaded with blocks; sequence number 0 is never a hole', () => {
  const bits = receivedUpTo(100);
  bits[1] &= ~((1 << 1) | (1 << 5) | (1 << 9) | (1 << 20) | (1 << 25) | (1 << 28)); // 33, 37, 41, 52, 57, 60 not received
  bits[2] &= ~(1 << 3); // nor 67
  const w = new ReplayWindow();
  w.load({ hi: 0, lo: 100, bits });
  assert.ok(w.hasBlocks);
  assert.equal([33, 37, 41, 52, 57, 60, 67, 34, 0].map((n) => w.check(0, n)), [OK, OK, OK, OK, OK, OK, OK, REPLAY, REPLAY]);
  bits[2] |= 1 << 3; // six holes: loaded without blocks, with the same answers
  const six = new ReplayWindow();
  six.load({ hi: 0, lo: 100, bits });
  assert.not.ok(six.hasBlocks);
  assert.equal([33, 37, 41, 52, 57, 60, 67, 34, 0].map((n) => six.check(0, n)), [OK, OK, OK, OK, OK, OK, REPLAY, REPLAY, REPLAY]);
  six.release();
  const young = new ReplayWindow();
  young.load({ hi: 0, lo: 5, bits: receivedUpTo(5).map((x, i) => (i === 0 ? x : 0)) }); // blocks for "numbers" below 0 are empty
  assert.not.ok(young.hasBlocks, 'nothing below 1 counts as a hole');
  assert.equal([0, 1, 5, 6].map((n) => young.check(0, n)), [REPLAY, REPLAY, REPLAY, OK]);
  w.release();
  young.release();
});

test('property: windows with few holes (in order, with lost and late numbers), their blocks given back now and then, answer as the set of numbers seen', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ step: fc.integer({ min: 1, max: 6 }), lateBy: fc.integer({ min: 0, max: 2 * W + 64 }), late: fc.boolean(), shrink: fc.boolean() }), { maxLength: 400 }),
      fc.boolean(),
      (moves, nearWrap) => {
        const { r, send } = modelled();
        let next = nearWrap ? 2 ** 32 - 300 : 0;
        if (nearWrap) {
          // Start in order just below 2^32: W numbers, so the window is full and without holes.
          for (let n = next - W; n <= next; n++) if (n > 0) send(n);
        }
        for (const m of moves) {
          next += m.step; // a step of more than 1 loses numbers (holes)
          send(next);
          if (m.late && next - m.lateBy > 0) send(next - m.lateBy); // late: a hole filled, a replay, or left of the window
          if (m.shrink) r.w.shrink(); // the sweep, between packets: blocks back when the holes are few again
        }
        r.w.release();
        return true;
      },
    ),
    { numRuns: 400 },
  );
});

test('property: a loss burst gives a window blocks; given back as its holes fall behind or are filled, it answers every number as the set of numbers seen', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3000 }),
      fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 2, maxLength: 8 }),
      fc.integer({ min: 0, max: 2 * W + 100 }),
      fc.array(fc.nat(), { maxLength: 10 }),
      fc.integer({ min: 0, max: 2 * W + 100 }),
      fc.integer({ min: 1, max: 300 }),
      (start, gaps, run, late, lateAt, every) => {
        const { r, send, agrees } = modelled();
        for (let n = 1; n <= start; n++) send(n);
        let n = start;
        const holes: number[] = [];
        for (const g of gaps) {
          for (let k = 1; k <= g; k++) holes.push(n + k);
          n += g + 1;
          send(n); // g numbers skipped: holes
        }
        for (let k = 0; k <= run; k++) {
          send(++n);
          if (k === lateAt) for (const i of late) send(holes[i % holes.length], 'late'); // a hole filled, a replay, or left of the window
          if (k % every === 0 && r.w.shrink()) agrees(r.top - W - 3, r.top + 3, 'after shrink');
        }
        r.w.release();
        return true;
      },
    ),
    { numRuns: 300 },
  );
});

test('property: near the start, any order of numbers gets what the set of numbers seen says, with or without blocks given back between them', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 2 * W + 64 })), { maxLength: 120 }), fc.integer({ min: 0, max: 7 }), (ns, every) => {
      const w = new ReplayWindow();
      const seen = new Set<number>();
      let top = 0;
      for (const [k, n] of ns.entries()) {
        const want = n <= top - W ? LEFT : n === 0 || seen.has(n) ? REPLAY : OK;
        if (receive(w, 0, n) !== want) return false;
        if (want === OK) {
          seen.add(n);
          top = Math.max(top, n);
        }
        if (every > 0 && k % every === 0) w.shrink(); // 0: never
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
  assert.is(after.windows, before.windows + kept.filter((r) => r.w.hasBlocks).length);
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
