// Transports for the key exchange. UDP between the switches of real hosts; an in-memory
// hub for an offline replay, where several hosts live in one process and the same
// handshake code runs without a network.

import { createSocket, type Socket } from 'node:dgram';
import { NviError } from '../base/errors.js';
import { formatIpv4, parseIpv4Address } from '../base/address.js';
import type { KxTransport } from './key-exchange.js';

/** UDP on the host's underlay address and the cloud's key-exchange port. */
export class UdpTransport implements KxTransport {
  private readonly socket: Socket;
  private handler: (msg: Buffer, from: number) => void = () => {};

  private constructor(socket: Socket, private readonly port: number) {
    this.socket = socket;
    socket.on('message', (msg, rinfo) => {
      let from: number;
      try {
        from = parseIpv4Address(rinfo.address);
      } catch {
        return;
      }
      if (rinfo.port === this.port) this.handler(msg, from);
    });
  }

  static async open(address: number, port: number): Promise<UdpTransport> {
    const socket = createSocket({ type: 'udp4', reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (e) => reject(new NviError('NVI_ERR_UNDERLAY', `cannot bind the key exchange to ${formatIpv4(address)}:${port}: ${e.message}`)));
      socket.bind(port, formatIpv4(address), () => resolve());
    });
    socket.on('error', () => {}); // send errors (unreachable peers) surface as handshake timeouts
    return new UdpTransport(socket, port);
  }

  send(msg: Buffer, to: number): void {
    this.socket.send(msg, this.port, formatIpv4(to));
  }

  onMessage(handler: (msg: Buffer, from: number) => void): void {
    this.handler = handler;
  }

  close(): void {
    this.socket.close();
  }
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
