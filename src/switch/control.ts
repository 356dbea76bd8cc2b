// The control socket of a running switch: a unix socket, one JSON request per line, one
// JSON answer per line. `nvi-switch cables|stats|explain --live` speak it.
//   {"cmd":"stats"}   {"cmd":"cables"}   {"cmd":"flush", "reverify"?: true}   {"cmd":"handover"} (nvi-switch restart)
//   {"cmd":"vm","op":"attach"|"detach"|"prepare"|"out"|"in"|"done"|"abort"|"state","vm":NAME,"offer"?:...,"sealed"?:...}
//   {"cmd":"explain","side":"sender"|"receiver","src":ID,"dst":ID,"proto":6,"port":22,"fromHost":"h1","fromAddress":"10.77.0.1"}
//   {"cmd":"observe","follow"?:true,"vm"?:..,"tenant"?:..,"verdict"?:..,"reason"?:..}
//     without follow: the last verdicts kept; with follow: {"ok":true,...} and then one line per
//     verdict ({"event":{...}}) and, at most once a second, {"lost":N} when events were lost,
//     until the client closes the connection
// The server knows the switch only through ControlHandler: what it may be asked.

import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { NviError } from '../base/errors.js';
import { parseIpv4Address } from '../base/address.js';
import type { CableInfo } from './cable-info.js';
import type { Explanation, Packet } from './explain.js';
import type { KeyOffer, SealedKey } from '../trust/key-transfer.js';
import { parseFilter, type Verdict, type VerdictFilter } from './verdicts.js';

export interface ExplainRequest {
  readonly side: 'sender' | 'receiver';
  readonly src: string;
  readonly dst: string;
  readonly packet?: Packet;
  /** Receiver side: the host the request comes from, and its underlay address (uint32). */
  readonly fromHost?: string;
  readonly fromAddress?: number;
}

export interface VmRequest {
  readonly op: 'attach' | 'detach' | 'prepare' | 'out' | 'seal' | 'release' | 'in' | 'cancel' | 'done' | 'abort' | 'state';
  readonly vm: string;
  readonly offer?: KeyOffer;
  readonly sealed?: SealedKey;
}

const VM_OPS: readonly VmRequest['op'][] = ['attach', 'detach', 'prepare', 'out', 'seal', 'release', 'in', 'cancel', 'done', 'abort', 'state'];

/** What a control client may ask a running switch. */
export interface ControlHandler {
  stats(): Record<string, unknown> | Promise<Record<string, unknown>>;
  cables(): CableInfo[] | Promise<CableInfo[]>;
  /** Forget every cable and SA (reverify: and every verified binding and VM certificate); returns how many cables and bindings. */
  flush(opts?: { reverify?: boolean }): { flushed: number; bindings: number } | Promise<{ flushed: number; bindings: number }>;
  explain(req: ExplainRequest): Promise<Explanation>;
  vm(req: VmRequest): Promise<unknown>;
  lastVerdicts(f: VerdictFilter): Verdict[] | Promise<Verdict[]>;
  watchVerdicts(f: VerdictFilter, send: (v: Verdict) => boolean): { stop(): void; lost(): number };
  /** Hand the switch over to a new process (`nvi-switch restart`); resolves when it forwards. */
  handover(): Promise<unknown>;
}

/** A follower's socket may hold this much unsent before its events are dropped (and counted). */
const FOLLOW_BACKLOG = 1 << 20;

export class ControlServer {
  private constructor(private readonly server: Server, private readonly path: string, private readonly conns: Set<Socket>) {}

  static listen(path: string, sw: ControlHandler): Promise<ControlServer> {
    rmSync(path, { force: true });
    const conns = new Set<Socket>();
    const server = createServer((conn) => {
      conns.add(conn);
      conn.on('close', () => conns.delete(conn));
      let buf = '';
      let following = false; // a follower's connection carries events only: what it sends now is ignored
      conn.setEncoding('utf8');
      conn.on('data', (chunk: string) => {
        if (following) return;
        buf += chunk;
        if (buf.length > 65536) conn.destroy();
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (follows(line)) {
            following = true;
            follow(sw, line, conn);
            return;
          }
          void answer(sw, line).then((reply) => conn.write(`${JSON.stringify(reply)}\n`));
        }
      });
      conn.on('error', () => {});
    });
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new NviError('NVI_ERR_CONTROL', `control socket ${path}: ${e.message}`)));
      server.listen(path, () => resolve(new ControlServer(server, path, conns)));
    });
  }

  /**
   * Stop taking connections (a handover: the next process binds the path; closing the
   * listening socket removes it now). Connections open now stay until dropConnections().
   */
  stopListening(): void {
    this.server.close();
  }

  dropConnections(): void {
    for (const c of this.conns) c.destroy();
  }

  /** Stop listening and end every connection (followers of `observe` would otherwise hold it open). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => {
        rmSync(this.path, { force: true });
        resolve();
      });
      this.dropConnections();
    });
  }
}

function follows(line: string): boolean {
  try {
    const req = JSON.parse(line) as Record<string, unknown>;
    return req.cmd === 'observe' && req.follow === true;
  } catch {
    return false;
  }
}

/** Stream verdicts to `conn` until it closes; the events it cannot take are counted as lost. */
function follow(sw: ControlHandler, line: string, conn: Socket): void {
  let filter: VerdictFilter;
  let w: { stop(): void; lost(): number };
  try {
    filter = parseFilter(JSON.parse(line) as Record<string, unknown>);
    w = sw.watchVerdicts(filter, (v) => {
      if (conn.writableLength > FOLLOW_BACKLOG) return false;
      conn.write(`${JSON.stringify({ event: v })}\n`);
      return true;
    });
  } catch (e) {
    conn.end(`${JSON.stringify({ ok: false, error: (e as Error).message })}\n`);
    return;
  }
  conn.write(`${JSON.stringify({ ok: true, result: { following: filter } })}\n`);
  let told = w.lost();
  const timer = setInterval(() => {
    const lost = w.lost();
    if (lost !== told && conn.writableLength <= FOLLOW_BACKLOG) conn.write(`${JSON.stringify({ lost })}\n`);
    told = lost;
  }, 1000);
  conn.on('close', () => {
    clearInterval(timer);
    w.stop();
  });
}

async function answer(sw: ControlHandler, line: string): Promise<{ ok: boolean; result?: unknown; error?: string }> {
  try {
    const req = JSON.parse(line) as Record<string, unknown>;
    switch (req.cmd) {
      case 'stats':
        return { ok: true, result: await sw.stats() };
      case 'cables':
        return { ok: true, result: await sw.cables() };
      case 'flush':
        return { ok: true, result: await sw.flush({ reverify: req.reverify === true }) };
      case 'handover':
        return { ok: true, result: await sw.handover() };
      case 'observe':
        return { ok: true, result: await sw.lastVerdicts(parseFilter(req)) };
      case 'vm': {
        const op = req.op as VmRequest['op'];
        if (!VM_OPS.includes(op) || typeof req.vm !== 'string') return { ok: false, error: `vm: op one of ${VM_OPS.join(', ')} and a VM name expected` };
        return { ok: true, result: await sw.vm({ op, vm: req.vm, offer: req.offer as KeyOffer | undefined, sealed: req.sealed as SealedKey | undefined }) };
      }
      case 'explain': {
        const packet: Packet | undefined = typeof req.proto === 'number' ? { proto: req.proto, port: typeof req.port === 'number' ? req.port : undefined } : undefined;
        const receiver = req.side === 'receiver';
        const result = await sw.explain({
          side: receiver ? 'receiver' : 'sender',
          src: String(req.src),
          dst: String(req.dst),
          packet,
          fromHost: receiver ? String(req.fromHost) : undefined,
          fromAddress: receiver ? parseIpv4Address(String(req.fromAddress)) : undefined,
        });
        return { ok: true, result };
      }
      default:
        return { ok: false, error: `unknown command ${JSON.stringify(req.cmd)}` };
    }
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

/** Send one request to the control socket at `path`; resolves with its result. */
export function controlRequest(path: string, req: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new NviError('NVI_ERR_CONTROL', `no answer from ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(`${JSON.stringify(req)}\n`));
    conn.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      conn.end();
      const reply = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: unknown; error?: string };
      if (reply.ok) resolve(reply.result);
      else reject(new NviError('NVI_ERR_CONTROL', reply.error ?? 'error'));
    });
    conn.on('error', (e) => {
      clearTimeout(timer);
      reject(new NviError('NVI_ERR_CONTROL', `cannot reach the switch at ${path}: ${e.message} (is it running?)`));
    });
  });
}

/**
 * Send `req` to the control socket at `path` and hand every line of the answer to `onLine`
 * until the switch or `signal` closes the connection (observe --follow).
 */
export function controlStream(path: string, req: Record<string, unknown>, onLine: (msg: Record<string, unknown>) => void, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(path);
    let buf = '';
    let first = true;
    signal?.addEventListener('abort', () => conn.destroy());
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(`${JSON.stringify(req)}\n`));
    conn.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        if (first && msg.ok === false) {
          conn.destroy();
          reject(new NviError('NVI_ERR_CONTROL', String(msg.error)));
          return;
        }
        first = false;
        onLine(msg);
      }
    });
    conn.on('close', () => resolve());
    conn.on('error', (e) => reject(new NviError('NVI_ERR_CONTROL', `cannot reach the switch at ${path}: ${e.message} (is it running?)`)));
  });
}
