// One conformance suite for every backend of the mapping store: the embedded SQLite file and
// a real etcd (3.4, Debian's etcd-server, in a namespace of the test's own). Each case runs
// against both, on a fresh store (a new file, or a new key prefix).
//
// Records here are synthetic: the store does not verify what it keeps (the switch does), so
// the suite checks only what a store must do: keep, order, compare-and-swap, watch, resume.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { systemClock } from '../src/base/clock.js';
import { NviError } from '../src/base/errors.js';
import { EtcdStore } from '../src/store/etcd-store.js';
import { StoreReplica } from '../src/store/replica.js';
import { SqliteStore } from '../src/store/sqlite-store.js';
import { STALE_EPOCH, STALE_REVISION, type MappingStore, type StoreChange, type StoreWatch, type WatchEnd } from '../src/store/store.js';
import type { BindingRecord } from '../src/trust/records.js';
import { EtcdCluster } from './etcd-fixture.js';

interface Backend {
  readonly name: string;
  /** A fresh store; further handles to the same store with another(). */
  fresh(): Promise<void>;
  another(): Promise<MappingStore>;
  /** The store's server restarts (etcd: every member stops and starts; the embedded file has no server: its writer reopens it). */
  restart(): Promise<void>;
  done(): Promise<void>;
}

function embedded(): Backend {
  const dir = mkdtempSync(join(tmpdir(), 'nvi-conf-'));
  let file = '';
  let n = 0;
  return {
    name: 'embedded',
    async fresh() {
      file = join(dir, `s${n++}.db`);
    },
    async another() {
      return SqliteStore.open(file, { pollMs: 50 });
    },
    async restart() {},
    async done() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function etcd(cluster: () => EtcdCluster): Backend {
  let prefix = '';
  let n = 0;
  return {
    name: 'etcd',
    async fresh() {
      prefix = `/conf${process.pid}-${n++}/`;
    },
    async another() {
      return new EtcdStore({ endpoints: cluster().endpoints, prefix, timeoutMs: 1500 });
    },
    async restart() {
      await cluster().stopAll();
      await cluster().startAll();
    },
    async done() {},
  };
}

let serial = 0;
function binding(vm: string, epoch: number, host = 'h1', address = '10.0.0.1'): BindingRecord {
  return {
    identity: `fd00::${vm}`,
    tenant: 't',
    vm,
    host,
    hostAddress: address,
    epoch,
    notBefore: '2026-01-01T00:00:00.000Z',
    notAfter: '2027-01-01T00:00:00.000Z',
    certificate: 'CERT',
    signature: `sig-${serial++}`,
  };
}

/** Collects a watch's changes; resolves until() once a condition on them holds. */
class Collector implements StoreWatch {
  readonly seen: StoreChange[] = [];
  revision = 0;
  ended: WatchEnd | undefined;
  changes(changes: readonly StoreChange[], revision: number): void {
    this.seen.push(...changes);
    this.revision = revision;
  }
  end(why: WatchEnd): void {
    this.ended = why;
  }
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function rejects(p: Promise<unknown>, code: string): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, NviError);
    assert.is((e as NviError).code, code, (e as Error).message);
    return (e as Error).message;
  }
  throw new Error(`expected a rejection with ${code}`);
}

function cases(b: Backend): void {
  const t = suite(`store conformance: ${b.name}`);
  let store: MappingStore;
  t.before.each(async () => {
    await b.fresh();
    store = await b.another();
  });
  t.after.each(async () => {
    await store.close();
  });

  t('a published binding is looked up as published; an unknown identity is none', async () => {
    const r = binding('a1', 1);
    await store.publish(r);
    assert.equal(await store.lookup(r.identity), r);
    assert.is(await store.lookup('fd00::nobody'), undefined);
    await store.publishHost({ host: 'h1', address: '10.0.0.1', certificate: 'HOSTCERT' });
    assert.equal(await store.lookupHost('h1'), { host: 'h1', address: '10.0.0.1', certificate: 'HOSTCERT' });
  });

  t('the epoch only grows: an older epoch, or the same epoch on another host, is refused; a renewal on the same host is not', async () => {
    await store.publish(binding('e1', 3, 'h1'));
    assert.match(await rejects(store.publish(binding('e1', 2, 'h2', '10.0.0.2')), STALE_EPOCH), 'holds epoch 3 on host h1');
    await rejects(store.publish(binding('e1', 3, 'h2', '10.0.0.2')), STALE_EPOCH);
    const renewal = binding('e1', 3, 'h1');
    await store.publish(renewal);
    assert.equal(await store.lookup(renewal.identity), renewal);
    await store.publish(binding('e1', 4, 'h2', '10.0.0.2'));
    assert.is((await store.lookup(renewal.identity))?.host, 'h2');
  });

  t('two hosts racing to publish the same next epoch for one VM: exactly one wins', async () => {
    await store.publish(binding('r1', 1, 'h1'));
    const others = await Promise.all([b.another(), b.another(), b.another(), b.another()]);
    try {
      const hosts = ['h2', 'h3', 'h4', 'h5'];
      const results = await Promise.allSettled(others.map((s, k) => s.publish(binding('r1', 2, hosts[k], `10.0.0.${k + 2}`))));
      const won = results.filter((r) => r.status === 'fulfilled').length;
      assert.is(won, 1, JSON.stringify(results.map((r) => r.status)));
      for (const r of results) if (r.status === 'rejected') assert.is((r.reason as NviError).code, STALE_EPOCH);
      const k = results.findIndex((r) => r.status === 'fulfilled');
      assert.is((await store.lookup('fd00::r1'))?.host, hosts[k]);
    } finally {
      await Promise.all(others.map((s) => s.close()));
    }
  });

  t('a withdraw removes the binding only at the epoch it names', async () => {
    await store.publish(binding('w1', 5));
    assert.is(await store.withdraw('fd00::w1', 4), false);
    assert.ok(await store.lookup('fd00::w1'));
    assert.is(await store.withdraw('fd00::w1', 5), true);
    assert.is(await store.lookup('fd00::w1'), undefined);
  });

  t('a withdrawn binding leaves its epoch: lastEpoch tells it, a binding at or below it is refused, one above it is taken', async () => {
    assert.is(await store.lastEpoch('fd00::w2'), 0, 'never bound');
    await store.publish(binding('w2', 3));
    assert.is(await store.lastEpoch('fd00::w2'), 3);
    assert.is(await store.withdraw('fd00::w2', 3), true);
    assert.is(await store.lookup('fd00::w2'), undefined);
    assert.is(await store.lastEpoch('fd00::w2'), 3, 'the store remembers the epoch it withdrew');
    assert.not.ok((await store.snapshot()).bindings.some((b) => b.identity === 'fd00::w2'), 'a tombstone is no binding');
    const why = await rejects(store.publish(binding('w2', 3, 'h2', '10.0.0.2')), STALE_EPOCH);
    assert.match(why, /withdrew its binding at epoch 3 .*publish epoch 4 or later/);
    await rejects(store.publish(binding('w2', 1, 'h2', '10.0.0.2')), STALE_EPOCH);
    await store.publish(binding('w2', 4, 'h2', '10.0.0.2')); // attached on another host
    assert.is((await store.lookup('fd00::w2'))?.host, 'h2');
    assert.is(await store.lastEpoch('fd00::w2'), 4);
    await store.publish(binding('w2', 6, 'h1'));
    assert.is(await store.withdraw('fd00::w2', 6), true);
    assert.is(await store.lastEpoch('fd00::w2'), 6, 'the tombstone follows the last withdrawal');
    await rejects(store.publish(binding('w2', 5, 'h2', '10.0.0.2')), STALE_EPOCH);
  });

  t('the policy revision only grows', async () => {
    await store.publishPolicy({ revision: 1, document: '{"a":1}', signature: 's1' });
    await rejects(store.publishPolicy({ revision: 1, document: '{"a":2}', signature: 's2' }), STALE_REVISION);
    await store.publishPolicy({ revision: 5, document: '{"a":5}', signature: 's5' });
    assert.equal(await store.policy(), { revision: 5, document: '{"a":5}', signature: 's5' });
  });

  t('a watch from a snapshot sees every later change once, in the order written, with its record', async () => {
    await store.publish(binding('o0', 1));
    const snap = await store.snapshot();
    assert.equal(snap.bindings.map((x) => x.vm), ['o0']);
    const w = new Collector();
    const stop = store.watch(snap.revision, w);
    try {
      const writer = await b.another();
      const expected: string[] = [];
      for (let k = 0; k < 60; k++) {
        const vm = `o${k % 7}`;
        const epoch = Math.floor(k / 7) + 2;
        await writer.publish(binding(vm, epoch));
        expected.push(`${vm}@${epoch}`);
      }
      assert.is(await writer.withdraw('fd00::o3', 10), true); // o3's last epoch: k = 59
      expected.push('o3@gone');
      await writer.publishPolicy({ revision: 1, document: '{}', signature: 'x' });
      await writer.close();
      await until(() => w.seen.length >= expected.length + 1, 'all changes');
      const got = w.seen.map((c) => (c.kind === 'binding' ? `${c.identity.slice(6)}@${c.record?.epoch ?? 'gone'}` : c.kind));
      assert.equal(got, [...expected, 'policy']);
      assert.is(w.ended, undefined);
    } finally {
      stop();
    }
  });

  t('a watch from a revision whose history was compacted away ends as compacted', async () => {
    await store.publish(binding('c1', 1));
    const old = (await store.snapshot()).revision;
    for (let k = 2; k < 12; k++) await store.publish(binding('c1', k));
    await store.compact((await store.snapshot()).revision);
    const w = new Collector();
    const stop = store.watch(old, w);
    try {
      await until(() => w.ended !== undefined, 'the end of the watch');
      assert.is(w.ended!.compacted, true, w.ended!.reason);
    } finally {
      stop();
    }
  });

  t('a replica that was behind a compaction lists again and ends up equal to the store', async () => {
    for (let k = 0; k < 20; k++) await store.publish(binding(`p${k}`, 1));
    const old = (await store.snapshot()).revision;
    for (let k = 0; k < 20; k++) await store.publish(binding(`p${k}`, 2));
    await store.withdraw('fd00::p5', 2);
    await store.compact((await store.snapshot()).revision);
    // The replica's first watch starts from before the compaction, as a watcher that fell behind would.
    let first = true;
    const behind: MappingStore = Object.create(store) as MappingStore;
    behind.watch = (from, w) => {
      const f = first ? old : from;
      first = false;
      return store.watch(f, w);
    };
    behind.snapshot = async () => {
      const s = await store.snapshot();
      return first ? { ...s, revision: old } : s;
    };
    const replica = new StoreReplica(behind, systemClock, { change: () => {}, state: () => {} }, { host: 'h1', heartbeatMs: 200 });
    await replica.start();
    try {
      await until(() => replica.counts.compactions >= 1 && replica.counts.lists >= 2, 'a compaction and a second list');
      const snap = await store.snapshot();
      assert.equal([...replica.bindings.values()].map((x) => `${x.vm}@${x.epoch}`).sort(), snap.bindings.map((x) => `${x.vm}@${x.epoch}`).sort());
      assert.is(replica.bindings.has('fd00::p5'), false, 'the withdrawn binding is gone from the replica');
    } finally {
      replica.stop();
    }
  });

  t('a replica resumes after the store restarts and sees what was written after', async () => {
    const changes: string[] = [];
    const replica = new StoreReplica(store, systemClock, { change: (c) => changes.push(c.kind), state: () => {} }, { host: 'h1', heartbeatMs: 200, maxBackoffMs: 500 });
    await store.publish(binding('s1', 1));
    await replica.start();
    try {
      assert.ok(replica.bindings.has('fd00::s1'));
      await b.restart();
      const writer = await b.another();
      await writer.publish(binding('s2', 1));
      await writer.close();
      await until(() => replica.bindings.has('fd00::s2'), 'the binding written after the restart', 30_000);
      await until(() => replica.fresh, 'the replica fresh again', 10_000);
      assert.ok(replica.bindings.has('fd00::s1'));
    } finally {
      replica.stop();
    }
  });

  t('a replica whose watch is behind reads a binding from the store itself: a newer one is applied once', async () => {
    // The watch's changes are held back until released, as a slow watch would deliver them.
    let held: (() => void)[] | undefined = [];
    const slow: MappingStore = Object.create(store) as MappingStore;
    slow.watch = (from, w) => store.watch(from, {
      changes: (c, rev) => (held ? held.push(() => w.changes(c, rev)) : w.changes(c, rev)),
      end: (why) => w.end(why),
    });
    const changes: string[] = [];
    const replica = new StoreReplica(slow, systemClock, { change: (c) => c.kind === 'binding' && changes.push(`${c.record?.vm}@${c.record?.epoch}`), state: () => {} }, { host: 'h1', heartbeatMs: 1000 });
    await store.publish(binding('m1', 1));
    await replica.start();
    try {
      assert.is(replica.lookup('fd00::m1')?.epoch, 1);
      await store.publish(binding('m1', 2, 'h2', '10.0.0.2'));
      await new Promise((r) => setTimeout(r, 300));
      assert.is(replica.lookup('fd00::m1')?.epoch, 1, 'the watch has not delivered it');
      const got = await replica.latest('fd00::m1');
      assert.is(got?.epoch, 2);
      assert.is(got?.host, 'h2');
      assert.is(replica.lookup('fd00::m1')?.epoch, 2, 'the replica holds it now');
      for (const f of held!.splice(0)) f();
      held = undefined;
      await store.publish(binding('m2', 1));
      await until(() => replica.bindings.has('fd00::m2'), 'the watch catching up');
      assert.equal(changes, ['m1@1', 'm1@2', 'm2@1'], 'the change of m1 reported once, not again when the watch brought it');
      assert.is(replica.counts.catchUps, 1);
    } finally {
      replica.stop();
    }
  });

  t('10k bindings are listed, and watched as they are written', async () => {
    const watcher = await b.another();
    const replica = new StoreReplica(watcher, systemClock, { change: () => {}, state: () => {} }, { host: 'h1', heartbeatMs: 500 });
    await replica.start();
    try {
      const N = 10_000;
      for (let k = 0; k < N; k += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => store.publish(binding(`b${k + j}`, 1))));
      await until(() => replica.bindings.size === N, `${N} bindings in the replica`, 60_000);
      const snap = await store.snapshot();
      assert.is(snap.bindings.length, N);
      assert.equal(new Set(snap.bindings.map((x) => x.identity)), new Set(replica.bindings.keys()));
    } finally {
      replica.stop();
      await watcher.close();
    }
  });

  t.run();
}

const e = embedded();
cases(e);

let cluster: EtcdCluster | undefined;
const start = suite('store conformance: etcd up');
start('a single-member etcd starts in its namespace', async () => {
  cluster = await EtcdCluster.start(1);
  assert.is(cluster.endpoints.length, 1);
});
start.run();
cases(etcd(() => cluster!));
const stop = suite('store conformance: etcd down');
stop('the etcd members stop', async () => {
  await cluster?.destroy();
  await e.done();
});
stop.run();
