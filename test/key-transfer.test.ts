// A VM's key moved between hosts in a migration (src/trust/key-transfer.ts): sealed to the
// destination's signed offer it opens there and is the same key; a forged offer, a sealed key
// altered or answering another offer, and an ephemeral of the wrong length are refused.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync } from 'node:crypto';
import { makeOffer, openSealed, sealTo } from '../src/trust/key-transfer.js';

const destination = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const vmKey = generateKeyPairSync('ed25519').privateKey;

test('a key sealed to a signed offer opens at the destination as the same key', () => {
  const { offer, secret } = makeOffer('web2', 'h1', destination.privateKey);
  const opened = openSealed(sealTo(offer, destination.publicKey, vmKey), offer, secret);
  assert.ok(opened.export({ format: 'jwk' }).d === vmKey.export({ format: 'jwk' }).d);
});

test('a forged offer, an altered or misdirected sealed key, and a short ephemeral are refused', () => {
  const { offer, secret } = makeOffer('web2', 'h1', other.privateKey);
  assert.throws(() => sealTo(offer, destination.publicKey, vmKey), /not signed by host h1/);
  const good = makeOffer('web2', 'h1', destination.privateKey);
  const sealed = sealTo(good.offer, destination.publicKey, vmKey);
  const altered = Buffer.from(sealed.sealed, 'base64');
  altered[5] ^= 1;
  assert.throws(() => openSealed({ ...sealed, sealed: altered.toString('base64') }, good.offer, good.secret), /does not open/);
  assert.throws(() => openSealed(sealed, good.offer, secret), /does not open/, 'another offer\'s secret');
  assert.throws(() => openSealed({ ...sealed, vm: 'web3' }, good.offer, good.secret), /does not answer the offer/);
  assert.throws(() => openSealed({ ...sealed, ephemeral: Buffer.alloc(31).toString('base64') }, good.offer, good.secret), /32 bytes, got 31/);
});

test.run();
