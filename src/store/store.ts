// The mapping store: the one narrow interface through which the switch learns where an
// identity lives (NVI Algorithm steps 2-6) and what the tenants' policy is. Backends: the
// embedded SQLite file (one machine) and etcd (many machines). The switch trusts nothing it
// reads here without verifying it (src/trust/verifier.ts).

import type { BindingRecord, HostRecord } from '../trust/records.js';


/** The tenants' policy document (JSON text of the tenants sections) and its revision. */
export interface PolicyRecord {
  readonly revision: number;
  readonly document: string;
}

export type StoreChange =
  | { readonly kind: 'binding'; readonly identity: string }
  | { readonly kind: 'host'; readonly host: string }
  | { readonly kind: 'policy'; readonly revision: number };

export interface MappingStore {
  readonly kind: string;
  /** The binding for an identity, or undefined when there is none. Rejects with NVI_ERR_STORE_UNAVAILABLE. */
  lookup(identity: string): Promise<BindingRecord | undefined>;
  publish(record: BindingRecord): Promise<void>;
  lookupHost(host: string): Promise<HostRecord | undefined>;
  publishHost(record: HostRecord): Promise<void>;
  policy(): Promise<PolicyRecord | undefined>;
  /** Store a new policy document; returns its revision (one more than the last). */
  publishPolicy(document: string): Promise<number>;
  /** Call `listener` for every change made by anyone; returns a function that stops watching. */
  watch(listener: (change: StoreChange) => void): () => void;
  close(): Promise<void>;
}

export const STORE_UNAVAILABLE = 'NVI_ERR_STORE_UNAVAILABLE';
