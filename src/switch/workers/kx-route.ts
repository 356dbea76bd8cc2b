// Which data-path thread a key-exchange message is for, when a host runs `switch.workers: N`.
// Each worker has its own UDP socket on the key-exchange port; the kernel gives each datagram
// to one of them by a classic BPF program that does what kxWorker() says (the program is in
// src/native/kx_sockets.c; test/kx-sockets.test.ts holds the two to each other). shard.ts
// says who owns what.

import { KX_ANSWER, KX_INIT, KX_NOTIFY } from '../../esp/handshake.js';
import { ownerOf } from './shard.js';

/** Offsets in an INIT and an ANSWER (esp/handshake.ts). */
const INIT_DST = 36;
const ANSWER_ID = 4;

/**
 * The worker whose socket gets `msg`, among `count`: an INIT its destination VM's owner's; an
 * ANSWER the worker's its request id names. Anything else goes to worker 0: a NOTIFY (see
 * forEveryWorker), and a message too short or of no known type, which worker 0's key exchange
 * counts as it would with one thread.
 */
export function kxWorker(msg: Uint8Array, count: number): number {
  switch (msg[0]) {
    case KX_INIT:
      return msg.length >= INIT_DST + 16 ? ownerOf(msg, count, INIT_DST) : 0;
    case KX_ANSWER:
      return msg.length > ANSWER_ID && msg[ANSWER_ID] < count ? msg[ANSWER_ID] : 0;
    default:
      return 0;
  }
}

/**
 * A NOTIFY names only an SPI the peer chose, not a VM: the worker that got it hands it to every
 * other worker too, and the one that sends on that SPI acts on it.
 */
export function forEveryWorker(msg: Uint8Array): boolean {
  return msg[0] === KX_NOTIFY;
}
