// Time and randomness, injected: every part that reads the clock or draws random bytes takes
// them as parameters, so tests step time by hand and replay the same draws.

import { randomBytes } from 'node:crypto';

export interface Clock {
  /** Milliseconds since 1970. The data path reads it once per batch. */
  now(): number;
}

export interface Random {
  /** `n` random bytes. */
  bytes(n: number): Buffer;
}

export const systemClock: Clock = { now: () => Date.now() };

/** The operating system's CSPRNG (keys, SPIs, request ids). */
export const systemRandom: Random = { bytes: (n) => randomBytes(n) };
