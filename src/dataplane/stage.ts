// The shape every pipeline stage declares: its name, the drop reasons it may assign and the
// other fates it may give a packet (its next outputs), and process(batch), which looks only
// at packets still Active and settles some of them. The pipeline counts every settled packet
// under the stage that settled it; with checking on (tests), it fails a stage that settles a
// packet for a reason or to an output it did not declare.

import { Next, type Batch } from './batch.js';
import type { Drop } from '../base/drops.js';

export interface Stage {
  readonly name: string;
  /** Every reason this stage may drop a packet for. */
  readonly drops: readonly Drop[];
  /** Every fate but Drop this stage may give a packet (Underlay, VmPort, Held, Consumed, Reply). */
  readonly outputs: readonly Next[];
  /** Process every Active packet of the batch; `now` is the batch clock in ms. */
  process(b: Batch, now: number): void;
}

/** Mark packet i dropped for `reason`, by the stage running now. */
export function drop(b: Batch, i: number, reason: Drop): void {
  b.next[i] = Next.Drop;
  b.reason[i] = reason;
  b.by[i] = b.stage;
}

/** Give packet i its fate `next` (not Drop), by the stage running now. */
export function settle(b: Batch, i: number, next: Next): void {
  b.next[i] = next;
  b.by[i] = b.stage;
}
