// Step 1 of SDN Algorithms 1 and 2: ask the mapping store where an identity lives. One
// request is in flight per identity (single-flight: a burst of misses for one destination
// costs one store read), each bounded in time, and the answer is either a record (or none)
// or a store error, never a rejection.

import { NviError } from '../base/errors.js';
import type { Trace } from '../base/trace.js';
import type { MappingStore } from '../store/store.js';
import type { BindingRecord } from '../trust/records.js';

export type Lookup = { readonly record: BindingRecord | undefined } | { readonly error: string };

export class BindingLookup {
  private readonly inflight = new Map<string, Promise<Lookup>>();
  readonly counts = { lookups: 0, storeErrors: 0 };

  constructor(private readonly store: MappingStore, private readonly timeoutMs: number) {}

  /** The binding of `identity` (canonical text), none, or why the store did not say. */
  find(identity: string, trace?: Trace): Promise<Lookup> {
    let p = this.inflight.get(identity);
    if (!p) {
      this.counts.lookups++;
      p = withTimeout(this.store.lookup(identity), this.timeoutMs).then(
        (record): Lookup =>
          record && record.identity !== identity
            ? { error: `store answered ${identity} with the binding of ${record.identity}` }
            : { record },
        (err): Lookup => {
          this.counts.storeErrors++;
          return { error: err instanceof NviError ? err.message : `store lookup failed: ${String(err)}` };
        },
      );
      this.inflight.set(identity, p);
      p.finally(() => this.inflight.delete(identity)).catch(() => {});
    }
    return p.then((r) => {
      if ('error' in r) trace?.step('lookup', `mapping store: ${r.error}`, 'fail');
      else if (!r.record) trace?.step('lookup', `mapping store has no binding for ${identity}`, 'fail');
      else trace?.step('lookup', `${identity} is ${r.record.tenant}/${r.record.vm} on ${r.record.host} (${r.record.hostAddress}), epoch ${r.record.epoch}`, 'ok');
      return r;
    });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new NviError('NVI_ERR_STORE_UNAVAILABLE', `mapping store did not answer within ${ms} ms`)), ms);
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
