// Moving a VM's private key from the host it leaves to the host it goes to, sealed so that
// only the destination can open it (NVI Algorithm step 6: the destination takes over the VM's
// entry and signs its binding; it needs the VM's key for that, and the source must not keep it).
//
//   1. offer (destination): an ephemeral X25519 public key, signed with the destination's
//      host key: "nvi-switch key offer v1" 0x00 || vm || destination host || ephemeral;
//   2. seal (source): checks the offer's signature with the destination's certified host key,
//      makes its own ephemeral X25519 key, and seals the VM key (PKCS#8 DER) with AES-256-GCM
//      under HKDF-SHA256(X25519 shared secret, salt = both ephemerals, info = context || vm);
//   3. open (destination): the same key from its ephemeral private key, which never leaves it.
// Both ephemerals are used once: a sealed key recorded on the way cannot be opened later, even
// with the destination's host key.

import {
  createCipheriv, createDecipheriv, createPrivateKey, diffieHellman, generateKeyPairSync, hkdfSync,
  randomBytes, sign, verify, type KeyObject,
} from 'node:crypto';
import { NviError } from '../base/errors.js';
import { x25519PublicKey, x25519Raw } from '../esp/x25519.js';

const OFFER_CONTEXT = Buffer.from('nvi-switch key offer v1\0');
const SEAL_INFO = Buffer.from('nvi-switch key seal v1\0');

export interface KeyOffer {
  readonly vm: string;
  readonly host: string;
  /** Raw X25519 public key, base64. */
  readonly ephemeral: string;
  /** Ed25519 by the destination's host key, base64. */
  readonly signature: string;
}

export interface SealedKey {
  readonly vm: string;
  readonly ephemeral: string;
  readonly nonce: string;
  /** AES-256-GCM ciphertext and tag, base64. */
  readonly sealed: string;
}

function refuse(message: string): never {
  throw new NviError('NVI_ERR_KEY_TRANSFER', message);
}

function x25519Public(raw: Buffer): KeyObject {
  if (raw.length !== 32) refuse(`an X25519 key has 32 bytes, got ${raw.length}`);
  return x25519PublicKey(raw);
}

function offerMessage(vm: string, host: string, ephemeral: Buffer): Buffer {
  return Buffer.concat([OFFER_CONTEXT, Buffer.from(`${vm}\0${host}\0`, 'utf8'), ephemeral]);
}

function sealKey(shared: Buffer, a: Buffer, b: Buffer, vm: string): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([a, b]), Buffer.concat([SEAL_INFO, Buffer.from(vm, 'utf8')]), 32));
}

/** Step 1, at the destination: the offer to send, and the private half to keep for open(). */
export function makeOffer(vm: string, host: string, hostKey: KeyObject): { offer: KeyOffer; secret: KeyObject } {
  const pair = generateKeyPairSync('x25519');
  const ephemeral = x25519Raw(pair.publicKey);
  const signature = sign(null, offerMessage(vm, host, ephemeral), hostKey);
  return { offer: { vm, host, ephemeral: ephemeral.toString('base64'), signature: signature.toString('base64') }, secret: pair.privateKey };
}

/** Step 2, at the source: seal `vmKey` to an offer signed by `destinationKey` (the certified key of the host the offer names). */
export function sealTo(offer: KeyOffer, destinationKey: KeyObject, vmKey: KeyObject): SealedKey {
  const theirs = Buffer.from(offer.ephemeral, 'base64');
  if (!verify(null, offerMessage(offer.vm, offer.host, theirs), destinationKey, Buffer.from(offer.signature, 'base64'))) {
    refuse(`the key offer for ${offer.vm} is not signed by host ${offer.host}`);
  }
  const pair = generateKeyPairSync('x25519');
  const mine = x25519Raw(pair.publicKey);
  const key = sealKey(diffieHellman({ privateKey: pair.privateKey, publicKey: x25519Public(theirs) }), mine, theirs, offer.vm);
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(offer.vm, 'utf8'));
  const der = vmKey.export({ type: 'pkcs8', format: 'der' });
  const sealed = Buffer.concat([c.update(der), c.final(), c.getAuthTag()]);
  der.fill(0);
  key.fill(0);
  return { vm: offer.vm, ephemeral: mine.toString('base64'), nonce: nonce.toString('base64'), sealed: sealed.toString('base64') };
}

/** Step 3, at the destination: the VM key, with the secret kept from makeOffer. */
export function openSealed(s: SealedKey, offer: KeyOffer, secret: KeyObject): KeyObject {
  if (s.vm !== offer.vm) refuse(`a sealed key for ${s.vm} does not answer the offer for ${offer.vm}`);
  const theirs = Buffer.from(s.ephemeral, 'base64');
  const key = sealKey(diffieHellman({ privateKey: secret, publicKey: x25519Public(theirs) }), theirs, Buffer.from(offer.ephemeral, 'base64'), s.vm);
  const data = Buffer.from(s.sealed, 'base64');
  if (data.length < 17) refuse('sealed key too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, Buffer.from(s.nonce, 'base64'));
    d.setAAD(Buffer.from(s.vm, 'utf8'));
    d.setAuthTag(data.subarray(data.length - 16));
    const der = Buffer.concat([d.update(data.subarray(0, data.length - 16)), d.final()]);
    const k = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    der.fill(0);
    return k;
  } catch {
    refuse(`the sealed key for ${s.vm} does not open (not sealed to this offer, or altered)`);
  } finally {
    key.fill(0);
  }
}
