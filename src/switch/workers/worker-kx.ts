// The key exchange of a data-path thread: its own UDP socket on the host's key-exchange port,
// one of the group the main thread opened (src/native/kx_sockets.c), from which the kernel
// gives it the INITs and ANSWERs for its VMs (kx-route.ts). It sends on it too, so no other
// thread is on the way of a handshake. A NOTIFY, which names no VM, reaches worker 0: it is
// handed to every other worker through the main thread (`share`), and taken as received.

import type { KxTransport } from '../key-exchange.js';
import type { UdpTransport } from '../transports.js';
import { forEveryWorker } from './kx-route.js';

export class WorkerKx implements KxTransport {
  private handler: (msg: Buffer, from: number) => void = () => {};
  private activity: () => void = () => {};
  private closed = false;

  /** `share`: hand a NOTIFY this worker's socket got to the other workers. */
  constructor(private readonly udp: UdpTransport, private readonly share: (msg: Buffer, from: number) => void) {
    udp.onMessage((msg, from) => {
      if (forEveryWorker(msg)) this.share(msg, from);
      this.handler(msg, from);
    });
  }

  /** Take the socket `fd` (of the host's group: a new switch's, or one handed over). */
  adopt(fd: number): Promise<void> {
    return this.udp.adopt(fd);
  }

  /** The socket's fd, to hand to the process that takes over. */
  get fd(): number | undefined {
    return this.udp.fd;
  }

  /** Called for each message sent or received (live.ts: busy polling follows the key exchange). */
  set onActivity(f: () => void) {
    this.activity = f;
    this.udp.onActivity = f;
  }

  send(msg: Buffer, to: number): void {
    this.udp.send(msg, to);
  }

  onMessage(handler: (msg: Buffer, from: number) => void): void {
    this.handler = handler;
  }

  /** A NOTIFY another worker's socket got. */
  shared(msg: Uint8Array, from: number): void {
    if (this.closed) return;
    this.activity();
    this.handler(Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength), from);
  }

  close(): void {
    this.closed = true;
    this.udp.close();
  }
}
