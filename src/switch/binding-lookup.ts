// Step 1 of SDN Algorithms 1 and 2: ask the mapping store where an identity lives (on a live
// switch, the host's replica of it: src/store/replica.ts, read from memory at once). Reads
// that need I/O are one in flight per identity (single-flight: a burst of misses for one
// destination costs one read), each bounded in time. The answer is a record (or none) or why
// not, never a rejection: resolve/store-unavailable when the store cannot be reached (a new
// cable fails closed), resolve/store-error when it answered with something unusable.

import { Drop } from '../base/drops.js';
import { NviError } from '../base/errors.js';
import type { Trace } from '../base/trace.js';
import { STORE_UNAVAILABLE } from '../store/store.js';
import type { BindingRecord } from '../trust/records.js';

export type Lookup = { readonly record: BindingRecord | undefined } | { readonly error: string; readonly drop: Drop };

/** Where bindings are read: the store, or the host's replica of it. */
export interface BindingSource {
  lookup(identity: string): Promise<BindingRecord | undefined>;
  /**
   * The binding as it is held in memory (a replica's), read without I/O; throws what lookup()
   * would reject with. Where it exists, find() answers from it at once: no timer, no read in flight.
   */
  lookupNow?(identity: string): BindingRecord | undefined;
  /** The binding read past any cache (a replica's watch may be behind); lookup() where there is none. */
  latest?(identity: string): Promise<BindingRecord | undefined>;
}

export class BindingLookup {
  private readonly inflight = new Map<string, Promise<Lookup>>();
  private readonly inflightLatest = new Map<string, Promise<Lookup>>();
  readonly counts = { lookups: 0, latest: 0, storeErrors: 0 };

  constructor(private readonly store: BindingSource, private readonly timeoutMs: number) {}

  /** The binding of `identity` (canonical text), none, or why the store did not say. */
  find(identity: string, trace?: Trace): Promise<Lookup> {
    if (this.store.lookupNow) {
      this.counts.lookups++;
      let r: Lookup;
      try {
        r = this.answer(identity, this.store.lookupNow(identity));
      } catch (err) {
        r = this.failed(err);
      }
      traceLookup(r, identity, trace);
      return Promise.resolve(r);
    }
    return this.single(identity, this.inflight, () => {
      this.counts.lookups++;
      return this.store.lookup(identity);
    }, trace);
  }

  /**
   * As find(), from the store itself rather than the host's replica: for a binding that
   * disagrees with what a peer host says and may be one the replica has not heard of yet.
   */
  latest(identity: string, trace?: Trace): Promise<Lookup> {
    trace?.step('lookup', `the binding disagrees with the peer: asking the store itself for ${identity}`, 'info');
    return this.single(identity, this.inflightLatest, () => {
      this.counts.latest++;
      return this.store.latest ? this.store.latest(identity) : this.store.lookup(identity);
    }, trace);
  }

  /** One read per identity in flight, bounded in time; a record, none, or why not. */
  private single(identity: string, inflight: Map<string, Promise<Lookup>>, read: () => Promise<BindingRecord | undefined>, trace?: Trace): Promise<Lookup> {
    let p = inflight.get(identity);
    if (!p) {
      p = withTimeout(read(), this.timeoutMs).then((record) => this.answer(identity, record), (err) => this.failed(err));
      inflight.set(identity, p);
      p.finally(() => inflight.delete(identity)).catch(() => {});
    }
    return p.then((r) => {
      traceLookup(r, identity, trace);
      return r;
    });
  }

  /** The store's answer for `identity`: its record, none, or a record of another identity (an error). */
  private answer(identity: string, record: BindingRecord | undefined): Lookup {
    return record && record.identity !== identity
      ? { error: `store answered ${identity} with the binding of ${record.identity}`, drop: Drop.ResolveStoreError }
      : { record };
  }

  /** Why the store did not answer. */
  private failed(err: unknown): Lookup {
    this.counts.storeErrors++;
    const unavailable = err instanceof NviError && err.code === STORE_UNAVAILABLE;
    return { error: err instanceof Error ? err.message : `store lookup failed: ${String(err)}`, drop: unavailable ? Drop.ResolveStoreUnavailable : Drop.ResolveStoreError };
  }
}

function traceLookup(r: Lookup, identity: string, trace: Trace | undefined): void {
  if ('error' in r) trace?.step('lookup', `mapping store: ${r.error}`, 'fail');
  else if (!r.record) trace?.step('lookup', `mapping store has no binding for ${identity}`, 'fail');
  else trace?.step('lookup', `${identity} is ${r.record.tenant}/${r.record.vm} on ${r.record.host} (${r.record.hostAddress}), epoch ${r.record.epoch}`, 'ok');
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new NviError(STORE_UNAVAILABLE, `mapping store did not answer within ${ms} ms`)), ms);
    t.unref?.();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
