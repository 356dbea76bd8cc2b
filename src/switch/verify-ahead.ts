// Bindings the store publishes (a VM that comes or moves), verified ahead of the first packet
// that needs them (BindingVerifier.verifyPublished), one at a time: a host evacuated at once
// publishes hundreds of bindings, and verifying them back to back would hold the event loop,
// and the packets behind it, for as long. Between two verifications the loop turns. The queue
// keeps the latest record of each identity, at most MAX_WAITING of them; past that, the first
// packet verifies (as it did before bindings were verified ahead).

import type { Drop } from '../base/drops.js';
import type { BindingRecord } from '../trust/records.js';

const MAX_WAITING = 4096;

export class VerifyAhead {
  /** Waiting, by identity, oldest first. */
  private readonly waiting = new Map<string, BindingRecord>();
  private running = false;
  /** Records not queued because the queue was full. */
  overflow = 0;

  constructor(
    private readonly verify: (record: BindingRecord) => Promise<Drop | undefined>,
    private readonly bug: (err: unknown) => void,
  ) {}

  add(record: BindingRecord): void {
    this.waiting.delete(record.identity);
    if (this.waiting.size >= MAX_WAITING) {
      this.overflow++;
      return;
    }
    this.waiting.set(record.identity, record);
    if (!this.running) {
      this.running = true;
      setImmediate(() => void this.next());
    }
  }

  private async next(): Promise<void> {
    const first = this.waiting.entries().next();
    if (first.done) {
      this.running = false;
      return;
    }
    const [identity, record] = first.value;
    this.waiting.delete(identity);
    try {
      await this.verify(record);
    } catch (e) {
      this.bug(e);
    }
    setImmediate(() => void this.next());
  }
}
