// What the two algorithms need to know of their host and of the verifier: narrow views, so
// that sender.ts and receiver.ts depend on no composition code.

import type { KeyObject } from 'node:crypto';
import type { Drop } from '../base/drops.js';
import type { Trace } from '../base/trace.js';
import type { PortTable } from '../dataplane/port-table.js';
import type { OutboundSa } from '../esp/sa.js';
import type { BindingRecord } from '../trust/records.js';
import type { VerifyExpect } from '../trust/verifier.js';

export interface HostView {
  readonly name: string;
  /** Underlay address, uint32. */
  readonly address: number;
  readonly ports: PortTable;
  /** Port index of a local VM by identity text, or undefined. */
  portIndex(identityText: string): number | undefined;
  /** This data-path thread owns the VM with identity `id` (always true with one thread: workers/shard.ts). */
  owns(id: Uint8Array): boolean;
  /** Settles when the port's binding is published (a migrated VM activating); undefined when nothing is pending. */
  whenActive(index: number): Promise<unknown> | undefined;
  /** Send the bind-ahead probe of src -> dst on a spare SA to `peer` (bind-probe.ts); false if it did not leave. */
  probe(sa: OutboundSa, outer: Uint8Array, peer: number, src: Uint8Array, dst: Uint8Array): boolean;
}

/** Step 3 of both algorithms (src/trust/verifier.ts). */
export interface BindingVerifierLike {
  verify(record: BindingRecord, expect: VerifyExpect, trace?: Trace): Promise<Drop>;
  /** False when verify() would refuse `record` now for want of a token (src/trust/verifier.ts). */
  mayVerify(record: BindingRecord): boolean;
  /** True when `record` was verified before: verify() checks it without a signature (src/trust/verifier.ts). */
  verified(record: BindingRecord): boolean;
  /** Step 9 alone: the certificate of `host` is valid and names `address`; its key. */
  hostKey(host: string, address: string, trace?: Trace): Promise<{ readonly drop: Drop; readonly key?: KeyObject }>;
}
