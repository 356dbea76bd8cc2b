// Transports for the key exchange. UDP between the switches of real hosts; an in-memory
// hub for an offline replay, where several hosts live in one process and the same
// handshake code runs without a network.

import { createSocket, type Socket } from 'node:dgram';
import { NviError } from '../base/errors.js';
import { formatIpv4, parseIpv4Address } from '../base/address.js';
import type { KxTransport } from './key-exchange.js';

/**
 * UDP on the host's underlay address and the cloud's key-exchange port. A switch taking over
 * from another process (handover.ts) gets the socket later, when the old one stops reading:
 * until then what it sends waits.
 */
export class UdpTransport implements KxTransport {
  private socket: Socket | null = null;
  private readonly waiting: { msg: Buffer; to: number }[] = [];
  private handler: (msg: Buffer, from: number) => void = () => {};
  /** Called for each message sent or received (live.ts: busy polling follows the key exchange). */
  onActivity: () => void = () => {};

  private constructor(private readonly port: number) {}

  static async open(address: number, port: number): Promise<UdpTransport> {
    const socket = await bound((s, done) => s.bind(port, formatIpv4(address), done), `cannot bind the key exchange to ${formatIpv4(address)}:${port}`);
    const t = new UdpTransport(port);
    t.use(socket);
    return t;
  }

  /** A transport whose socket comes later (adopt()). */
  static pending(port: number): UdpTransport {
    return new UdpTransport(port);
  }

  /** Take over the bound socket `fd` another process handed over; what waited is sent now. */
  async adopt(fd: number): Promise<void> {
    this.use(await bound((s, done) => s.bind({ fd }, done), `cannot take over the key exchange socket (fd ${fd})`));
    for (const w of this.waiting.splice(0)) this.send(w.msg, w.to);
  }

  /** The socket's fd, to hand to the process that takes over (undefined before it is bound). */
  get fd(): number | undefined {
    const handle = (this.socket as unknown as { _handle?: { fd?: number } } | null)?._handle;
    return typeof handle?.fd === 'number' && handle.fd >= 0 ? handle.fd : undefined;
  }

  private use(socket: Socket): void {
    this.socket = socket;
    socket.on('error', () => {}); // send errors (unreachable peers) surface as handshake timeouts
    socket.on('message', (msg, rinfo) => {
      let from: number;
      try {
        from = parseIpv4Address(rinfo.address);
      } catch {
        return;
      }
      if (rinfo.port !== this.port) return;
      this.onActivity();
      this.handler(msg, from);
    });
  }

  send(msg: Buffer, to: number): void {
    if (!this.socket) {
      this.waiting.push({ msg: Buffer.from(msg), to });
      return;
    }
    this.socket.send(msg, this.port, formatIpv4(to));
    this.onActivity();
  }

  onMessage(handler: (msg: Buffer, from: number) => void): void {
    this.handler = handler;
  }

  close(): void {
    this.socket?.close();
    this.socket = null;
  }
}

/**
 * The socket's "lookup" of a destination, which is always an IPv4 address in dotted form: it
 * answers at once. Node's own lookup answers an address in a later tick, so a message would
 * wait there behind whatever the event loop runs first (the next steps of other handshakes,
 * on the first packet's path); with this one, send() hands it to the kernel before it returns.
 */
function literal(address: string, _family: unknown, done: (err: Error | null, address: string, family: number) => void): void {
  done(null, address, 4);
}

/** A UDP socket bound by `bind`; a failure is `what` with the system's reason. */
function bound(bind: (s: Socket, done: () => void) => void, what: string): Promise<Socket> {
  const socket = createSocket({ type: 'udp4', reuseAddr: false, lookup: literal as never });
  return new Promise((resolve, reject) => {
    socket.once('error', (e) => reject(new NviError('NVI_ERR_UNDERLAY', `${what}: ${e.message}`)));
    bind(socket, () => resolve(socket));
  });
}

/** Hosts in one process: messages are delivered asynchronously, as a network would. */
export class MemoryHub {
  private readonly hosts = new Map<number, (msg: Buffer, from: number) => void>();
  /** Every message sent, in order, for captures of the offline underlay. */
  readonly log: { from: number; to: number; msg: Buffer }[] = [];

  transport(address: number): KxTransport {
    return {
      send: (msg, to) => {
        this.log.push({ from: address, to, msg: Buffer.from(msg) });
        const h = this.hosts.get(to);
        if (h) setImmediate(() => h(Buffer.from(msg), address));
      },
      onMessage: (handler) => {
        this.hosts.set(address, handler);
      },
      close: () => {
        this.hosts.delete(address);
      },
    };
  }
}
