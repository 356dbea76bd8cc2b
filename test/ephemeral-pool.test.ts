// Ephemeral X25519 pairs made ahead: the pool fills itself in idle time, hands out each pair
// once, makes one on demand when empty, and stops after close.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EphemeralPool } from '../src/esp/ephemeral-pool.js';
import { ephemeralKey } from '../src/esp/handshake.js';

const idle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

/** Idle time until the pool holds `n` (at most 2 s: a pair takes well under a millisecond). */
async function filled(pool: EphemeralPool, n: number): Promise<void> {
  for (let t = 0; t < 100 && pool.available < n; t++) await idle();
}

test('fills in idle time, hands each pair out once, makes one on demand when empty', async () => {
  let made = 0;
  const pool = new EphemeralPool(3, () => {
    made++;
    return ephemeralKey();
  });
  assert.is(pool.available, 0, 'nothing made synchronously');
  await filled(pool, 3);
  assert.is(pool.available, 3);
  const keys = [pool.take(), pool.take(), pool.take(), pool.take()];
  assert.is(made, 4, 'the fourth was made on demand');
  assert.is(new Set(keys.map((k) => k.publicRaw.toString('hex'))).size, 4, 'all different');
  assert.ok(keys.every((k) => k.publicRaw.length === 32));
  await filled(pool, 3);
  assert.is(pool.available, 3, 'filled again, and no further');
  await idle();
  assert.is(pool.available, 3);
  pool.close();
  assert.is(pool.available, 0);
  const after = made;
  pool.take();
  await idle();
  assert.is(made, after + 1, 'after close: on demand only, no refill');
});

test.run();
