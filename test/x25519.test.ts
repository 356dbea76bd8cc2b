// X25519 public keys to and from their raw bytes (src/esp/x25519.ts): the RFC 7748 6.1
// example through them, a round trip, and a key of the wrong length refused.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createPrivateKey, diffieHellman, generateKeyPairSync } from 'node:crypto';
import { x25519PublicKey, x25519Raw } from '../src/esp/x25519.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
// RFC 7748 section 6.1.
const ALICE_PRIVATE = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
const ALICE_PUBLIC = hex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
const BOB_PUBLIC = hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
const SHARED = hex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');

test('the RFC 7748 example: Alice with Bob\'s raw public key gets K, and her public key is the raw bytes of the RFC', () => {
  const alice = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', x: ALICE_PUBLIC.toString('base64url'), d: ALICE_PRIVATE.toString('base64url') }, format: 'jwk' });
  assert.ok(diffieHellman({ privateKey: alice, publicKey: x25519PublicKey(BOB_PUBLIC) }).equals(SHARED));
  assert.ok(x25519Raw(alice).equals(ALICE_PUBLIC), 'the raw public key of a private key');
});

test('raw bytes and KeyObject round-trip, and a raw key of another length is refused', () => {
  const { publicKey } = generateKeyPairSync('x25519');
  const raw = x25519Raw(publicKey);
  assert.is(raw.length, 32);
  assert.ok(x25519PublicKey(raw).equals(publicKey));
  assert.throws(() => x25519PublicKey(raw.subarray(0, 31)));
  assert.throws(() => x25519PublicKey(Buffer.concat([raw, Buffer.alloc(1)])));
});

test.run();
