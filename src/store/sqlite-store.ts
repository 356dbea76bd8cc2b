// The embedded mapping store: one SQLite file (better-sqlite3) that every switch process on
// one machine opens. WAL mode lets readers run beside the one writer; busy_timeout makes a
// writer wait for another process's write instead of failing at once. Every write appends
// to `changes` (its seq is the store's revision, with the record written), and watch()
// reads it when the WAL file changes (inotify) and every pollMs, so a switch sees what other
// processes published, in order, within milliseconds.
//
// Tables (schema version 3, PRAGMA user_version; version 1 and 2 files are upgraded in place):
//   bindings  identity PK -> the signed BindingRecord; publish keeps the highest epoch
//   withdrawn identity PK -> the epoch its binding was last withdrawn at (a tombstone)
//   hosts     host PK -> HostRecord
//   policy    revision PK -> document, signature (every revision kept; the highest is current)
//   changes   seq AUTOINCREMENT, kind ('binding' | 'host' | 'policy' | 'alive'), key, value
//             (the record as JSON; NULL for a removal)
//
// Every SQLite failure (busy past the timeout, corrupt file, missing directory, no
// permission, closed store) reaches the caller as NviError(STORE_UNAVAILABLE) saying which.

import Database from 'better-sqlite3';
import { existsSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { NviError } from '../base/errors.js';
import { epochVerdict } from './binding-rule.js';
import {
  STALE_EPOCH, STALE_REVISION, STORE_UNAVAILABLE,
  type MappingStore, type PolicyRecord, type StoreChange, type StoreSnapshot, type StoreWatch,
} from './store.js';
import type { BindingRecord, HostRecord } from '../trust/records.js';

const SCHEMA_VERSION = 3;
/** Keep this many change rows; a watcher polling every 200 ms never falls that far behind. */
const CHANGES_KEPT = 65_536;
const CHANGES_TRIM_EVERY = 1024;
const POLL_BATCH = 1000;
/** Polls in a row that may fail before a watch ends (10 x 200 ms). */
const WATCH_FAILURES = 10;

export interface SqliteStoreOptions {
  /** How often watch() polls the changes table, ms (default 200). */
  readonly pollMs?: number;
  /** How long a write waits for another process's write, ms (default 5000). */
  readonly busyTimeoutMs?: number;
}

interface BindingRow {
  identity: string;
  tenant: string;
  vm: string;
  host: string;
  host_address: string;
  epoch: number;
  not_before: string;
  not_after: string;
  certificate: string;
  signature: string;
}

interface ChangeRow {
  seq: number;
  kind: string;
  key: string;
  value: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS bindings (
  identity TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  vm TEXT NOT NULL,
  host TEXT NOT NULL,
  host_address TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  not_before TEXT NOT NULL,
  not_after TEXT NOT NULL,
  certificate TEXT NOT NULL,
  signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS withdrawn (
  identity TEXT PRIMARY KEY,
  epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
  host TEXT PRIMARY KEY,
  address TEXT NOT NULL,
  certificate TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy (
  revision INTEGER PRIMARY KEY,
  document TEXT NOT NULL,
  signature TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT
);
`;

/** Version 1 -> 2: change rows carry the record, policies their signature. */
const UPGRADE_1_TO_2 = `
ALTER TABLE policy ADD COLUMN signature TEXT NOT NULL DEFAULT '';
ALTER TABLE changes ADD COLUMN value TEXT;
`;

/** Version 2 -> 3: withdrawn bindings leave their epoch. */
const UPGRADE_2_TO_3 = `
CREATE TABLE IF NOT EXISTS withdrawn (identity TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
`;

function toRecord(r: BindingRow): BindingRecord {
  return {
    identity: r.identity,
    tenant: r.tenant,
    vm: r.vm,
    host: r.host,
    hostAddress: r.host_address,
    epoch: r.epoch,
    notBefore: r.not_before,
    notAfter: r.not_after,
    certificate: r.certificate,
    signature: r.signature,
  };
}

function toChange(r: ChangeRow): StoreChange | undefined {
  switch (r.kind) {
    case 'binding':
      return { kind: 'binding', identity: r.key, record: r.value === null ? undefined : (JSON.parse(r.value) as BindingRecord) };
    case 'host':
      return { kind: 'host', host: r.key, record: r.value === null ? undefined : (JSON.parse(r.value) as HostRecord) };
    case 'policy':
      return r.value === null ? undefined : { kind: 'policy', record: JSON.parse(r.value) as PolicyRecord };
    default:
      return undefined; // heartbeats, or written by a newer version: not ours to report
  }
}

/** Turn a better-sqlite3 failure into STORE_UNAVAILABLE naming the file and the reason; rethrow anything else. */
/** Something to wait on for a synchronous sleep (Atomics.wait on a value that never changes). */
const SLEEP = new Int32Array(new SharedArrayBuffer(4));

function unavailable(path: string, op: string, busyMs: number, e: unknown): Error {
  if (e instanceof NviError) return e;
  const err = e as Error & { code?: string };
  const code = err.code ?? '';
  let why: string | undefined;
  if (e instanceof Database.SqliteError) {
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) why = `the database is locked by another process (waited ${busyMs} ms)`;
    else if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') why = `the file is corrupt or not an SQLite database (${err.message})`;
    else if (code.startsWith('SQLITE_CANTOPEN')) why = `cannot open the file (${err.message}); check that it and its directory are readable and writable`;
    else if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_PERM' || code === 'SQLITE_AUTH') why = `no permission to write (${err.message})`;
    else if (code === 'SQLITE_FULL') why = 'the disk is full';
    else why = `${code}: ${err.message}`;
  } else if (e instanceof TypeError && /directory does not exist/.test(err.message)) {
    why = `directory ${dirname(path)} does not exist`;
  } else if (e instanceof TypeError && /connection is not open/.test(err.message)) {
    why = 'the store is closed';
  }
  if (why === undefined) return err;
  return new NviError(STORE_UNAVAILABLE, `store ${path}: ${op}: ${why}`);
}

export class SqliteStore implements MappingStore {
  readonly kind = 'embedded';
  /** Polls of the changes table that failed (retried at the next interval). */
  pollErrors = 0;
  private readonly pollMs: number;
  private readonly busyMs: number;
  private readonly stops = new Set<() => void>();
  private readonly q;

  private constructor(
    readonly path: string,
    private readonly db: Database.Database,
    opts: SqliteStoreOptions,
  ) {
    this.pollMs = opts.pollMs ?? 200;
    this.busyMs = opts.busyTimeoutMs ?? 5000;
    this.q = {
      binding: db.prepare<[string], BindingRow>('SELECT * FROM bindings WHERE identity = ?'),
      putBinding: db.prepare(
        `INSERT INTO bindings (identity, tenant, vm, host, host_address, epoch, not_before, not_after, certificate, signature)
         VALUES (@identity, @tenant, @vm, @host, @hostAddress, @epoch, @notBefore, @notAfter, @certificate, @signature)
         ON CONFLICT (identity) DO UPDATE SET tenant = excluded.tenant, vm = excluded.vm, host = excluded.host,
           host_address = excluded.host_address, epoch = excluded.epoch, not_before = excluded.not_before,
           not_after = excluded.not_after, certificate = excluded.certificate, signature = excluded.signature`,
      ),
      host: db.prepare<[string], HostRecord>('SELECT host, address, certificate FROM hosts WHERE host = ?'),
      putHost: db.prepare(
        `INSERT INTO hosts (host, address, certificate) VALUES (@host, @address, @certificate)
         ON CONFLICT (host) DO UPDATE SET address = excluded.address, certificate = excluded.certificate`,
      ),
      dropBinding: db.prepare<[string, number]>('DELETE FROM bindings WHERE identity = ? AND epoch = ?'),
      withdrawn: db.prepare<[string], { epoch: number }>('SELECT epoch FROM withdrawn WHERE identity = ?'),
      putWithdrawn: db.prepare<[string, number]>(
        'INSERT INTO withdrawn (identity, epoch) VALUES (?, ?) ON CONFLICT (identity) DO UPDATE SET epoch = max(epoch, excluded.epoch)',
      ),
      allBindings: db.prepare<[], BindingRow>('SELECT * FROM bindings'),
      allHosts: db.prepare<[], HostRecord>('SELECT host, address, certificate FROM hosts'),
      policy: db.prepare<[], PolicyRecord>('SELECT revision, document, signature FROM policy ORDER BY revision DESC LIMIT 1'),
      putPolicy: db.prepare<[number, string, string]>('INSERT INTO policy (revision, document, signature) VALUES (?, ?, ?)'),
      change: db.prepare<[string, string, string | null]>('INSERT INTO changes (kind, key, value) VALUES (?, ?, ?)'),
      trim: db.prepare<[number]>('DELETE FROM changes WHERE seq <= ?'),
      revision: db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'changes'"),
      oldest: db.prepare<[], { seq: number | null }>('SELECT min(seq) AS seq FROM changes'),
      since: db.prepare<[number, number], ChangeRow>('SELECT seq, kind, key, value FROM changes WHERE seq > ? ORDER BY seq LIMIT ?'),
    };
  }

  /**
   * Open (creating the tables if needed) the store file at `path`; its directory must exist.
   * Switches starting together race to create a fresh file: each may hold a read lock and
   * want to write (WAL mode, schema), which SQLite breaks by failing one of them at once,
   * whatever the busy timeout. The loser backs off and opens again, within busyMs in all.
   */
  static open(path: string, opts: SqliteStoreOptions = {}): SqliteStore {
    const busyMs = opts.busyTimeoutMs ?? 5000;
    if (!existsSync(dirname(path))) {
      throw new NviError(STORE_UNAVAILABLE, `store ${path}: open: directory ${dirname(path)} does not exist`);
    }
    const deadline = Date.now() + busyMs;
    for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
      try {
        return SqliteStore.openOnce(path, opts, busyMs);
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        const busy = e instanceof Database.SqliteError && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
        if (!busy || Date.now() + wait > deadline) throw unavailable(path, 'open', busyMs, e);
        Atomics.wait(SLEEP, 0, 0, wait + Math.floor(Math.random() * wait)); // start-up only: a synchronous back-off
      }
    }
  }

  private static openOnce(path: string, opts: SqliteStoreOptions, busyMs: number): SqliteStore {
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { timeout: busyMs });
      db.pragma(`busy_timeout = ${busyMs}`);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL'); // durable across process crashes in WAL mode
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version === 0) {
        const d = db;
        d.transaction(() => {
          d.exec(SCHEMA);
          d.pragma(`user_version = ${SCHEMA_VERSION}`);
        }).immediate();
      } else if (version === 1 || version === 2) {
        const d = db;
        d.transaction(() => {
          if (version === 1) d.exec(UPGRADE_1_TO_2);
          d.exec(UPGRADE_2_TO_3);
          d.pragma(`user_version = ${SCHEMA_VERSION}`);
        }).immediate();
      } else if (version !== SCHEMA_VERSION) {
        throw new NviError(STORE_UNAVAILABLE, `store ${path}: open: schema version ${version}, this nvi-switch reads version ${SCHEMA_VERSION}`);
      }
      return new SqliteStore(path, db, opts);
    } catch (e) {
      db?.close();
      throw e;
    }
  }

  private run<T>(op: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw unavailable(this.path, op, this.busyMs, e);
    }
  }

  async lookup(identity: string): Promise<BindingRecord | undefined> {
    return this.run('lookup', () => {
      const row = this.q.binding.get(identity);
      return row && toRecord(row);
    });
  }

  /** Store a binding under the epoch rule (binding-rule.ts), in one write transaction. */
  async publish(record: BindingRecord): Promise<void> {
    this.run('publish', () =>
      this.db
        .transaction(() => {
          const row = this.q.binding.get(record.identity);
          const v = epochVerdict(row && toRecord(row), record, this.q.withdrawn.get(record.identity)?.epoch);
          if (!v.write) {
            if (v.same) return;
            throw new NviError(STALE_EPOCH, v.why);
          }
          this.q.putBinding.run(record);
          this.changed('binding', record.identity, JSON.stringify(record));
        })
        .immediate(),
    );
  }

  async withdraw(identity: string, epoch: number): Promise<boolean> {
    return this.run('withdraw', () =>
      this.db
        .transaction(() => {
          if (this.q.dropBinding.run(identity, epoch).changes === 0) return false;
          this.q.putWithdrawn.run(identity, epoch);
          this.changed('binding', identity, null);
          return true;
        })
        .immediate(),
    );
  }

  async lastEpoch(identity: string): Promise<number> {
    return this.run('lastEpoch', () => Math.max(this.q.binding.get(identity)?.epoch ?? 0, this.q.withdrawn.get(identity)?.epoch ?? 0));
  }

  async lookupHost(host: string): Promise<HostRecord | undefined> {
    return this.run('lookupHost', () => {
      const row = this.q.host.get(host);
      return row && { host: row.host, address: row.address, certificate: row.certificate };
    });
  }

  async publishHost(record: HostRecord): Promise<void> {
    this.run('publishHost', () =>
      this.db
        .transaction(() => {
          const cur = this.q.host.get(record.host);
          if (cur && cur.address === record.address && cur.certificate === record.certificate) return;
          const r = { host: record.host, address: record.address, certificate: record.certificate };
          this.q.putHost.run(r);
          this.changed('host', record.host, JSON.stringify(r));
        })
        .immediate(),
    );
  }

  async policy(): Promise<PolicyRecord | undefined> {
    return this.run('policy', () => {
      const row = this.q.policy.get();
      return row && { revision: row.revision, document: row.document, signature: row.signature };
    });
  }

  async publishPolicy(record: PolicyRecord): Promise<void> {
    this.run('publishPolicy', () =>
      this.db
        .transaction(() => {
          const cur = this.q.policy.get();
          if (cur && record.revision <= cur.revision) {
            throw new NviError(STALE_REVISION, `policy revision ${record.revision} refused: the store holds revision ${cur.revision}`);
          }
          const r = { revision: record.revision, document: record.document, signature: record.signature };
          this.q.putPolicy.run(r.revision, r.document, r.signature);
          this.changed('policy', String(r.revision), JSON.stringify(r));
        })
        .immediate(),
    );
  }

  async snapshot(): Promise<StoreSnapshot> {
    return this.run('snapshot', () =>
      this.db.transaction(() => ({
        revision: this.revisionNow(),
        bindings: this.q.allBindings.all().map(toRecord),
        hosts: this.q.allHosts.all().map((h) => ({ host: h.host, address: h.address, certificate: h.certificate })),
        policy: this.q.policy.get(),
      }))(),
    );
  }

  /** A change row of kind 'alive': watchers skip it, but their revision moves past it. */
  async heartbeat(host: string): Promise<number> {
    return this.run('heartbeat', () => this.db.transaction(() => this.changed('alive', host, String(Date.now()))).immediate());
  }

  async compact(revision: number): Promise<void> {
    this.run('compact', () => this.q.trim.run(revision));
  }

  /** The revision of the last write (0 for a new store). */
  private revisionNow(): number {
    return this.q.revision.get()?.seq ?? 0;
  }

  /** Inside a write transaction: log the change with its value, trimming old rows now and then. Returns its revision. */
  private changed(kind: string, key: string, value: string | null): number {
    const seq = Number(this.q.change.run(kind, key, value).lastInsertRowid);
    if (seq % CHANGES_TRIM_EVERY === 0) this.q.trim.run(seq - CHANGES_KEPT);
    return seq;
  }

  /**
   * Report every change after `fromRevision`, by this or any other process, polling every
   * `pollMs`. When rows the watcher still needs were trimmed or compacted away, the watch
   * ends as compacted. The timer is unref'd: watching does not keep the process alive.
   */
  watch(fromRevision: number, w: StoreWatch): () => void {
    let last = fromRevision;
    let timer: NodeJS.Timeout | undefined;
    let wake: FSWatcher | undefined;
    const stop = (): void => {
      if (timer) clearInterval(timer);
      timer = undefined;
      wake?.close();
      this.stops.delete(stop);
    };
    const end = (compacted: boolean, reason: string): void => {
      stop();
      w.end({ compacted, reason });
    };
    let failures = 0;
    const poll = (): void => {
      for (;;) {
        let rows: ChangeRow[];
        let oldest: number | null;
        let newest: number;
        try {
          oldest = this.q.oldest.get()?.seq ?? null;
          newest = this.revisionNow();
          rows = this.q.since.all(last, POLL_BATCH);
          failures = 0;
        } catch (e) {
          // Busy under another process's write: try again next tick; a store that stays broken ends the watch.
          this.pollErrors++;
          if (++failures >= WATCH_FAILURES) end(false, (unavailable(this.path, 'watch', this.busyMs, e) as Error).message);
          return;
        }
        if (last < newest && (oldest === null || oldest > last + 1)) {
          end(true, `changes after revision ${last} are gone (the oldest kept is ${oldest ?? 'none'}, the store is at ${newest})`);
          return;
        }
        if (rows.length === 0) return;
        const changes: StoreChange[] = [];
        for (const row of rows) {
          const c = toChange(row);
          if (c) changes.push(c);
        }
        last = rows[rows.length - 1].seq;
        w.changes(changes, last);
        if (rows.length < POLL_BATCH || timer === undefined) return;
      }
    };
    timer = setInterval(poll, this.pollMs);
    timer.unref();
    // Every write goes through the WAL file first: its change wakes the watcher at once (the
    // interval stays, for file systems without inotify and for writes this misses).
    let queued = false;
    try {
      wake = fsWatch(`${this.path}-wal`, { persistent: false }, () => {
        if (queued || timer === undefined) return;
        queued = true;
        setImmediate(() => {
          queued = false;
          if (timer !== undefined) poll();
        });
      });
      wake.on('error', () => wake?.close());
    } catch {
      wake = undefined; // no WAL file to watch: polling alone
    }
    this.stops.add(stop);
    return stop;
  }

  async close(): Promise<void> {
    for (const stop of [...this.stops]) stop();
    if (this.db.open) this.db.close();
  }
}
