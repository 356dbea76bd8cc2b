// The embedded mapping store: one SQLite file (better-sqlite3) that every switch process on
// one machine opens. WAL mode lets readers run beside the one writer; busy_timeout makes a
// writer wait for another process's write instead of failing at once. Every write appends
// to `changes`, and watch() polls it, so a switch sees what other processes published.
//
// Tables (schema version 1, PRAGMA user_version):
//   bindings  identity PK -> the signed BindingRecord; publish keeps the highest epoch
//   hosts     host PK -> HostRecord
//   policy    revision PK -> document (every revision kept; the highest is current)
//   changes   seq AUTOINCREMENT, kind ('binding' | 'host' | 'policy'), key
//
// Every SQLite failure (busy past the timeout, corrupt file, missing directory, no
// permission, closed store) reaches the caller as NviError(STORE_UNAVAILABLE) saying which.

import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { NviError } from '../base/errors.js';
import { STORE_UNAVAILABLE, type MappingStore, type PolicyRecord, type StoreChange } from './store.js';
import { type BindingRecord, type HostRecord } from '../trust/records.js';

/** A publish with an older epoch than the store holds (a replay from before a migration). */
export const STALE_EPOCH = 'NVI_ERR_STALE_EPOCH';

const SCHEMA_VERSION = 1;
/** Keep this many change rows; a watcher polling every 200 ms never falls that far behind. */
const CHANGES_KEPT = 65_536;
const CHANGES_TRIM_EVERY = 1024;
const POLL_BATCH = 1000;

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
CREATE TABLE IF NOT EXISTS hosts (
  host TEXT PRIMARY KEY,
  address TEXT NOT NULL,
  certificate TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy (
  revision INTEGER PRIMARY KEY,
  document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  key TEXT NOT NULL
);
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

function sameBinding(a: BindingRow, b: BindingRecord): boolean {
  const r = toRecord(a);
  return (Object.keys(r) as (keyof BindingRecord)[]).every((k) => r[k] === b[k]);
}

function toChange(r: ChangeRow): StoreChange | undefined {
  switch (r.kind) {
    case 'binding':
      return { kind: 'binding', identity: r.key };
    case 'host':
      return { kind: 'host', host: r.key };
    case 'policy':
      return { kind: 'policy', revision: Number(r.key) };
    default:
      return undefined; // written by a newer version; not ours to report
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
      policy: db.prepare<[], PolicyRecord>('SELECT revision, document FROM policy ORDER BY revision DESC LIMIT 1'),
      putPolicy: db.prepare<[string], { revision: number }>(
        'INSERT INTO policy (revision, document) SELECT coalesce(max(revision), 0) + 1, ? FROM policy RETURNING revision',
      ),
      change: db.prepare<[string, string]>('INSERT INTO changes (kind, key) VALUES (?, ?)'),
      trim: db.prepare<[number]>('DELETE FROM changes WHERE seq <= ?'),
      lastSeq: db.prepare<[], { seq: number | null }>('SELECT max(seq) AS seq FROM changes'),
      since: db.prepare<[number, number], ChangeRow>('SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq LIMIT ?'),
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

  /**
   * Store a binding. Refused (STALE_EPOCH) when the store holds a higher epoch for the
   * identity, or the same epoch on another host: a move to another host is a migration
   * and publishes epoch + 1 (NVI Algorithm step 6). The same epoch on the same host
   * replaces the record (a renewal); an identical record changes nothing.
   */
  async publish(record: BindingRecord): Promise<void> {
    if (!Number.isSafeInteger(record.epoch) || record.epoch < 1) {
      throw new NviError(STALE_EPOCH, `binding for ${record.identity}: epoch must be an integer from 1, got ${JSON.stringify(record.epoch)}`);
    }
    this.run('publish', () =>
      this.db
        .transaction(() => {
          const cur = this.q.binding.get(record.identity);
          if (cur) {
            if (record.epoch < cur.epoch) {
              throw new NviError(
                STALE_EPOCH,
                `binding for ${record.identity} (${record.vm}) at epoch ${record.epoch} refused: the store holds epoch ${cur.epoch} on host ${cur.host}; publish epoch ${cur.epoch + 1} or later`,
              );
            }
            if (record.epoch === cur.epoch && (record.host !== cur.host || record.hostAddress !== cur.host_address)) {
              throw new NviError(
                STALE_EPOCH,
                `binding for ${record.identity} (${record.vm}) on ${record.host} ${record.hostAddress} refused: epoch ${cur.epoch} already binds it to ${cur.host} ${cur.host_address}; a move publishes epoch ${cur.epoch + 1}`,
              );
            }
            if (sameBinding(cur, record)) return;
          }
          this.q.putBinding.run(record);
          this.changed('binding', record.identity);
        })
        .immediate(),
    );
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
          this.q.putHost.run({ host: record.host, address: record.address, certificate: record.certificate });
          this.changed('host', record.host);
        })
        .immediate(),
    );
  }

  async policy(): Promise<PolicyRecord | undefined> {
    return this.run('policy', () => {
      const row = this.q.policy.get();
      return row && { revision: row.revision, document: row.document };
    });
  }

  async publishPolicy(document: string): Promise<number> {
    return this.run('publishPolicy', () =>
      this.db
        .transaction(() => {
          const { revision } = this.q.putPolicy.get(document)!;
          this.changed('policy', String(revision));
          return revision;
        })
        .immediate(),
    );
  }

  /** Inside a write transaction: log the change, trimming old rows now and then. */
  private changed(kind: StoreChange['kind'], key: string): void {
    const seq = Number(this.q.change.run(kind, key).lastInsertRowid);
    if (seq % CHANGES_TRIM_EVERY === 0) this.q.trim.run(seq - CHANGES_KEPT);
  }

  /**
   * Report every change logged after this call, by this or any other process, polling
   * every `pollMs`. The timer is unref'd: watching does not keep the process alive.
   */
  watch(listener: (change: StoreChange) => void): () => void {
    let last = this.run('watch', () => this.q.lastSeq.get()?.seq ?? 0);
    const poll = (): void => {
      let rows: ChangeRow[];
      try {
        rows = this.q.since.all(last, POLL_BATCH);
      } catch {
        this.pollErrors++; // busy or closed underneath us: try again at the next tick
        return;
      }
      for (const row of rows) {
        last = row.seq;
        const change = toChange(row);
        if (change) listener(change);
      }
    };
    const timer = setInterval(poll, this.pollMs);
    timer.unref();
    const stop = (): void => {
      clearInterval(timer);
      this.stops.delete(stop);
    };
    this.stops.add(stop);
    return stop;
  }

  async close(): Promise<void> {
    for (const stop of [...this.stops]) stop();
    if (this.db.open) this.db.close();
  }
}
