// The mapping store on etcd (many machines): one key per record under the cloud's prefix,
// each value the record as JSON, etcd's revision as the store's.
//
//   <prefix>binding/<identity>   BindingRecord; written by compare-and-swap on its mod revision
//   <prefix>withdrawn/<identity> {"epoch": N}: the epoch its binding was last withdrawn at
//   <prefix>host/<name>          HostRecord
//   <prefix>policy               PolicyRecord; written only above the stored revision
//   <prefix>alive/<host>         the host's heartbeat, on a lease per host (liveness)
//
// The epoch compare-and-swap: read the binding, apply the epoch rule (binding-rule.ts), and
// write only if the key is still at the revision read (or still absent); a lost race reads
// again, so of two hosts racing for one VM exactly one wins.

import { NviError } from '../base/errors.js';
import type { BindingRecord, HostRecord } from '../trust/records.js';
import { epochVerdict } from './binding-rule.js';
import { EtcdClient, type EtcdTls, type KeyValue, type TxnCompare, type WatchEvent } from './etcd-client.js';
import {
  STALE_EPOCH, STALE_REVISION, STORE_UNAVAILABLE,
  type MappingStore, type PolicyRecord, type StoreChange, type StoreSnapshot, type StoreWatch,
} from './store.js';

export interface EtcdStoreOptions {
  readonly endpoints: readonly string[];
  /** Every key starts with it, e.g. "/nvi/". */
  readonly prefix: string;
  readonly tls?: EtcdTls;
  readonly timeoutMs?: number;
  /** Seconds a host's lease lives without a heartbeat (default 10). */
  readonly leaseTtl?: number;
}

/** Compare-and-swap rounds before a write gives up (each lost round means another writer won). */
const CAS_ROUNDS = 8;
/** Keys a snapshot reads per request. */
const PAGE = 2000;

export class EtcdStore implements MappingStore {
  readonly kind = 'etcd';
  readonly client: EtcdClient;
  /** Keys under the prefix whose value is not a record (skipped by snapshots and watches). */
  malformedKeys = 0;
  private readonly prefix: string;
  private readonly leaseTtl: number;
  private readonly leases = new Map<string, string>();
  private readonly stops = new Set<() => void>();

  constructor(opts: EtcdStoreOptions) {
    this.client = new EtcdClient(opts.endpoints, { tls: opts.tls, timeoutMs: opts.timeoutMs });
    this.prefix = opts.prefix;
    this.leaseTtl = opts.leaseTtl ?? 10;
  }

  private key(kind: 'binding' | 'withdrawn' | 'host' | 'alive', name: string): string {
    return `${this.prefix}${kind}/${name}`;
  }

  private get policyKey(): string {
    return `${this.prefix}policy`;
  }

  async lookup(identity: string): Promise<BindingRecord | undefined> {
    const r = await this.client.range(this.key('binding', identity));
    return r.kvs.length > 0 ? parse<BindingRecord>(r.kvs[0]) : undefined;
  }

  async publish(record: BindingRecord): Promise<void> {
    const key = this.key('binding', record.identity);
    const tombKey = this.key('withdrawn', record.identity);
    for (let round = 0; round < CAS_ROUNDS; round++) {
      const [r, w] = await Promise.all([this.client.range(key), this.client.range(tombKey)]);
      const cur = r.kvs[0];
      const tomb = w.kvs[0];
      const v = epochVerdict(cur && parse<BindingRecord>(cur), record, tomb && withdrawnEpoch(tomb));
      if (!v.write) {
        if (v.same) return;
        throw new NviError(STALE_EPOCH, v.why);
      }
      const t = await this.client.txn([unchanged(key, cur), unchanged(tombKey, tomb)], [{ put: { key, value: JSON.stringify(record) } }]);
      if (t.succeeded) return;
    }
    throw new NviError(STORE_UNAVAILABLE, `binding for ${record.identity}: ${CAS_ROUNDS} rounds of compare-and-swap lost to other writers`);
  }

  async withdraw(identity: string, epoch: number): Promise<boolean> {
    const key = this.key('binding', identity);
    const r = await this.client.range(key);
    const cur = r.kvs[0];
    if (!cur || parse<BindingRecord>(cur).epoch !== epoch) return false;
    // The binding's epoch is above any withdrawn before it (the epoch rule): the tombstone only grows.
    const tomb = { put: { key: this.key('withdrawn', identity), value: JSON.stringify({ epoch }) } };
    const t = await this.client.txn([unchanged(key, cur)], [{ delete: { key } }, tomb]);
    return t.succeeded;
  }

  async lastEpoch(identity: string): Promise<number> {
    const [r, w] = await Promise.all([this.client.range(this.key('binding', identity)), this.client.range(this.key('withdrawn', identity))]);
    return Math.max(r.kvs[0] ? parse<BindingRecord>(r.kvs[0]).epoch : 0, w.kvs[0] ? withdrawnEpoch(w.kvs[0]) : 0);
  }

  async lookupHost(host: string): Promise<HostRecord | undefined> {
    const r = await this.client.range(this.key('host', host));
    return r.kvs.length > 0 ? parse<HostRecord>(r.kvs[0]) : undefined;
  }

  async publishHost(record: HostRecord): Promise<void> {
    const value = JSON.stringify({ host: record.host, address: record.address, certificate: record.certificate });
    const r = await this.client.range(this.key('host', record.host));
    if (r.kvs[0]?.value === value) return;
    await this.client.put(this.key('host', record.host), value);
  }

  async policy(): Promise<PolicyRecord | undefined> {
    const r = await this.client.range(this.policyKey);
    return r.kvs.length > 0 ? parse<PolicyRecord>(r.kvs[0]) : undefined;
  }

  async publishPolicy(record: PolicyRecord): Promise<void> {
    const value = JSON.stringify({ revision: record.revision, document: record.document, signature: record.signature });
    for (let round = 0; round < CAS_ROUNDS; round++) {
      const r = await this.client.range(this.policyKey);
      const cur = r.kvs[0];
      const held = cur && parse<PolicyRecord>(cur).revision;
      if (held !== undefined && record.revision <= held) {
        throw new NviError(STALE_REVISION, `policy revision ${record.revision} refused: the store holds revision ${held}`);
      }
      const t = await this.client.txn([unchanged(this.policyKey, cur)], [{ put: { key: this.policyKey, value } }]);
      if (t.succeeded) return;
    }
    throw new NviError(STORE_UNAVAILABLE, `policy: ${CAS_ROUNDS} rounds of compare-and-swap lost to other writers`);
  }

  /** Every key under the prefix at one revision, read in pages. */
  async snapshot(): Promise<StoreSnapshot> {
    const bindings: BindingRecord[] = [];
    const hosts: HostRecord[] = [];
    let policy: PolicyRecord | undefined;
    let revision = 0;
    let from = this.prefix;
    for (;;) {
      const r = await this.client.rangeFrom(from, this.prefix, { revision: revision || undefined, limit: PAGE });
      if (revision === 0) revision = r.revision;
      for (const kv of r.kvs) {
        const c = this.change({ type: 'put', kv });
        if (c?.kind === 'binding' && c.record) bindings.push(c.record);
        else if (c?.kind === 'host' && c.record) hosts.push(c.record);
        else if (c?.kind === 'policy') policy = c.record;
      }
      if (!r.more || r.kvs.length === 0) break;
      from = `${r.kvs[r.kvs.length - 1].key}\0`;
    }
    return { revision, bindings, hosts, policy };
  }

  watch(fromRevision: number, w: StoreWatch): () => void {
    const stop = this.client.watch(this.prefix, fromRevision + 1, {
      events: (events, revision) => {
        const changes: StoreChange[] = [];
        let last = 0;
        for (const e of events) {
          last = Math.max(last, e.kv.modRevision);
          const c = this.change(e);
          if (c) changes.push(c);
        }
        // A progress notification carries no event: the header revision is how far the watch has seen.
        w.changes(changes, Math.max(last, events.length === 0 ? revision : 0));
      },
      end: (why) => {
        this.stops.delete(stop);
        w.end({ compacted: why.compacted, reason: why.reason });
      },
    });
    this.stops.add(stop);
    return () => {
      this.stops.delete(stop);
      stop();
    };
  }

  /** Keep the host's lease alive (a new one if it lapsed) and write its alive key on it. */
  async heartbeat(host: string): Promise<number> {
    let lease = this.leases.get(host);
    if (lease !== undefined && (await this.client.leaseKeepAlive(lease)) <= 0) lease = undefined;
    if (lease === undefined) {
      lease = await this.client.leaseGrant(this.leaseTtl);
      this.leases.set(host, lease);
    }
    return this.client.put(this.key('alive', host), JSON.stringify({ host, at: new Date().toISOString() }), lease);
  }

  async compact(revision: number): Promise<void> {
    await this.client.compact(revision);
  }

  async close(): Promise<void> {
    for (const stop of [...this.stops]) stop();
    this.client.close();
  }

  /** The store change a watch event (or a listed key) means; undefined for keys that are not records. */
  private change(e: WatchEvent): StoreChange | undefined {
    const key = e.kv.key;
    if (!key.startsWith(this.prefix)) return undefined;
    const rest = key.slice(this.prefix.length);
    const put = e.type === 'put';
    try {
      if (rest.startsWith('binding/')) return { kind: 'binding', identity: rest.slice(8), record: put ? parse<BindingRecord>(e.kv) : undefined };
      if (rest.startsWith('host/')) return { kind: 'host', host: rest.slice(5), record: put ? parse<HostRecord>(e.kv) : undefined };
      if (rest === 'policy' && put) return { kind: 'policy', record: parse<PolicyRecord>(e.kv) };
    } catch {
      this.malformedKeys++; // not a record: as if absent (the verifier would refuse it anyway)
    }
    return undefined;
  }
}

/** The key is still as read: at the same mod revision, or still absent. */
function unchanged(key: string, cur: KeyValue | undefined): TxnCompare {
  return cur ? { key, target: 'MOD', result: 'EQUAL', modRevision: cur.modRevision } : { key, target: 'CREATE', result: 'EQUAL', createRevision: 0 };
}

/** The epoch of a `withdrawn/` key. */
function withdrawnEpoch(kv: KeyValue): number {
  const epoch = parse<{ epoch?: unknown }>(kv).epoch;
  if (!Number.isSafeInteger(epoch)) throw new NviError(STORE_UNAVAILABLE, `etcd key ${kv.key}: no integer epoch in ${kv.value}`);
  return epoch as number;
}

function parse<T>(kv: KeyValue): T {
  try {
    return JSON.parse(kv.value) as T;
  } catch {
    throw new NviError(STORE_UNAVAILABLE, `etcd key ${kv.key}: the value is not JSON`);
  }
}
