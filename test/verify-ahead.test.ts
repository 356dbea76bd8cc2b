// Published bindings verified ahead one at a time (src/switch/verify-ahead.ts): never two at
// once, the event loop turning between them, the latest record of an identity only.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop } from '../src/base/drops.js';
import type { BindingRecord } from '../src/trust/records.js';
import { VerifyAhead } from '../src/switch/verify-ahead.js';

const record = (identity: string, epoch: number): BindingRecord => ({ identity, epoch } as unknown as BindingRecord);
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('bindings are verified one at a time, the event loop turning between two, the latest of an identity only', async () => {
  const seen: string[] = [];
  let inFlight = 0;
  let most = 0;
  let turnsBetween = 0;
  let ticking = true;
  const tick = (): void => {
    turnsBetween++;
    if (ticking) setImmediate(tick);
  };
  const ahead = new VerifyAhead(async (r) => {
    inFlight++;
    most = Math.max(most, inFlight);
    seen.push(`${r.identity}@${r.epoch}`);
    await turn();
    inFlight--;
    return Drop.None;
  }, (e) => assert.unreachable(String(e)));
  setImmediate(tick);
  ahead.add(record('a', 1));
  ahead.add(record('b', 1));
  ahead.add(record('a', 2)); // before a's first turn: a is verified once, at epoch 2
  ahead.add(record('c', 1));
  for (let k = 0; k < 20 && seen.length < 3; k++) await turn();
  ticking = false;
  assert.equal(seen, ['b@1', 'a@2', 'c@1']);
  assert.is(most, 1, 'never two verifications at once');
  assert.ok(turnsBetween >= 3, `the loop turned between them (${turnsBetween} turns)`);
});

test('a verification that throws is reported and the next one still runs', async () => {
  const seen: string[] = [];
  const bugs: unknown[] = [];
  const ahead = new VerifyAhead(async (r) => {
    seen.push(r.identity);
    if (r.identity === 'bad') throw new Error('broken');
    return Drop.None;
  }, (e) => bugs.push(e));
  ahead.add(record('bad', 1));
  ahead.add(record('good', 1));
  for (let k = 0; k < 10 && seen.length < 2; k++) await turn();
  assert.equal(seen, ['bad', 'good']);
  assert.is(bugs.length, 1);
});

test('past 4096 waiting, a published binding is left to its first packet and counted', async () => {
  let calls = 0;
  const ahead = new VerifyAhead(async () => {
    calls++;
    return undefined;
  }, (e) => assert.unreachable(String(e)));
  for (let k = 0; k < 4100; k++) ahead.add(record(`id${k}`, 1));
  assert.is(ahead.overflow, 4, 'the 4 past the bound');
  await turn();
  await turn();
  assert.ok(calls >= 1 && calls < 10, `verified one per turn, not all at once (${calls} after two turns)`);
});

test.run();
