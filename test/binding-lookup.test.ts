// Step 1 of the miss path (src/switch/binding-lookup.ts): a source that holds bindings in
// memory (the host's replica) answers at once; one that needs I/O is asked once per identity
// in flight and within a time bound. Either way the answer is a record, none, or why not.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Drop } from '../src/base/drops.js';
import { NviError } from '../src/base/errors.js';
import { Trace } from '../src/base/trace.js';
import { STORE_UNAVAILABLE } from '../src/store/store.js';
import { BindingLookup, type BindingSource } from '../src/switch/binding-lookup.js';
import type { BindingRecord } from '../src/trust/records.js';

const A = 'fd00::a';
const B = 'fd00::b';
const record = (identity: string): BindingRecord => ({
  identity, tenant: 't', vm: `vm-${identity}`, host: 'h2', hostAddress: '10.0.0.2', epoch: 3,
  notBefore: '2026-01-01T00:00:00Z', notAfter: '2027-01-01T00:00:00Z', certificate: '', signature: '',
} as unknown as BindingRecord);

/** A source held in memory: lookupNow answers, lookup() must not be called. */
function inMemory(map: Map<string, BindingRecord>, fail?: Error): BindingSource & { asyncReads: number } {
  const s = {
    asyncReads: 0,
    lookup: async (id: string) => {
      s.asyncReads++;
      return map.get(id);
    },
    lookupNow: (id: string) => {
      if (fail) throw fail;
      return map.get(id);
    },
  };
  return s;
}

test('a source held in memory answers from it: the record, none, or a record of another identity as a store error', async () => {
  const src = inMemory(new Map([[A, record(A)], [B, record(A)]]));
  const l = new BindingLookup(src, 50);
  const trace = new Trace();
  assert.equal(await l.find(A, trace), { record: record(A) });
  assert.equal(await l.find('fd00::c'), { record: undefined });
  const wrong = await l.find(B);
  assert.ok('error' in wrong && wrong.drop === Drop.ResolveStoreError, JSON.stringify(wrong));
  assert.match((wrong as { error: string }).error, /answered fd00::b with the binding of fd00::a/);
  assert.is(src.asyncReads, 0, 'no read through lookup()');
  assert.is(l.counts.lookups, 3);
  assert.is(trace.steps[0]!.result, 'ok');
  assert.match(trace.steps[0]!.text, /fd00::a is t\/vm-fd00::a on h2 \(10\.0\.0\.2\), epoch 3/);
});

test('a replica too old to trust (lookupNow throws store-unavailable) is resolve/store-unavailable, counted', async () => {
  const src = inMemory(new Map([[A, record(A)]]), new NviError(STORE_UNAVAILABLE, 'mapping store unreachable: the replica is stale'));
  const l = new BindingLookup(src, 50);
  const r = await l.find(A);
  assert.equal(r, { error: 'mapping store unreachable: the replica is stale', drop: Drop.ResolveStoreUnavailable });
  assert.is(l.counts.storeErrors, 1);
  const other = await new BindingLookup(inMemory(new Map(), new Error('disk on fire')), 50).find(A);
  assert.equal(other, { error: 'disk on fire', drop: Drop.ResolveStoreError });
});

test('a source that needs I/O: one read per identity in flight, and a read past the time bound is store-unavailable', async () => {
  let reads = 0;
  let release: (r: BindingRecord | undefined) => void = () => {};
  const slow: BindingSource = {
    lookup: (id) => {
      reads++;
      return id === A ? new Promise((resolve) => { release = resolve; }) : new Promise(() => {});
    },
  };
  const l = new BindingLookup(slow, 30);
  const first = l.find(A);
  const second = l.find(A);
  release(record(A));
  assert.equal(await first, { record: record(A) });
  assert.equal(await second, { record: record(A) });
  assert.is(reads, 1, 'two misses, one read');
  const awake = setTimeout(() => {}, 1000); // the lookup's own timer does not keep the process up
  const late = await l.find(B);
  clearTimeout(awake);
  assert.equal(late, { error: 'mapping store did not answer within 30 ms', drop: Drop.ResolveStoreUnavailable });
  assert.is(l.counts.storeErrors, 1);
});

test.run();
