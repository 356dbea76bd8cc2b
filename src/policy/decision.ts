// The compiled policy as the switch sees it: a decision per direction of an identity pair
// (the shape the data path declares in src/dataplane/decision.ts), and which identities a
// new revision may affect.

import type { DirectionDecision } from '../dataplane/decision.js';
import type { Trace } from '../base/trace.js';

/** A compiled policy for all tenants. Identities are canonical IPv6 text. */
export interface Policy {
  readonly revision: number;
  /** Decide the direction src -> dst at time `now` (ms since the epoch). */
  decide(src: string, dst: string, now: number, trace?: Trace): DirectionDecision;
  /** Identities whose decisions may differ under `next`; `all` when that cannot be narrowed. */
  affected(next: Policy): { readonly all: boolean; readonly identities: ReadonlySet<string> };
}
