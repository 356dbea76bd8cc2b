// The host's IPv4 underlay as a batch port: raw sockets for ESP (protocol 50) and plain
// IPv6-in-IPv4 (41), bound to the host's underlay address, IP_HDRINCL (the switch writes
// the outer header), read with recvmmsg and written with sendmmsg, one native call each.
// With `espUdpPort` (underlay.espUdpPort), ESP travels in UDP instead (RFC 3948 framing) on
// a third socket, a run of packets to one peer in one datagram each way (UDP GSO and GRO,
// src/native/udp_esp.c); the batch sees the same IPv4 packets either way.
//
// Ownership: read() hands each packet to the batch (slot of index b.count.., at
// UNDERLAY_OFFSET, source address in b.peer); send() is done with the packets when it
// returns.

import { closeSync } from 'node:fs';
import { BATCH_MAX, Batch, SLOT_BYTES, UNDERLAY_OFFSET } from '../dataplane/batch.js';
import { parseIpv4Address } from '../base/address.js';
import { PROTO_ESP, PROTO_IPV6 } from '../wire/ipv6.js';
import { NviError } from '../base/errors.js';
import {
  POLL_READABLE, TX_ERRNO, TX_FAILED, TX_STATUS_LEN, TX_STOPPED, UDP_ESP_COUNT, UDP_ESP_CUR, UDP_ESP_MSG, UDP_ESP_OFF, UDP_ESP_SCRATCH, UDP_ESP_STATE,
  loadNative, nativeErrorText, netnsPath, type NativeAddon, type NativePoll,
} from '../native/addon.js';

/** The port index underlay packets carry in the batch. */
export const UNDERLAY_PORT = -1;
/** Largest packet read into a slot; the same tailroom as Batch.push keeps. */
export const UNDERLAY_CAP = SLOT_BYTES - UNDERLAY_OFFSET - 64;
/**
 * Reads of the UDP socket's segments one readiness callback makes at most: a read takes 8
 * datagrams of at most 64 segments, 2 batches; more turns go to the next loop turn.
 */
const READS_PER_TURN = 5;
/** Socket buffers: 4 MiB holds ~2800 full-size packets, a dozen batches of slack. */
export const UNDERLAY_BUFFER_BYTES = 4 << 20;

export interface RawUnderlayOptions {
  /** Named network namespace (as `ip netns add` makes) to open the sockets in. */
  netns?: string;
  /** SO_RCVBUF and SO_SNDBUF in bytes (forced past net.core.*mem_max as root). */
  bufferBytes?: number;
  /**
   * Receive only one shard of the underlay, for one of `count` data-path threads: ESP packets
   * whose SPI mod count is `index`, IPv6-in-IPv4 packets whose inner destination's last word
   * mod count is (src/switch/workers/shard.ts); packets too short to tell go to shard 0.
   * Sending is not sharded.
   */
  shard?: { count: number; index: number };
  /** ESP in UDP to and from this port, instead of IP protocol 50 (every host of the cloud alike). */
  espUdpPort?: number;
  /** With a shard: its socket of the host's ESP-in-UDP group (udpEspGroupOpen), which steers by SPI. */
  espUdpFd?: number;
}

export class RawUnderlay {
  rxPackets = 0;
  rxBytes = 0;
  /** recvmmsg calls that failed (other than EAGAIN). */
  rxErrors = 0;
  txPackets = 0;
  txBytes = 0;
  /** Packets the kernel refused one by one (EMSGSIZE, ENETUNREACH, EPERM, ...). */
  txRefused = 0;
  /** send() calls that stopped early because the socket buffer was full. */
  txBusy = 0;
  lastErrno = 0;

  /** fds[0]: ESP socket, also used to send both protocols; fds[1]: IPv6-in-IPv4 socket; fds[2]: ESP in UDP, if on. */
  readonly fds: readonly number[];
  /** The UDP port ESP travels in (0: none, IP protocol 50). */
  readonly espUdpPort: number;
  private readonly udp: { readonly scratch: Buffer; readonly state: Int32Array } | undefined;
  private readonly lens = new Int32Array(BATCH_MAX);
  private readonly addrs = new Uint32Array(BATCH_MAX);
  private readonly status = new Int32Array(TX_STATUS_LEN);
  private readonly watchers: NativePoll[] = [];
  private readable: (() => void) | null = null;
  /** Which socket read() drains first, outside a readiness callback; rotates so that none starves. */
  private turn = 0;
  /** The socket whose readiness callback runs now (-1: none): read() reads it alone. */
  private ready = -1;
  private closed = false;
  /** pause() ran: nothing is read until onReadable() again. */
  private paused = false;
  /** A read of the segments still waiting, queued for the next turn of the event loop (socket 2's). */
  private later: NodeJS.Immediate | undefined;
  /** In pause(): read() hands out the segments in the scratch and reads no new datagram. */
  private waitingOnly = false;

  /**
   * The readiness callback of socket k. Only that socket is read in it: the other, when it
   * holds packets, runs its own (the watchers are level-triggered), so a packet alone costs
   * one receive call, not one more that finds nothing.
   */
  private onPoll(k: number): (status: number) => void {
    return (status) => {
      if (status < 0) {
        // libuv stopped the watcher on a socket error (EPOLLERR). A raw socket's error is
        // transient (the next read clears it), so count it, drain, and watch again.
        this.rxErrors++;
        this.lastErrno = -status;
        if (this.closed) return;
        for (const w of this.watchers) this.native.pollStart(w, POLL_READABLE);
      }
      this.ready = k;
      try {
        // Segments of a datagram that did not fit in the batch wait in the scratch, which no
        // readiness reports: read batches while some wait, at most READS_PER_TURN, since a read
        // that empties the scratch may read new datagrams into it.
        for (let reads = 0; reads < READS_PER_TURN && (reads === 0 || this.segmentsWaiting(k)); reads++) this.readable?.();
      } finally {
        this.ready = -1;
      }
      // Still some: the socket may hold nothing more, so no readiness would come for them.
      // They go at the next turn of the loop, after the other ports had theirs.
      if (this.segmentsWaiting(k) && this.later === undefined) {
        this.later = setImmediate(() => {
          this.later = undefined;
          if (!this.paused && this.segmentsWaiting(k)) this.onPoll(k)(0);
        });
      }
    };
  }

  private constructor(
    private readonly native: NativeAddon,
    /** The host's underlay address, uint32 host order. */
    readonly address: number,
    readonly localAddress: string,
    fds: readonly number[],
    espUdpPort: number,
  ) {
    this.fds = fds;
    this.espUdpPort = fds.length > 2 ? espUdpPort : 0;
    this.udp = fds.length > 2 ? { scratch: Buffer.alloc(UDP_ESP_SCRATCH), state: new Int32Array(UDP_ESP_STATE) } : undefined;
  }

  /** Open both sockets bound to `localAddress`, which must be an address of this host. */
  static open(localAddress: string, opts: RawUnderlayOptions = {}): RawUnderlay {
    let address: number;
    try {
      address = parseIpv4Address(localAddress);
    } catch (e) {
      throw new NviError('NVI_ERR_UNDERLAY_ADDRESS', `underlay address: ${(e as Error).message}`);
    }
    const native = loadNative();
    const ns = opts.netns ? netnsPath(opts.netns) : null;
    const bytes = opts.bufferBytes ?? UNDERLAY_BUFFER_BYTES;
    const { count, index } = opts.shard ?? { count: 1, index: 0 };
    if (!(Number.isInteger(count) && count >= 1 && Number.isInteger(index) && index >= 0 && index < count)) {
      throw new NviError('NVI_ERR_UNDERLAY_SHARD', `underlay ${localAddress}: shard ${index} of ${count}: need integers 0 <= index < count`);
    }
    const udpPort = opts.espUdpPort ?? 0;
    if (udpPort !== 0 && count > 1 && opts.espUdpFd === undefined) {
      throw new NviError('NVI_ERR_UNDERLAY_SHARD', `underlay ${localAddress}: ESP in UDP (port ${udpPort}) for shard ${index} of ${count} needs its socket of the host's group`);
    }
    const fds: number[] = [];
    try {
      for (const proto of [PROTO_ESP, PROTO_IPV6]) fds.push(native.rawOpen(proto, address, bytes, ns, count, index));
      if (udpPort !== 0) fds.push(opts.espUdpFd ?? native.udpEspOpen(address, udpPort, bytes, ns));
    } catch (e) {
      for (const fd of fds) closeSync(fd);
      const where = opts.netns ? ` in namespace ${opts.netns}` : '';
      throw new NviError('NVI_ERR_UNDERLAY_OPEN',
        `underlay ${localAddress}${where}: ${nativeErrorText(e)} (is the address configured on this host?)`);
    }
    return new RawUnderlay(native, address, localAddress, fds, udpPort);
  }

  /** Carry on with sockets another process opened (handover.ts): fds as `fds` gave them there. */
  static adopt(localAddress: string, fds: readonly number[], espUdpPort = 0): RawUnderlay {
    if (fds.length !== (espUdpPort !== 0 ? 3 : 2)) {
      throw new NviError('NVI_ERR_HANDOVER', `underlay ${localAddress}: handed ${fds.length} sockets, expected ${espUdpPort !== 0 ? 3 : 2} (underlay.espUdpPort ${espUdpPort}); restart rather than hand over when changing it`);
    }
    return new RawUnderlay(loadNative(), parseIpv4Address(localAddress), localAddress, fds, espUdpPort);
  }

  /**
   * Stop reading (a handover: the next process reads what queues meanwhile); sending goes on.
   * Segments already read from the UDP socket, still waiting in the scratch, are handed to
   * the readiness callback first (no new datagram is read): the next process never sees them.
   */
  pause(): void {
    this.paused = true;
    for (const w of this.watchers) this.native.pollStop(w);
    if (this.readable === null) return;
    this.ready = 2;
    this.waitingOnly = true;
    try {
      while (this.segmentsWaiting(2)) this.readable();
    } finally {
      this.ready = -1;
      this.waitingOnly = false;
    }
  }

  /** Call cb (on the JS thread) whenever packets of either protocol are waiting; replaces an earlier cb. */
  onReadable(cb: () => void): void {
    if (this.closed) throw new NviError('NVI_ERR_PORT_CLOSED', `underlay ${this.localAddress} is closed`);
    this.readable = cb;
    this.paused = false;
    if (this.watchers.length === 0) this.fds.forEach((fd, k) => this.watchers.push(this.native.pollCreate(fd, this.onPoll(k))));
    for (const w of this.watchers) this.native.pollStart(w, POLL_READABLE);
  }

  /** Let the process exit even while the underlay is watched. */
  unref(): void {
    if (!this.closed) for (const w of this.watchers) this.native.pollRef(w, false);
  }

  /**
   * Append up to BATCH_MAX - b.count IPv4 packets (outer header first) at UNDERLAY_OFFSET
   * of their slots; b.peer[i] = source address. Returns how many. In a readiness callback,
   * from the socket that is ready; elsewhere, from each.
   */
  read(b: Batch, timeUs: number): number {
    if (this.closed) return 0;
    const first = b.count;
    if (this.ready >= 0) {
      this.readSocket(b, this.fds[this.ready], timeUs);
    } else {
      const count = this.fds.length;
      const t = this.turn;
      this.turn = (t + 1) % count;
      for (let k = 0; k < count; k++) this.readSocket(b, this.fds[(t + k) % count], timeUs);
    }
    const n = b.count - first;
    this.rxPackets += n;
    return n;
  }

  /**
   * Send packets b.start[idx[k]] .. + b.len[idx[k]] (each a whole IPv4 packet) to
   * b.peer[idx[k]], for k < n, in order. Returns how many were sent; the rest were refused
   * (txRefused) or not tried because the socket buffer was full (txBusy).
   */
  send(b: Batch, idx: Int32Array, n: number): number {
    if (n <= 0 || this.closed) return 0;
    const s = this.status;
    const sent = this.udp
      ? this.native.udpEspSend(this.fds[2], this.fds[0], b.data, b.start, b.len, b.peer, idx, n, s, this.espUdpPort)
      : this.native.rawSend(this.fds[0], b.data, b.start, b.len, b.peer, idx, n, s);
    this.txRefused += s[TX_FAILED];
    if (s[TX_STOPPED] !== 0) this.txBusy++;
    if (s[TX_ERRNO] !== 0) this.lastErrno = s[TX_ERRNO];
    this.txPackets += sent;
    for (let k = 0; k < sent; k++) this.txBytes += b.len[idx[k]];
    return sent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.later !== undefined) clearImmediate(this.later);
    for (const w of this.watchers) this.native.pollClose(w); // before close(fd): epoll forgets it
    this.watchers.length = 0;
    this.readable = null;
    for (const fd of this.fds) closeSync(fd);
  }

  /** Socket k is the UDP one, and segments it read are still waiting for a batch. */
  private segmentsWaiting(k: number): boolean {
    return k === 2 && !this.closed && this.udp !== undefined && this.udp.state[UDP_ESP_COUNT] > 0;
  }

  /** How many segments wait in the scratch (src/native/udp_esp.c's state: an empty datagram is one). */
  private waitingSegments(): number {
    const st = this.udp!.state;
    let n = 0;
    for (let d = st[UDP_ESP_CUR]; d < st[UDP_ESP_COUNT]; d++) {
      const m = UDP_ESP_MSG + 4 * d;
      const len = st[m];
      const seg = st[m + 1] > 0 ? st[m + 1] : len;
      const left = len - (d === st[UDP_ESP_CUR] ? st[UDP_ESP_OFF] : 0);
      n += len === 0 ? 1 : Math.ceil(left / seg);
    }
    return n;
  }

  private readSocket(b: Batch, fd: number, timeUs: number): void {
    const first = b.count;
    const room = this.waitingOnly ? Math.min(BATCH_MAX - first, this.waitingSegments()) : BATCH_MAX - first;
    if (room <= 0) return;
    const at = Batch.slot(first) + UNDERLAY_OFFSET;
    const udp = this.udp;
    const n = udp && fd === this.fds[2]
      ? this.native.udpEspRecv(fd, udp.scratch, udp.state, b.data, at, SLOT_BYTES, UNDERLAY_CAP, room, this.lens, this.addrs, this.address)
      : this.native.rawRecv(fd, b.data, at, SLOT_BYTES, UNDERLAY_CAP, room, this.lens, this.addrs);
    if (n < 0) {
      this.rxErrors++;
      this.lastErrno = -n;
      return;
    }
    const lens = this.lens;
    const addrs = this.addrs;
    for (let k = 0; k < n; k++) {
      const i = first + k;
      b.init(i, at + k * SLOT_BYTES, lens[k], UNDERLAY_PORT, timeUs);
      b.peer[i] = addrs[k];
      this.rxBytes += lens[k];
    }
    b.count = first + n;
  }
}
