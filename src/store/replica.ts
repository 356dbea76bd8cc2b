// A host's replica of the mapping store: every binding, host record and the policy, kept
// current by list-then-watch, so a miss is answered on the host (a flood of misses for
// identities that do not exist costs the store nothing) and every change is pushed to the
// host the moment the store has it.
//
//   1. list (snapshot) at revision R; reconcile: changed records are reported, records that
//      are gone are reported as removed;
//   2. watch from R: changes arrive in revision order and are applied and reported one by
//      one, so nothing is lost or applied out of order;
//   3. the watch ends (compaction, a broken stream, a backend error): back to 1, at once after
//      a compaction, else after a backoff that doubles up to maxBackoffMs;
//   4. every heartbeatMs the host writes its heartbeat (store.heartbeat: its liveness lease
//      on etcd) and notes the revision; when the watch reaches it the replica is confirmed
//      current as of the write. A watch that does not reach it within stuckMs is stuck (it
//      can fail silently) and is replaced: back to 1.
//
// A binding whose epoch is below the one the replica holds is refused (kept out of the replica
// and reported): the store never takes a lower epoch, so it can only be a replay.
//
// Fresh: confirmed within staleMs. Lookups are answered only while fresh; otherwise they fail
// with STORE_UNAVAILABLE (a new cable fails closed), while the data path keeps using the
// cables it has. Up/down transitions are reported once each.

import { NviError } from '../base/errors.js';
import type { Clock } from '../base/clock.js';
import type { BindingRecord, HostRecord } from '../trust/records.js';
import { STORE_UNAVAILABLE, type MappingStore, type PolicyRecord, type StoreChange, type StoreSnapshot } from './store.js';

export interface ReplicaOptions {
  /** The host whose heartbeat this replica writes. */
  readonly host: string;
  readonly heartbeatMs?: number;
  readonly stuckMs?: number;
  readonly staleMs?: number;
  /** Longest wait between two attempts to list the store again (default 2 s: a store that comes back is used within about that). */
  readonly maxBackoffMs?: number;
}

export interface ReplicaListener {
  /** A record changed (after the replica applied it); `previous` is the binding it replaced, for a binding. */
  change(c: StoreChange, previous?: BindingRecord): void;
  /** The replica became fresh (up) or stale (down), with why. */
  state(up: boolean, why: string): void;
  /** A binding older than the one the replica holds appeared in the store, and was refused. */
  replay?(refused: BindingRecord, kept: BindingRecord): void;
}

export class StoreReplica {
  readonly bindings = new Map<string, BindingRecord>();
  readonly hosts = new Map<string, HostRecord>();
  policy: PolicyRecord | undefined;
  /** The store revision the replica reflects. */
  revision = 0;
  readonly counts = { lists: 0, listErrors: 0, watchEnds: 0, compactions: 0, stuck: 0, changes: 0, heartbeats: 0, heartbeatErrors: 0, refusedStale: 0, replaysRefused: 0, catchUps: 0 };
  private readonly heartbeatMs: number;
  private readonly stuckMs: number;
  private readonly staleMs: number;
  private readonly maxBackoffMs: number;
  private confirmedAt = -Infinity;
  private up = false;
  private stopWatch: (() => void) | undefined;
  private beat: { revision: number; at: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private backoffMs = 0;
  private syncing = false;
  private closed = false;
  private lastWhy = '';
  private readonly host: string;

  constructor(
    private readonly store: MappingStore,
    private readonly clock: Clock,
    private readonly listener: ReplicaListener,
    opts: ReplicaOptions,
  ) {
    this.host = opts.host;
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    this.stuckMs = opts.stuckMs ?? 3 * this.heartbeatMs;
    this.staleMs = opts.staleMs ?? 3 * this.heartbeatMs;
    this.maxBackoffMs = opts.maxBackoffMs ?? 2000;
  }

  /** List and watch until the replica is current the first time; afterwards it keeps itself current. */
  async start(): Promise<void> {
    await this.sync();
    this.timer = setInterval(() => void this.tick(), this.heartbeatMs);
    this.timer.unref();
    void this.tick();
  }

  /** True while the replica was confirmed current within staleMs. */
  get fresh(): boolean {
    return this.clock.now() - this.confirmedAt < this.staleMs;
  }

  lookup(identity: string): BindingRecord | undefined {
    this.requireFresh();
    return this.bindings.get(identity);
  }

  /**
   * The binding of `identity` read from the store itself, for a caller that has reason to
   * think the replica is behind its watch (a peer speaks for a VM the replica places
   * elsewhere). A newer record is applied as the watch would apply it; returns the replica's.
   */
  async latest(identity: string): Promise<BindingRecord | undefined> {
    this.counts.catchUps++;
    const record = await this.store.lookup(identity);
    if (record && record.epoch > (this.bindings.get(identity)?.epoch ?? -1)) this.apply({ kind: 'binding', identity, record });
    return this.lookup(identity);
  }

  lookupHost(host: string): HostRecord | undefined {
    this.requireFresh();
    return this.hosts.get(host);
  }

  stop(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.stopWatch?.();
    this.stopWatch = undefined;
  }

  private requireFresh(): void {
    if (this.fresh) return;
    this.counts.refusedStale++;
    throw new NviError(STORE_UNAVAILABLE, `mapping store unreachable: the host's replica was last confirmed ${this.sinceText()} (${this.lastWhy || 'not yet'})`);
  }

  private sinceText(): string {
    return Number.isFinite(this.confirmedAt) ? `${Math.round((this.clock.now() - this.confirmedAt) / 100) / 10} s ago` : 'never';
  }

  /** Steps 1-2: list, reconcile, watch from the list's revision. Retries with backoff until it succeeds. */
  private async sync(): Promise<void> {
    if (this.syncing || this.closed) return;
    this.syncing = true;
    try {
      for (;;) {
        this.stopWatch?.();
        this.stopWatch = undefined;
        let snap: StoreSnapshot;
        try {
          this.counts.lists++;
          snap = await this.store.snapshot();
        } catch (e) {
          this.counts.listErrors++;
          this.trouble(`list failed: ${(e as Error).message}`);
          if (this.closed) return;
          await this.backoff();
          continue;
        }
        if (this.closed) return;
        this.reconcile(snap);
        this.confirm(this.clock.now());
        this.backoffMs = 0;
        this.watchFrom(snap.revision);
        return;
      }
    } finally {
      this.syncing = false;
    }
  }

  private watchFrom(revision: number): void {
    this.stopWatch = this.store.watch(revision, {
      changes: (changes, rev) => {
        for (const c of changes) this.apply(c);
        if (rev > this.revision) this.revision = rev;
        if (this.beat && this.revision >= this.beat.revision) {
          this.confirm(this.beat.at);
          this.beat = undefined;
        }
      },
      end: (why) => {
        this.stopWatch = undefined;
        this.counts.watchEnds++;
        if (why.compacted) this.counts.compactions++;
        this.trouble(`watch ended: ${why.reason}`);
        if (this.closed) return;
        if (why.compacted) void this.sync();
        else void this.backoff().then(() => this.sync());
      },
    });
  }

  /** Step 4, every heartbeatMs: write the heartbeat, check that the previous one came through, report up/down. */
  private async tick(): Promise<void> {
    if (this.closed) return;
    const now = this.clock.now();
    if (this.beat && now - this.beat.at > this.stuckMs && !this.syncing && this.stopWatch) {
      this.counts.stuck++;
      this.trouble(`watch stuck: revision ${this.beat.revision} written ${now - this.beat.at} ms ago has not arrived`);
      this.beat = undefined;
      void this.sync();
    }
    if (!this.beat) {
      try {
        const revision = await this.store.heartbeat(this.host);
        this.counts.heartbeats++;
        this.beat = { revision, at: now };
        if (this.revision >= revision) {
          this.confirm(now);
          this.beat = undefined;
        }
      } catch (e) {
        this.counts.heartbeatErrors++;
        this.trouble(`heartbeat failed: ${(e as Error).message}`);
      }
    }
    this.report();
  }

  private confirm(at: number): void {
    if (at > this.confirmedAt) this.confirmedAt = at;
    this.report();
  }

  private trouble(why: string): void {
    this.lastWhy = why;
    this.report();
  }

  /** Report a change between fresh and stale, once. */
  private report(): void {
    const fresh = this.fresh;
    if (fresh === this.up) return;
    this.up = fresh;
    this.listener.state(fresh, fresh ? `current at revision ${this.revision}` : this.lastWhy || `no confirmation for ${this.staleMs} ms`);
  }

  private async backoff(): Promise<void> {
    this.backoffMs = Math.min(this.maxBackoffMs, Math.max(100, this.backoffMs * 2));
    const ms = this.backoffMs / 2 + Math.random() * (this.backoffMs / 2);
    await new Promise((r) => setTimeout(r, ms).unref());
  }

  /** Make the replica the snapshot, reporting each record that differs and each that is gone. */
  private reconcile(s: StoreSnapshot): void {
    const seen = new Set<string>();
    for (const b of s.bindings) {
      seen.add(b.identity);
      if (!sameJson(this.bindings.get(b.identity), b)) this.apply({ kind: 'binding', identity: b.identity, record: b });
    }
    for (const id of [...this.bindings.keys()]) if (!seen.has(id)) this.apply({ kind: 'binding', identity: id, record: undefined });
    const hosts = new Set<string>();
    for (const h of s.hosts) {
      hosts.add(h.host);
      if (!sameJson(this.hosts.get(h.host), h)) this.apply({ kind: 'host', host: h.host, record: h });
    }
    for (const h of [...this.hosts.keys()]) if (!hosts.has(h)) this.apply({ kind: 'host', host: h, record: undefined });
    if (s.policy && s.policy.revision !== this.policy?.revision) this.apply({ kind: 'policy', record: s.policy });
    this.revision = s.revision;
  }

  private apply(c: StoreChange): void {
    let previous: BindingRecord | undefined;
    if (c.kind === 'binding') {
      previous = this.bindings.get(c.identity);
      // The store only ever takes a higher epoch (compare-and-swap): a lower one is an old record
      // put back behind its back (a replay). The replica keeps the newer one.
      if (c.record && previous && c.record.epoch < previous.epoch) {
        this.counts.replaysRefused++;
        this.listener.replay?.(c.record, previous);
        return;
      }
      if (sameJson(previous, c.record)) return; // read early by latest(), now from the watch
      if (c.record) this.bindings.set(c.identity, c.record);
      else if (!this.bindings.delete(c.identity)) return;
    } else if (c.kind === 'host') {
      if (c.record) this.hosts.set(c.host, c.record);
      else if (!this.hosts.delete(c.host)) return;
    } else {
      this.policy = c.record;
    }
    this.counts.changes++;
    this.listener.change(c, previous);
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}
