import { test } from 'uvu';
import * as assert from 'uvu/assert';
import Database from 'better-sqlite3';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { parseConfig } from '../src/config/config.js';
import { NviError } from '../src/base/errors.js';
import { writeCertificate, pkiPaths } from '../src/trust/pki.js';
import { openStore, seedStore } from '../src/store/open-store.js';
import { SqliteStore } from '../src/store/sqlite-store.js';
import { STALE_EPOCH, STORE_UNAVAILABLE, type StoreChange } from '../src/store/store.js';
import { T0, bind, hostRecord, makePki } from './pki-fixture.js';

const pki = await makePki();

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'nvi-store-'));
}

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, NviError);
    assert.is((e as NviError).code, code);
    assert.match((e as Error).message, message);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

function throwsWith(f: () => unknown, code: string, message: RegExp): Promise<void> {
  return rejectsWith(Promise.resolve().then(f), code, message);
}

/** The changes `store` reports after its current revision until `n` have arrived (or 2 s have passed). */
async function collect(store: SqliteStore, n: number): Promise<{ changes: StoreChange[]; done: Promise<void>; stop: () => void }> {
  const changes: StoreChange[] = [];
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  const stop = store.watch((await store.snapshot()).revision, {
    changes: (list) => {
      changes.push(...list);
      if (changes.length >= n) resolve();
    },
    end: () => resolve(),
  });
  const timer = setTimeout(resolve, 2000);
  return { changes, done: done.then(() => clearTimeout(timer)), stop };
}

test('a binding, a host and a policy read back as published', async () => {
  const s = SqliteStore.open(join(tmp(), 'store.db'));
  const b = bind(pki.web1);
  await s.publish(b);
  assert.equal(await s.lookup(b.identity), b);
  assert.is(await s.lookup(pki.web2.identity), undefined);
  const h = pki.hosts.hosts.get('h1')!;
  await s.publishHost(h);
  assert.equal(await s.lookupHost('h1'), h);
  assert.is(await s.lookupHost('h9'), undefined);
  assert.is(await s.policy(), undefined);
  await s.publishPolicy({ revision: 1, document: '{"a":1}', signature: 's1' });
  await s.publishPolicy({ revision: 2, document: '{"a":2}', signature: 's2' });
  assert.equal(await s.policy(), { revision: 2, document: '{"a":2}', signature: 's2' });
  await s.close();
});

test('a newer epoch replaces the binding', async () => {
  const s = SqliteStore.open(join(tmp(), 'store.db'));
  await s.publish(bind(pki.web1, { epoch: 1 }));
  const moved = bind(pki.web1, { epoch: 2, host: 'h2', hostAddress: '10.77.0.2' });
  await s.publish(moved);
  assert.equal(await s.lookup(pki.web1.identity), moved);
  await s.close();
});

test('an older epoch is refused and the newer binding kept', async () => {
  const s = SqliteStore.open(join(tmp(), 'store.db'));
  const moved = bind(pki.web1, { epoch: 2, host: 'h2', hostAddress: '10.77.0.2' });
  await s.publish(moved);
  await rejectsWith(s.publish(bind(pki.web1, { epoch: 1 })), STALE_EPOCH, /epoch 1 refused: the store holds epoch 2 on host h2/);
  assert.equal(await s.lookup(pki.web1.identity), moved);
  await s.close();
});

test('the same epoch on another host is refused; on the same host it renews', async () => {
  const s = SqliteStore.open(join(tmp(), 'store.db'));
  await s.publish(bind(pki.web1, { epoch: 3 }));
  await rejectsWith(s.publish(bind(pki.web1, { epoch: 3, host: 'h2', hostAddress: '10.77.0.2' })), STALE_EPOCH, /a move publishes epoch 4/);
  const renewed = bind(pki.web1, { epoch: 3, notAfter: new Date(T0 + 7_200_000).toISOString() });
  await s.publish(renewed);
  assert.equal(await s.lookup(pki.web1.identity), renewed);
  await s.close();
});

test('two stores on the same file see each other\'s writes through watch()', async () => {
  const path = join(tmp(), 'store.db');
  const a = SqliteStore.open(path, { pollMs: 5 });
  const b = SqliteStore.open(path, { pollMs: 5 });
  const seenByB = await collect(b, 3);
  const seenByA = await collect(a, 4);
  await a.publish(bind(pki.web1));
  await a.publishHost(pki.hosts.hosts.get('h1')!);
  await a.publishPolicy({ revision: 1, document: '{}', signature: 's' });
  await seenByB.done;
  assert.equal(seenByB.changes, [
    { kind: 'binding', identity: pki.web1.identity, record: bind(pki.web1) },
    { kind: 'host', host: 'h1', record: pki.hosts.hosts.get('h1')! },
    { kind: 'policy', record: { revision: 1, document: '{}', signature: 's' } },
  ]);
  assert.equal(await b.lookup(pki.web1.identity), bind(pki.web1));
  await b.publish(bind(pki.web2));
  await seenByA.done;
  assert.equal(seenByA.changes.slice(-1), [{ kind: 'binding', identity: pki.web2.identity, record: bind(pki.web2) }]);
  await a.close();
  await b.close();
});

test('watch() reports nothing from before it started, and nothing for an identical publish', async () => {
  const s = SqliteStore.open(join(tmp(), 'store.db'), { pollMs: 5 });
  await s.publish(bind(pki.web1));
  const seen = await collect(s, 1);
  await s.publish(bind(pki.web1)); // identical: no change
  await s.publishHost(pki.hosts.hosts.get('h2')!);
  await seen.done;
  assert.equal(seen.changes, [{ kind: 'host', host: 'h2', record: pki.hosts.hosts.get('h2')! }]);
  seen.stop();
  await s.close();
});

test('a store whose directory does not exist is unavailable', async () => {
  await throwsWith(() => SqliteStore.open(join(tmp(), 'no', 'such', 'store.db')), STORE_UNAVAILABLE, /directory .* does not exist/);
});

test('a file that is not a database is unavailable as corrupt', async () => {
  const path = join(tmp(), 'store.db');
  writeFileSync(path, 'this is not a database, it only looks like a store file'.repeat(100));
  await throwsWith(() => SqliteStore.open(path), STORE_UNAVAILABLE, /corrupt or not an SQLite database/);
});

test('a directory in place of the file is unavailable', async () => {
  const path = join(tmp(), 'store.db');
  mkdirSync(path);
  await throwsWith(() => SqliteStore.open(path), STORE_UNAVAILABLE, /cannot open the file/);
});

test('a database with another schema version is unavailable', async () => {
  const path = join(tmp(), 'store.db');
  const raw = new Database(path);
  raw.pragma('user_version = 9');
  raw.close();
  await throwsWith(() => SqliteStore.open(path), STORE_UNAVAILABLE, /schema version 9/);
});

test('a write while another process holds the write lock past the busy timeout is unavailable as locked', async () => {
  const path = join(tmp(), 'store.db');
  const s = SqliteStore.open(path, { busyTimeoutMs: 20 });
  const other = new Database(path);
  other.exec('BEGIN IMMEDIATE');
  await rejectsWith(s.publish(bind(pki.web1)), STORE_UNAVAILABLE, /locked by another process \(waited 20 ms\)/);
  other.exec('ROLLBACK');
  await s.publish(bind(pki.web1)); // and works again once the lock is gone
  other.close();
  await s.close();
});

test('a closed store is unavailable', async () => {
  const s = SqliteStore.open(join(tmp(), 'store.db'));
  await s.close();
  await rejectsWith(s.lookup(pki.web1.identity), STORE_UNAVAILABLE, /closed/);
});

function config(dir: string, store: Record<string, unknown>) {
  return parseConfig(
    {
      version: 1,
      pki: { dir: 'pki' },
      store,
      hosts: { h1: { address: '10.77.0.1' }, h2: { address: '10.77.0.2' } },
      tenants: {},
    },
    join(dir, 'nvi-switch.yaml'),
  );
}

test('openStore creates the directory of the embedded store', async () => {
  const dir = tmp();
  const s = await openStore(config(dir, { kind: 'embedded', path: 'state/deep/lab.db' }));
  assert.is(s.kind, 'embedded');
  await s.close();
});

test('openStore opens etcd without connecting (connections are made per request)', async () => {
  const dir = tmp();
  const s = await openStore(config(dir, { kind: 'etcd', endpoints: ['http://10.255.255.1:2379'] }));
  assert.is(s.kind, 'etcd');
  await s.close();
});

test('a version 1 store file is upgraded in place and keeps its bindings', async () => {
  const path = join(tmp(), 'old.db');
  const raw = new Database(path);
  raw.exec(`CREATE TABLE bindings (identity TEXT PRIMARY KEY, tenant TEXT NOT NULL, vm TEXT NOT NULL, host TEXT NOT NULL,
    host_address TEXT NOT NULL, epoch INTEGER NOT NULL, not_before TEXT NOT NULL, not_after TEXT NOT NULL, certificate TEXT NOT NULL, signature TEXT NOT NULL);
    CREATE TABLE hosts (host TEXT PRIMARY KEY, address TEXT NOT NULL, certificate TEXT NOT NULL);
    CREATE TABLE policy (revision INTEGER PRIMARY KEY, document TEXT NOT NULL);
    CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL);`);
  const b = bind(pki.web1);
  raw.prepare('INSERT INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').run(b.identity, b.tenant, b.vm, b.host, b.hostAddress, b.epoch, b.notBefore, b.notAfter, b.certificate, b.signature);
  raw.pragma('user_version = 1');
  raw.close();
  const s = SqliteStore.open(path);
  assert.equal(await s.lookup(b.identity), b);
  await s.publishPolicy({ revision: 1, document: '{}', signature: 'x' });
  assert.equal(await s.policy(), { revision: 1, document: '{}', signature: 'x' });
  assert.ok(await s.withdraw(b.identity, b.epoch), 'and version 3: a withdrawal leaves its epoch');
  assert.is(await s.lastEpoch(b.identity), b.epoch);
  await s.close();
});

test('a version 2 file is upgraded in place: its bindings stay, and withdrawals leave their epoch', async () => {
  const path = join(tmp(), 'store.db');
  const s2 = SqliteStore.open(path);
  const b = bind(pki.web1);
  await s2.publish(b);
  await s2.close();
  const raw = new Database(path);
  raw.exec('DROP TABLE withdrawn');
  raw.pragma('user_version = 2');
  raw.close();
  const s = SqliteStore.open(path);
  assert.equal(await s.lookup(b.identity), b);
  assert.is(await s.lastEpoch(b.identity), b.epoch);
  assert.ok(await s.withdraw(b.identity, b.epoch));
  assert.is(await s.lastEpoch(b.identity), b.epoch);
  await s.close();
  const check = new Database(path);
  assert.is(check.pragma('user_version', { simple: true }), 3);
  check.close();
});

test('seedStore publishes the enrolled hosts and names the others', async () => {
  const dir = tmp();
  const cfg = config(dir, { kind: 'embedded', path: 'lab.db' });
  const h1 = await hostRecord(pki.ca, 'h1', '10.77.0.1');
  writeCertificate(pkiPaths(cfg.pkiDir).hostCert('h1'), h1.certificate);
  const s = await openStore(cfg);
  const r = await seedStore(cfg, s, T0);
  assert.equal(r.published, ['h1']);
  assert.equal(r.skipped.map((x) => x.host), ['h2']);
  assert.match(r.skipped[0].reason, /not enrolled/);
  assert.equal(await s.lookupHost('h1'), h1);
  await s.close();
});

test('switches starting together on a fresh store file all open it (no lock error from the race to create it)', async () => {
  const dir = tmp();
  const file = join(dir, 'race.db');
  const module = new URL('../src/store/sqlite-store.js', import.meta.url).href;
  const script = `import(${JSON.stringify(module)}).then((m) => { const s = m.SqliteStore.open(${JSON.stringify(file)}); return s.publishHost({ host: 'h' + process.pid, address: '10.0.0.1', certificate: 'x' }).then(() => s.close()); }).catch((e) => { console.error(e.message); process.exit(1); });`;
  for (let round = 0; round < 3; round++) {
    const codes = await Promise.all(Array.from({ length: 6 }, () => new Promise<number>((resolve) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
      child.on('exit', (code) => resolve(code ?? 1));
    })));
    assert.equal(codes, [0, 0, 0, 0, 0, 0], `round ${round}`);
  }
  const db = new Database(file, { readonly: true });
  assert.is((db.prepare('SELECT count(*) AS n FROM hosts').get() as { n: number }).n, 18);
  db.close();
});

test.run();
