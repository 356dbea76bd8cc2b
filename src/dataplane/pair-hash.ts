// Hash of an identity pair read straight from the packet: 32 bytes (source then
// destination) folded into a non-negative 30-bit integer, so a cache key costs no string
// and no allocation. Collisions are resolved by comparing the bytes (cable-cache.ts).

function mix(h: number, w: number): number {
  h = Math.imul(h ^ w, 0x9e3779b1);
  return (h << 13) | (h >>> 19);
}

/** Hash of 16 bytes at a (source) and 16 bytes at b (destination). */
export function pairHash(bufA: Uint8Array, a: number, bufB: Uint8Array, b: number): number {
  let h = 0x2545f491;
  for (let k = 0; k < 16; k += 4) {
    h = mix(h, (bufA[a + k] << 24) | (bufA[a + k + 1] << 16) | (bufA[a + k + 2] << 8) | bufA[a + k + 3]);
  }
  for (let k = 0; k < 16; k += 4) {
    h = mix(h, (bufB[b + k] << 24) | (bufB[b + k + 1] << 16) | (bufB[b + k + 2] << 8) | bufB[b + k + 3]);
  }
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h & 0x3fffffff;
}
