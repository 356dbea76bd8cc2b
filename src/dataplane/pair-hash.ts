// Hash of an identity pair read straight from the packet: 32 bytes (source then
// destination) folded into a non-negative 30-bit integer, so a cache key costs no string
// and no allocation. Collisions are resolved by comparing the bytes (cable-cache.ts).
// identityKey folds one identity the same way, for the cache's index by identity.

const SEED = 0x2545f491;

function mix(h: number, w: number): number {
  h = Math.imul(h ^ w, 0x9e3779b1);
  return (h << 13) | (h >>> 19);
}

/** The last avalanche, down to a non-negative 30-bit integer. */
function finish(h: number): number {
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h & 0x3fffffff;
}

/** Hash of 16 bytes at a (source) and 16 bytes at b (destination). */
export function pairHash(bufA: Uint8Array, a: number, bufB: Uint8Array, b: number): number {
  let h = SEED;
  for (let k = 0; k < 16; k += 4) {
    h = mix(h, (bufA[a + k] << 24) | (bufA[a + k + 1] << 16) | (bufA[a + k + 2] << 8) | bufA[a + k + 3]);
  }
  for (let k = 0; k < 16; k += 4) {
    h = mix(h, (bufB[b + k] << 24) | (bufB[b + k + 1] << 16) | (bufB[b + k + 2] << 8) | bufB[b + k + 3]);
  }
  return finish(h);
}

/** pairHash of a pair given as eight big-endian int32 words, source first. */
export function pairHashOfWords(s0: number, s1: number, s2: number, s3: number, d0: number, d1: number, d2: number, d3: number): number {
  return finish(mix(mix(mix(mix(mix(mix(mix(mix(SEED, s0), s1), s2), s3), d0), d1), d2), d3));
}

/**
 * A 30-bit key of one 16-byte identity given as four big-endian int32 words: equal identities
 * have equal keys; different ones rarely do, so an index by key checks the words too.
 */
export function identityKey(w0: number, w1: number, w2: number, w3: number): number {
  return finish(mix(mix(mix(mix(SEED, w0), w1), w2), w3));
}
