// The shape every pipeline stage has: a name, the drop reasons it may assign, and
// process(batch), which looks only at packets still Active and sets each one's fate.

import { Next, type Batch } from './batch.js';
import type { Drop } from '../base/drops.js';

export interface Stage {
  readonly name: string;
  /** Every reason this stage may drop a packet for. */
  readonly drops: readonly Drop[];
  /** Process every Active packet of the batch; `now` is the batch clock in ms. */
  process(b: Batch, now: number): void;
}

/** Mark packet i dropped for `reason`. */
export function drop(b: Batch, i: number, reason: Drop): void {
  b.next[i] = Next.Drop;
  b.reason[i] = reason;
}
