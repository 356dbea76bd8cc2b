// The one rule both backends apply to a binding write, inside their compare-and-swap: the
// epoch only grows (NVI Algorithm step 6: a move publishes epoch + 1), and an equal epoch
// may only renew the binding on the same host. A withdrawn binding's epoch still counts: the
// next binding of the identity goes above it.

import type { BindingRecord } from '../trust/records.js';

export type EpochVerdict =
  | { readonly write: true }
  | { readonly write: false; readonly same: true }
  | { readonly write: false; readonly same: false; readonly why: string };

/**
 * May `next` replace `cur` (the stored binding of the same identity, if any)? `withdrawn`: the
 * epoch the identity's last binding was withdrawn at (0: none).
 */
export function epochVerdict(cur: BindingRecord | undefined, next: BindingRecord, withdrawn = 0): EpochVerdict {
  if (!Number.isSafeInteger(next.epoch) || next.epoch < 1) {
    return { write: false, same: false, why: `binding for ${next.identity}: epoch must be an integer from 1, got ${JSON.stringify(next.epoch)}` };
  }
  if (!cur && next.epoch <= withdrawn) {
    return {
      write: false, same: false,
      why: `binding for ${next.identity} (${next.vm}) at epoch ${next.epoch} refused: the store withdrew its binding at epoch ${withdrawn} (the VM was detached); publish epoch ${withdrawn + 1} or later`,
    };
  }
  if (!cur) return { write: true };
  if (next.epoch < cur.epoch) {
    return {
      write: false, same: false,
      why: `binding for ${next.identity} (${next.vm}) at epoch ${next.epoch} refused: the store holds epoch ${cur.epoch} on host ${cur.host}; publish epoch ${cur.epoch + 1} or later`,
    };
  }
  if (next.epoch === cur.epoch && (next.host !== cur.host || next.hostAddress !== cur.hostAddress)) {
    return {
      write: false, same: false,
      why: `binding for ${next.identity} (${next.vm}) on ${next.host} ${next.hostAddress} refused: epoch ${cur.epoch} already binds it to ${cur.host} ${cur.hostAddress}; a move publishes epoch ${cur.epoch + 1}`,
    };
  }
  const keys = Object.keys(next) as (keyof BindingRecord)[];
  if (next.epoch === cur.epoch && keys.length === Object.keys(cur).length && keys.every((k) => next[k] === cur[k])) return { write: false, same: true };
  return { write: true };
}
