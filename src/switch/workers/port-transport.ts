// The key exchange of a data-path thread: its messages go out through the main thread, which
// owns the host's UDP socket (sharded-switch.ts), and come in from it.

import type { MessagePort } from 'node:worker_threads';
import type { KxTransport } from '../key-exchange.js';
import type { FromWorker } from './messages.js';

export class PortTransport implements KxTransport {
  private handler: (msg: Buffer, from: number) => void = () => {};
  private closed = false;
  /** Called for each message sent or received (live.ts: busy polling follows the key exchange). */
  onActivity: () => void = () => {};

  constructor(private readonly port: MessagePort) {}

  send(msg: Buffer, to: number): void {
    if (this.closed) return;
    const m: FromWorker = { kind: 'kx', msg: new Uint8Array(msg), to }; // a copy of its bytes alone, not of a pool it may sit in
    this.port.postMessage(m);
    this.onActivity();
  }

  /** A message the main thread routed to this worker. */
  received(msg: Uint8Array, from: number): void {
    if (this.closed) return;
    this.onActivity();
    this.handler(Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength), from);
  }

  onMessage(handler: (msg: Buffer, from: number) => void): void {
    this.handler = handler;
  }

  close(): void {
    this.closed = true;
  }
}
