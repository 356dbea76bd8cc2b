// A token bucket (in the manner of wireguard-go's ratelimiter): `rate` tokens per second,
// at most `burst` saved up. The caller passes the time, so tests step it by hand.
// Bounds the signature checks one switch does for bindings it has not verified before:
// a flood of bogus records costs at most `rate` verifications a second.

export class TokenBucket {
  private tokens: number;
  private last: number;

  /** @param now ms, the time the bucket starts full. */
  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    if (!(rate > 0) || !(burst >= 1)) throw new Error(`token bucket needs rate > 0 and burst >= 1, got ${rate}, ${burst}`);
    this.tokens = burst;
    this.last = now;
  }

  /** Take one token at time `now` (ms); false, taking nothing, when the bucket is empty. */
  take(now: number): boolean {
    if (!this.has(now)) return false;
    this.tokens -= 1;
    return true;
  }

  /** True when a token is left at time `now` (ms); takes none. */
  has(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
    return this.tokens >= 1;
  }

  /** Tokens available at the last `take` (for stats). */
  available(): number {
    return Math.floor(this.tokens);
  }
}
