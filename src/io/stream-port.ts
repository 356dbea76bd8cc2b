// A VM port on a unix stream socket, QEMU's `-netdev stream,addr.type=unix,addr.path=P`
// (QEMU >= 7.2): every Ethernet frame preceded by its length, 4 bytes big-endian, no vnet
// header. The switch listens; the QEMU that connects takes the port (one that connects again,
// after a restart or a reconnect, replaces the one before); no connection is link down.
//
// Reading: the socket's chunks are cut into frames copied into the batch's slots (a frame
// split across chunks waits for the rest). Writing: a batch's frames, each with its length,
// go out as one buffer in one write. Past `maxQueued` bytes not yet taken by QEMU, frames are
// refused (txBusy) rather than queued without bound.

import { mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { BATCH_MAX, Batch, FRAME_OFFSET, MAX_PACKET } from '../dataplane/batch.js';
import { ETH_HLEN } from '../wire/ethernet.js';
import type { VmLink } from './vm-link.js';

/** Length prefix of every frame. */
const LEN_BYTES = 4;
/** A length above this is not a frame but a broken stream: the connection is dropped. */
const MAX_FRAME = 65_536 + ETH_HLEN + 4;

export class StreamPort implements VmLink {
  rxFrames = 0;
  txFrames = 0;
  rxBytes = 0;
  txBytes = 0;
  txRefused = 0;
  txBusy = 0;
  rxMalformed = 0;
  rxTooBig = 0;
  failure: string | null = null;
  /** Connections accepted (a QEMU that connects again counts again). */
  connections = 0;
  /** Connections dropped because their stream was not frames. */
  broken = 0;
  private sock: Socket | null = null;
  /** Bytes received and not yet cut into frames: rx[rxOff..]. */
  private rx: Buffer = Buffer.alloc(0);
  private rxOff = 0;
  private readable: (() => void) | null = null;
  private closed = false;
  private readonly server: Server;

  private constructor(readonly name: string, private readonly maxQueued: number, private readonly onEvent: (event: string, detail: Record<string, unknown>) => void) {
    this.server = createServer((s) => this.accept(s));
    this.server.on('error', (e) => {
      this.failure = `stream port ${name}: ${e.message}`;
      onEvent('port-failed', { path: name, error: e.message });
    });
  }

  /**
   * Listen on `path` (a stale socket file there is replaced; its directory is made). Errors
   * that come later (EACCES, ...) set `failure`. `onEvent` hears connects and disconnects.
   */
  static listen(path: string, opts: { maxQueued?: number; onEvent?: (event: string, detail: Record<string, unknown>) => void } = {}): StreamPort {
    mkdirSync(dirname(path), { recursive: true });
    rmSync(path, { force: true });
    const port = new StreamPort(path, opts.maxQueued ?? 4 << 20, opts.onEvent ?? (() => {}));
    port.server.listen(path);
    return port;
  }

  get up(): boolean {
    return this.sock !== null;
  }

  onReadable(cb: () => void): void {
    this.readable = cb;
  }

  read(b: Batch, port: number, timeUs: number): number {
    const first = b.count;
    let i = first;
    const rx = this.rx;
    let off = this.rxOff;
    while (i < BATCH_MAX && rx.length - off >= LEN_BYTES) {
      const len = rx.readUInt32BE(off);
      if (len > MAX_FRAME || rx.length - off - LEN_BYTES < len) break; // still on its way (or broken: see whole())
      const from = off + LEN_BYTES;
      off = from + len;
      if (len < ETH_HLEN) {
        this.rxMalformed++;
        continue;
      }
      if (len > MAX_PACKET) {
        this.rxTooBig++;
        continue;
      }
      const at = Batch.slot(i) + FRAME_OFFSET;
      rx.copy(b.data, at, from, from + len);
      b.init(i, at, len, port, timeUs);
      this.rxBytes += len;
      i++;
    }
    this.rxOff = off;
    b.count = i;
    this.rxFrames += i - first;
    return i - first;
  }

  write(b: Batch, idx: Int32Array, n: number): number {
    const s = this.sock;
    if (n <= 0 || s === null) return 0;
    if (s.writableLength > this.maxQueued) {
      this.txBusy++;
      return 0;
    }
    let total = 0;
    for (let k = 0; k < n; k++) total += LEN_BYTES + b.len[idx[k]];
    const out = Buffer.allocUnsafe(total); // one buffer per batch: the socket owns it until sent
    let at = 0;
    for (let k = 0; k < n; k++) {
      const i = idx[k];
      out.writeUInt32BE(b.len[i], at);
      b.data.copy(out, at + LEN_BYTES, b.start[i], b.start[i] + b.len[i]);
      at += LEN_BYTES + b.len[i];
    }
    s.write(out);
    this.txFrames += n;
    this.txBytes += total - n * LEN_BYTES;
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock?.destroy();
    this.sock = null;
    this.server.close();
    rmSync(this.name, { force: true });
  }

  private accept(s: Socket): void {
    if (this.closed) {
      s.destroy();
      return;
    }
    if (this.sock) {
      this.onEvent('port-reconnected', { path: this.name });
      this.sock.destroy();
    }
    this.sock = s;
    this.rx = Buffer.alloc(0);
    this.rxOff = 0;
    this.connections++;
    this.onEvent('port-connected', { path: this.name, connections: this.connections });
    s.setNoDelay(true);
    s.on('data', (chunk: Buffer) => this.received(s, chunk));
    s.on('error', () => {}); // 'close' follows
    s.on('close', () => {
      if (this.sock !== s) return;
      this.sock = null;
      this.onEvent('port-disconnected', { path: this.name });
    });
  }

  private received(s: Socket, chunk: Buffer): void {
    if (this.sock !== s) return;
    const left = this.rx.length - this.rxOff;
    this.rx = left === 0 ? chunk : Buffer.concat([this.rx.subarray(this.rxOff), chunk]);
    this.rxOff = 0;
    // Hand the frames over a batch at a time until no whole frame is left (or nobody reads).
    for (let before = -1; this.readable && this.rxOff !== before && this.whole(s); ) {
      before = this.rxOff;
      this.readable();
    }
  }

  /** A whole frame is waiting. A length no frame has ends the connection: the stream is not frames. */
  private whole(s: Socket): boolean {
    const left = this.rx.length - this.rxOff;
    if (left < LEN_BYTES) return false;
    const len = this.rx.readUInt32BE(this.rxOff);
    if (len > MAX_FRAME) {
      this.broken++;
      this.rxMalformed++;
      this.onEvent('port-stream-broken', { path: this.name, length: len });
      this.rx = Buffer.alloc(0);
      this.rxOff = 0;
      s.destroy();
      return false;
    }
    return left - LEN_BYTES >= len;
  }
}
