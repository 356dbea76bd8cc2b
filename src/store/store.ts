// The mapping store: the one narrow interface through which the switch learns where an
// identity lives (NVI Algorithm steps 2-6) and what the tenants' policy is. Backends: the
// embedded SQLite file (one machine) and etcd (many machines). The switch trusts nothing it
// reads here without verifying it (src/trust/verifier.ts, src/policy/signed-policy.ts).
//
// Every write has a revision that only grows; snapshot() and watch() let a host keep a
// replica (replica.ts): list at revision R, then every change after R in revision order.
// A watch ends when its history is gone (compaction) or the backend breaks; the replica then
// lists again.

import type { PolicyRecord } from '../policy/signed-policy.js';
import type { BindingRecord, HostRecord } from '../trust/records.js';

export type { PolicyRecord };

export type StoreChange =
  | { readonly kind: 'binding'; readonly identity: string; readonly record: BindingRecord | undefined }
  | { readonly kind: 'host'; readonly host: string; readonly record: HostRecord | undefined }
  | { readonly kind: 'policy'; readonly record: PolicyRecord };

export interface StoreSnapshot {
  /** The store's revision the lists are taken at. */
  readonly revision: number;
  readonly bindings: readonly BindingRecord[];
  readonly hosts: readonly HostRecord[];
  readonly policy: PolicyRecord | undefined;
}

export interface WatchEnd {
  /** The history the watch needed is gone: list again. */
  readonly compacted: boolean;
  readonly reason: string;
}

export interface StoreWatch {
  /** Changes in revision order; `revision` is the store's revision they bring the watcher to. */
  changes(changes: readonly StoreChange[], revision: number): void;
  /** The watch ended (once); nothing more arrives. */
  end(why: WatchEnd): void;
}

export interface MappingStore {
  readonly kind: string;
  /** The binding for an identity, or undefined when there is none. Rejects with NVI_ERR_STORE_UNAVAILABLE. */
  lookup(identity: string): Promise<BindingRecord | undefined>;
  /**
   * Store a binding if its epoch is above the stored one, or equal on the same host (a
   * renewal): a compare-and-swap, so of two hosts racing for one VM exactly one wins.
   * Rejects with NVI_ERR_STALE_EPOCH otherwise.
   */
  publish(record: BindingRecord): Promise<void>;
  /**
   * Remove the binding of `identity` if it is still epoch `epoch` (a VM detached); false when
   * it changed meanwhile. The store keeps the epoch (a tombstone): a later binding of the
   * identity must go above it, and lastEpoch() tells it.
   */
  withdraw(identity: string, epoch: number): Promise<boolean>;
  /**
   * The highest epoch the store has held for `identity`: its binding's, or the one it was
   * withdrawn at; 0 when it never held one. A host that takes the VM signs above it, so a VM
   * detached on one host and attached on another is not refused as old (verify/old-epoch) by
   * the hosts that verified its binding before.
   */
  lastEpoch(identity: string): Promise<number>;
  lookupHost(host: string): Promise<HostRecord | undefined>;
  publishHost(record: HostRecord): Promise<void>;
  policy(): Promise<PolicyRecord | undefined>;
  /** Store a policy whose revision is above the stored one; rejects with NVI_ERR_STALE_REVISION otherwise. */
  publishPolicy(record: PolicyRecord): Promise<void>;
  /** Every binding, host and the policy, at one revision. */
  snapshot(): Promise<StoreSnapshot>;
  /** Every change after `fromRevision` (exclusive), until stopped or ended. */
  watch(fromRevision: number, w: StoreWatch): () => void;
  /**
   * Host `host` is alive (a lease per host where the backend has them); returns the
   * revision of the write, which every watcher sees: a watch that does not reach it soon is stuck.
   */
  heartbeat(host: string): Promise<number>;
  /** Forget the history before `revision` (watchers that are behind must list again). */
  compact(revision: number): Promise<void>;
  close(): Promise<void>;
}

export const STORE_UNAVAILABLE = 'NVI_ERR_STORE_UNAVAILABLE';
/** A publish with an older epoch than the store holds (a replay from before a migration). */
export const STALE_EPOCH = 'NVI_ERR_STALE_EPOCH';
/** A policy whose revision is not above the stored one. */
export const STALE_REVISION = 'NVI_ERR_STALE_REVISION';
