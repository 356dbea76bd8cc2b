// Ephemeral X25519 key pairs made ahead of the key exchanges that need them. Making one
// (generate, take the raw public key) costs ~40 µs warm and several times that cold, on the
// first packet's path when made on demand; here it is made in idle time, one per turn of the
// event loop, so a handshake only takes one. Each pair is used once.

import { ephemeralKey, type Ephemeral } from './handshake.js';

export class EphemeralPool {
  private readonly ready: Ephemeral[] = [];
  private scheduled = false;
  private closed = false;

  constructor(private readonly size = 4, private readonly make: () => Ephemeral = ephemeralKey) {
    this.refill();
  }

  /** A pair made ahead, or a fresh one when none is ready. */
  take(): Ephemeral {
    const k = this.ready.pop() ?? this.make();
    this.refill();
    return k;
  }

  /** Pairs ready now. */
  get available(): number {
    return this.ready.length;
  }

  close(): void {
    this.closed = true;
    this.ready.length = 0;
  }

  private refill(): void {
    if (this.scheduled || this.closed || this.ready.length >= this.size) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.closed) return;
      this.ready.push(this.make());
      this.refill();
    }).unref();
  }
}
