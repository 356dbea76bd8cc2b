// Which data-path thread a key-exchange message is for (the main thread routes what its UDP
// socket receives; shard.ts says who owns what).

import { KX_ANSWER, KX_INIT, KX_NOTIFY } from '../../esp/handshake.js';
import { ownerOf } from './shard.js';

/** Every worker gets the message. */
export const ALL_WORKERS = -1;

/** Offsets in an INIT and an ANSWER (esp/handshake.ts). */
const INIT_DST = 36;
const ANSWER_ID = 4;

/**
 * The worker for `msg` among `count`: an INIT to its destination VM's owner; an ANSWER to the
 * worker its request id names; a NOTIFY to every worker (it names only an SPI the peer chose,
 * and the worker that sends on it checks it). A message too short or of no known type goes
 * to worker 0, whose key exchange counts it as it would with one thread.
 */
export function kxWorker(msg: Uint8Array, count: number): number {
  switch (msg[0]) {
    case KX_INIT:
      return msg.length >= INIT_DST + 16 ? ownerOf(msg, count, INIT_DST) : 0;
    case KX_ANSWER:
      return msg.length > ANSWER_ID && msg[ANSWER_ID] < count ? msg[ANSWER_ID] : 0;
    case KX_NOTIFY:
      return ALL_WORKERS;
    default:
      return 0;
  }
}
