// A small client of etcd's v3 API through its JSON gateway (grpc-gateway, served by every
// etcd >= 3.4 on its client port under /v3/): JSON over HTTP/1.1, keys and values base64,
// revisions as decimal strings. Chosen over the npm `etcd3` client because the store must
// see exactly what the server says: a watch cancelled by compaction arrives here as
// `compact_revision`, a stuck stream can be detected and dropped, and nothing retries
// behind the caller's back. Endpoints are tried in turn; a request that fails on one
// (refused, reset, timed out, 5xx) moves to the next, so losing one member of a cluster
// costs one retry.
//
// Streams (watch, lease keep-alive) are one long POST whose response is a sequence of JSON
// objects {"result": ...} (or {"error": ...}).

import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';
import { NviError } from '../base/errors.js';
import { STORE_UNAVAILABLE } from './store.js';

export interface EtcdTls {
  /** PEM files: the CA that signed the servers' certificates; the client's certificate and key. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

export interface KeyValue {
  readonly key: string;
  readonly value: string;
  readonly modRevision: number;
  readonly createRevision: number;
  readonly lease: string;
}

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  readonly kv: KeyValue;
}

/** What ends a watch: compaction (list again), or anything else (the stream broke). */
export interface WatchEnd {
  readonly compacted: boolean;
  /** With compacted: the oldest revision still kept. */
  readonly compactRevision: number;
  readonly reason: string;
}

export interface WatchHandlers {
  /** Events of one revision or more, in revision order, and the header revision. */
  events(events: WatchEvent[], revision: number): void;
  /** The stream ended; it is not reopened (the caller decides). */
  end(why: WatchEnd): void;
}

export type TxnCompare =
  | { readonly key: string; readonly target: 'MOD'; readonly result: 'EQUAL' | 'LESS' | 'GREATER'; readonly modRevision: number }
  | { readonly key: string; readonly target: 'CREATE'; readonly result: 'EQUAL'; readonly createRevision: number };

export type TxnOp =
  | { readonly put: { readonly key: string; readonly value: string; readonly lease?: string } }
  | { readonly range: { readonly key: string } }
  | { readonly delete: { readonly key: string } };

interface RawKv {
  key?: string;
  value?: string;
  mod_revision?: string;
  create_revision?: string;
  lease?: string;
}

const enc = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const dec = (s: string | undefined): string => (s === undefined ? '' : Buffer.from(s, 'base64').toString('utf8'));

/** The key just past every key that starts with `prefix` (etcd's range_end for a prefix). */
export function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]++;
      return end.toString('latin1');
    }
  }
  return '\0';
}

function kv(raw: RawKv): KeyValue {
  return {
    key: dec(raw.key),
    value: dec(raw.value),
    modRevision: Number(raw.mod_revision ?? 0),
    createRevision: Number(raw.create_revision ?? 0),
    lease: raw.lease ?? '0',
  };
}

/** Encode a range end given as a latin1 string of bytes (prefixEnd) or plain text. */
function encEnd(end: string): string {
  return Buffer.from(end, /[\u0080-\u00ff]/.test(end) ? 'latin1' : 'utf8').toString('base64');
}

export interface EtcdClientOptions {
  readonly tls?: EtcdTls;
  /** Each unary request may take this long on one endpoint (default 2000 ms). */
  readonly timeoutMs?: number;
}

export class EtcdClient {
  /** Requests sent, by path (for the miss-flood figure: how much etcd was asked). */
  readonly requests = new Map<string, number>();
  private current = 0;
  private readonly agent: HttpAgent | HttpsAgent;
  private readonly tls: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  private readonly timeoutMs: number;
  private closed = false;

  constructor(readonly endpoints: readonly string[], opts: EtcdClientOptions = {}) {
    if (endpoints.length === 0) throw new NviError('NVI_ERR_CONFIG', 'etcd: no endpoint');
    for (const e of endpoints) {
      if (!/^https?:\/\/[^/]+$/.test(e)) throw new NviError('NVI_ERR_CONFIG', `etcd endpoint ${JSON.stringify(e)}: expected http://host:port or https://host:port`);
    }
    const read = (what: string, path?: string): Buffer | undefined => {
      if (path === undefined) return undefined;
      try {
        return readFileSync(path);
      } catch (err) {
        throw new NviError('NVI_ERR_CONFIG', `etcd tls.${what} ${path}: ${(err as Error).message}`);
      }
    };
    this.tls = { ca: read('ca', opts.tls?.ca), cert: read('cert', opts.tls?.cert), key: read('key', opts.tls?.key) };
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.agent = endpoints[0].startsWith('https:')
      ? new HttpsAgent({ keepAlive: true, maxSockets: 16, ...this.tls })
      : new HttpAgent({ keepAlive: true, maxSockets: 16 });
  }

  async range(key: string, opts: { prefix?: boolean; revision?: number; limit?: number } = {}): Promise<{ kvs: KeyValue[]; revision: number; more: boolean }> {
    const body: Record<string, unknown> = { key: enc(key) };
    if (opts.prefix) body.range_end = encEnd(prefixEnd(key));
    if (opts.revision) body.revision = String(opts.revision);
    if (opts.limit) body.limit = String(opts.limit);
    const r = (await this.call('/v3/kv/range', body)) as { header: { revision: string }; kvs?: RawKv[]; more?: boolean };
    return { kvs: (r.kvs ?? []).map(kv), revision: Number(r.header.revision), more: r.more === true };
  }

  /** Keys from `from` up to the end of `prefix`, in key order, `limit` at a time. */
  async rangeFrom(from: string, prefix: string, opts: { revision?: number; limit?: number } = {}): Promise<{ kvs: KeyValue[]; revision: number; more: boolean }> {
    const body: Record<string, unknown> = { key: enc(from), range_end: encEnd(prefixEnd(prefix)) };
    if (opts.revision) body.revision = String(opts.revision);
    if (opts.limit) body.limit = String(opts.limit);
    const r = (await this.call('/v3/kv/range', body)) as { header: { revision: string }; kvs?: RawKv[]; more?: boolean };
    return { kvs: (r.kvs ?? []).map(kv), revision: Number(r.header.revision), more: r.more === true };
  }

  async put(key: string, value: string, lease?: string): Promise<number> {
    const r = (await this.call('/v3/kv/put', { key: enc(key), value: enc(value), ...(lease ? { lease } : {}) })) as { header: { revision: string } };
    return Number(r.header.revision);
  }

  async deleteRange(key: string, prefix = false): Promise<number> {
    const body: Record<string, unknown> = { key: enc(key) };
    if (prefix) body.range_end = encEnd(prefixEnd(key));
    const r = (await this.call('/v3/kv/deleterange', body)) as { header: { revision: string } };
    return Number(r.header.revision);
  }

  /** A transaction: `success` runs when every compare holds, else `failure`; ranges come back in `kvs`. */
  async txn(compare: readonly TxnCompare[], success: readonly TxnOp[], failure: readonly TxnOp[] = []): Promise<{ succeeded: boolean; revision: number; kvs: KeyValue[] }> {
    const cmp = compare.map((c) => c.target === 'MOD'
      ? { key: enc(c.key), target: 'MOD', result: c.result, mod_revision: String(c.modRevision) }
      : { key: enc(c.key), target: 'CREATE', result: c.result, create_revision: String(c.createRevision) });
    const op = (o: TxnOp): Record<string, unknown> => 'put' in o
      ? { request_put: { key: enc(o.put.key), value: enc(o.put.value), ...(o.put.lease ? { lease: o.put.lease } : {}) } }
      : 'range' in o ? { request_range: { key: enc(o.range.key) } } : { request_delete_range: { key: enc(o.delete.key) } };
    const r = (await this.call('/v3/kv/txn', { compare: cmp, success: success.map(op), failure: failure.map(op) })) as {
      header: { revision: string };
      succeeded?: boolean;
      responses?: { response_range?: { kvs?: RawKv[] } }[];
    };
    const kvs = (r.responses ?? []).flatMap((x) => (x.response_range?.kvs ?? []).map(kv));
    return { succeeded: r.succeeded === true, revision: Number(r.header.revision), kvs };
  }

  async leaseGrant(ttlSeconds: number): Promise<string> {
    const r = (await this.call('/v3/lease/grant', { TTL: String(ttlSeconds) })) as { ID: string; error?: string };
    return r.ID;
  }

  /** One keep-alive of `lease`; returns the TTL left (0: the lease is gone). */
  async leaseKeepAlive(lease: string): Promise<number> {
    const r = (await this.stream1('/v3/lease/keepalive', { ID: lease })) as { result?: { TTL?: string } };
    return Number(r.result?.TTL ?? 0);
  }

  async leaseRevoke(lease: string): Promise<void> {
    await this.call('/v3/lease/revoke', { ID: lease });
  }

  /** Compact the history up to `revision` (tests; operators run it on their own schedule). */
  async compact(revision: number): Promise<void> {
    await this.call('/v3/kv/compaction', { revision: String(revision), physical: true });
  }

  /**
   * Watch every key under `prefix` from `startRevision`. Events arrive in revision order;
   * the watch ends (once) on compaction, a server error, or a broken stream. stop() ends
   * it without calling end().
   */
  watch(prefix: string, startRevision: number, h: WatchHandlers): () => void {
    let stopped = false;
    let ended = false;
    const end = (why: WatchEnd): void => {
      if (stopped || ended) return;
      ended = true;
      h.end(why);
    };
    const body = { create_request: { key: enc(prefix), range_end: encEnd(prefixEnd(prefix)), start_revision: String(startRevision), progress_notify: true } };
    const endpoint = this.endpoints[this.current];
    const req = this.open(endpoint, '/v3/watch', body, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        this.failed(endpoint);
        end({ compacted: false, compactRevision: 0, reason: `watch: HTTP ${res.statusCode} from ${endpoint}` });
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line !== '') this.watchLine(line, h, end);
        }
      });
      res.on('end', () => end({ compacted: false, compactRevision: 0, reason: `watch stream from ${endpoint} ended` }));
      res.on('error', (e) => end({ compacted: false, compactRevision: 0, reason: `watch stream from ${endpoint}: ${e.message}` }));
    });
    req.on('error', (e) => {
      this.failed(endpoint);
      end({ compacted: false, compactRevision: 0, reason: `watch: ${endpoint}: ${e.message}` });
    });
    return () => {
      stopped = true;
      req.destroy();
    };
  }

  private watchLine(line: string, h: WatchHandlers, end: (why: WatchEnd) => void): void {
    let msg: { result?: { header?: { revision?: string }; events?: { type?: string; kv?: RawKv }[]; canceled?: boolean; compact_revision?: string; cancel_reason?: string }; error?: { message?: string } };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      end({ compacted: false, compactRevision: 0, reason: `watch: not JSON: ${line.slice(0, 80)}` });
      return;
    }
    if (msg.error) {
      end({ compacted: false, compactRevision: 0, reason: `watch: ${msg.error.message ?? 'error'}` });
      return;
    }
    const r = msg.result;
    if (!r) return;
    const compactRevision = Number(r.compact_revision ?? 0);
    if (r.canceled || compactRevision > 0) {
      end({ compacted: compactRevision > 0, compactRevision, reason: compactRevision > 0 ? `compacted at ${compactRevision}` : `watch cancelled: ${r.cancel_reason ?? ''}` });
      return;
    }
    const events = (r.events ?? []).map((e): WatchEvent => ({ type: e.type === 'DELETE' ? 'delete' : 'put', kv: kv(e.kv ?? {}) }));
    h.events(events, Number(r.header?.revision ?? 0));
  }

  close(): void {
    this.closed = true;
    this.agent.destroy();
  }

  // ---- Transport ------------------------------------------------------------------------

  /** A unary request, on each endpoint in turn from the current one until one answers. */
  private async call(path: string, body: unknown): Promise<unknown> {
    this.requests.set(path, (this.requests.get(path) ?? 0) + 1);
    const errors: string[] = [];
    for (let k = 0; k < this.endpoints.length; k++) {
      const endpoint = this.endpoints[(this.current + k) % this.endpoints.length];
      try {
        const r = await this.once(endpoint, path, body);
        this.current = this.endpoints.indexOf(endpoint);
        return r;
      } catch (e) {
        if (e instanceof EtcdAnswer) throw new NviError(e.code, e.message);
        errors.push(`${endpoint}: ${(e as Error).message}`);
      }
    }
    throw new NviError(STORE_UNAVAILABLE, `etcd ${path}: no endpoint answered (${errors.join('; ')})`);
  }

  /** The first object of a streaming response (lease keep-alive), then the stream is dropped. */
  private stream1(path: string, body: unknown): Promise<unknown> {
    return this.call(path, body);
  }

  private once(endpoint: string, path: string, body: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new Error('client closed'));
        return;
      }
      let done = false;
      const finish = (err: Error | null, v?: unknown): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        req.destroy();
        if (err) reject(err);
        else resolve(v);
      };
      const timer = setTimeout(() => finish(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      const req = this.open(endpoint, path, body, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
          // A stream (keep-alive) answers with one object per line: the first is enough.
          const nl = text.indexOf('\n');
          if (nl >= 0 && res.statusCode === 200) finish(null, parse(text.slice(0, nl)));
        });
        res.on('end', () => {
          if (res.statusCode === 200) finish(null, parse(text));
          else if ((res.statusCode ?? 500) >= 500) finish(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
          else finish(new EtcdAnswer(res.statusCode ?? 0, text));
        });
        res.on('error', (e) => finish(e));
      });
      req.on('error', (e) => finish(e));
    });
  }

  private open(endpoint: string, path: string, body: unknown, onResponse: (res: IncomingMessage) => void) {
    const url = new URL(path, endpoint);
    const data = JSON.stringify(body);
    const opts = {
      method: 'POST',
      agent: this.agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
    };
    const req = url.protocol === 'https:' ? httpsRequest(url, { ...opts, ...this.tls }, onResponse) : httpRequest(url, opts, onResponse);
    req.end(data);
    return req;
  }

  private failed(endpoint: string): void {
    const k = this.endpoints.indexOf(endpoint);
    if (k === this.current) this.current = (k + 1) % this.endpoints.length;
  }
}

/** etcd answered, and said no (4xx): not a reason to try another endpoint. */
class EtcdAnswer extends Error {
  readonly code: string;
  constructor(status: number, body: string) {
    let message = body.slice(0, 300);
    try {
      message = (JSON.parse(body) as { message?: string; error?: string }).message ?? message;
    } catch {
      // not JSON: keep the text
    }
    super(`etcd refused (HTTP ${status}): ${message}`);
    this.code = 'NVI_ERR_STORE_REFUSED';
  }
}

function parse(text: string): unknown {
  const first = text.trim().split('\n')[0];
  try {
    return JSON.parse(first);
  } catch {
    throw new Error(`not JSON: ${first.slice(0, 120)}`);
  }
}
