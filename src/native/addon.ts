// Typed loader for the native addon (binding.gyp → build/Release/nvi_native.node): TAP and
// raw-socket I/O driven by the event loop, and AES-GCM for ESP. The C sources are in
// src/native/; each function there is described beside its declaration here.
//
// Per-batch calls never throw for packet-level failures: they return counts and negative
// errno values. They throw only for broken invariants (wrong argument types, offsets that
// leave the arena), and the open calls throw for configuration errors.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';
import { NviError } from '../base/errors.js';

declare const pollBrand: unique symbol;
declare const gcmBrand: unique symbol;
/** An event-loop watcher on one fd (a uv_poll handle). */
export type NativePoll = { readonly [pollBrand]: true };
/** The installed AES-GCM keys of one cipher. */
export type NativeGcmTable = { readonly [gcmBrand]: true };

/** pollStart events. */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

/** tapOpen flags. */
export const TAP_VNET_HDR = 1;
/** Leaves the fd blocking: only for a thread-pool baseline in bench/io.ts. */
export const TAP_BLOCKING = 2;
/** Accept TSO and partial checksums from the guest (vnet header + TUNSETOFFLOAD CSUM|TSO6). */
export const TAP_OFFLOAD = 4;
/** IFF_NAPI: the kernel runs GRO on the frames the switch writes. */
export const TAP_NAPI = 8;
/** TUNSETPERSIST: the device stays when the fd closes (for a hypervisor to open by name). */
export const TAP_PERSIST = 16;
/** IFF_MULTI_QUEUE: each open of the same name attaches one more queue, with its own fd. */
export const TAP_MULTI_QUEUE = 32;
/** packetOpen flags: exchange the virtio-net header (PACKET_VNET_HDR). */
export const PACKET_VNET_HDR = 1;
/** Indices into the counts array of tapReadGso. */
export const RX_FRAMES = 0;
export const RX_MALFORMED = 1;
export const RX_TOO_BIG = 2;
export const RX_COUNTS_LEN = 3;
/** Results of gsoSegment besides a segment count. */
export const GSO_NO_ROOM = -1;
export const GSO_MALFORMED = -2;
export const GSO_TOO_BIG = -3;
/** Bytes of the scratch tapWriteGro builds a super-frame in: 64 KB of IPv6 payload and the headers. */
export const GRO_SCRATCH = 65_535 + 40 + 14;
/** Bytes of the virtio-net header in front of each frame with TAP_VNET_HDR. */
export const VNET_HDR_LEN = 10;

/** Indices into the status array of tapWrite/rawSend. */
export const TX_FAILED = 0;
export const TX_ERRNO = 1;
export const TX_STOPPED = 2;
export const TX_STATUS_LEN = 3;
/** Bytes of the scratch udpEspRecv needs: 8 datagrams of up to 64 KB (src/native/udp_esp.c). */
export const UDP_ESP_SCRATCH = 8 * 65536;
/** Words of udpEspRecv's state: the datagram being handed out, its offset, the count, then 4 a datagram. */
export const UDP_ESP_STATE = 3 + 4 * 8;
/** The state words: the datagram being handed out, the offset in it, the datagrams read (0: nothing waits). */
export const UDP_ESP_CUR = 0;
export const UDP_ESP_OFF = 1;
export const UDP_ESP_COUNT = 2;
/** Where datagram d's words start (UDP_ESP_MSG + 4 d): its length, its segment size (0: one segment), sender, TOS. */
export const UDP_ESP_MSG = 3;

export interface NativeAddon {
  /** Largest n that rawRecv/rawSend accept (= BATCH_MAX). */
  readonly batchMax: number;

  /** Watch fd; cb(status, events) runs on the JS thread once per readiness event (status < 0: -errno). */
  pollCreate(fd: number, cb: (status: number, events: number) => void): NativePoll;
  pollStart(w: NativePoll, events: number): void;
  pollStop(w: NativePoll): void;
  /** ref=false: this watcher does not keep the process alive. */
  pollRef(w: NativePoll, ref: boolean): void;
  /** Stop for good; idempotent. No callback runs after it, and the fd may be closed right after. */
  pollClose(w: NativePoll): void;
  /** Keep this thread's event loop polling (no sleep) for windowUs after each readiness event on it; 0: off. Each thread has its own window. */
  busyPoll(windowUs: number): void;
  /** As a readiness event: keep polling for the window from now (nothing while busy polling is off). */
  busyPollTouch(): void;

  /** Run the calling thread on these CPUs only (sched_setaffinity of this thread); throws with errno EINVAL when none of them is usable. */
  setThreadCpus(cpus: Int32Array): void;
  /** The CPUs the calling thread may run on, ascending. */
  threadCpus(): number[];
  /** The calling thread carries packets: yieldHelperThreads() leaves it alone. Returns its thread id. */
  markPacketThread(): number;
  /** Every other thread of the process under SCHED_OTHER to SCHED_BATCH (thread_policy.c); returns the helpers under SCHED_BATCH now. */
  yieldHelperThreads(): number;
  /** Event-loop turns this thread spent busy polling since it started. */
  busyPollTurns(): number;
  /** The wake-time histograms' upper bounds, seconds (wake_times.c). */
  wakeTimeBounds(): number[];
  /** This thread's wake times: per histogram (entry, pipeline) the bucket counts (the last: above the bounds), then the sum of seconds. */
  wakeTimes(out: Float64Array): void;

  /** Create or attach TAP `name` (IFF_TAP|IFF_NO_PI, non-blocking, close-on-exec), set mtu (>0) and bring it up. */
  tapOpen(name: string, mtu: number, flags: number, netnsPath: string | null, mac: Buffer | null): { fd: number; name: string };
  /**
   * Read up to n frames, frame k into buf[firstOff + k*stride] (at most cap bytes), its length
   * into lens[k]. Stops at EAGAIN. Returns the count, or -errno when the first read failed.
   */
  tapRead(fd: number, buf: Uint8Array, firstOff: number, stride: number, cap: number, n: number,
    lens: Int32Array, hdrLen: number): number;
  /**
   * Write frames buf[start[i]..start[i]+len[i]) for i = idx[0..n). Returns how many were written;
   * status gets [refused, last errno, stopped at EAGAIN/ENOBUFS].
   */
  tapWrite(fd: number, buf: Uint8Array, start: Int32Array, len: Int32Array, idx: Int32Array, n: number,
    hdrLen: number, status: Int32Array): number;
  /**
   * Read offloaded frames (TAP_OFFLOAD) and make them wire frames in slots firstOff + k*stride
   * (src/native/gso.c); a frame that does not fit stays in scratch, its length in state[0].
   * Returns the slots filled, or -errno when the first read failed; counts gets frames read,
   * malformed (a record shorter than the virtio-net header among them) and too big. Stops at
   * EAGAIN and at end of file. state[0] starts at 0 and is then only written by this call;
   * any other value shorter than the virtio-net header throws a RangeError.
   */
  tapReadGso(fd: number, scratch: Uint8Array, state: Int32Array, buf: Uint8Array, firstOff: number, stride: number,
    cap: number, n: number, lens: Int32Array, counts: Int32Array): number;
  /**
   * Write frames to an offloading TAP: runs of one TCP flow, and with `udp` of one UDP flow, as
   * one super-frame (src/native/gro.c, built in scratch, GRO_SCRATCH bytes), others alone
   * marked DATA_VALID. Returns frames written.
   */
  tapWriteGro(fd: number, buf: Uint8Array, start: Int32Array, len: Int32Array, idx: Int32Array, n: number,
    status: Int32Array, scratch: Uint8Array, udp: boolean): number;
  /** UDP segmentation offload both ways on this offloading TAP fd (GSO_UDP_L4); false (nothing changed) where the kernel has none. */
  tapUso(fd: number): boolean;
  /** The frames tapWriteGro would write: each [virtio-net header][frame] into out, lengths and merged counts; returns how many. */
  groCoalesce(buf: Uint8Array, start: Int32Array, len: Int32Array, idx: Int32Array, n: number,
    out: Uint8Array, outLens: Int32Array, counts: Int32Array, udp: boolean): number;
  /** One offloaded frame (virtio-net header at src[off], len bytes with it) as gso.c makes it; see GSO_*. */
  gsoSegment(src: Uint8Array, off: number, len: number, dst: Uint8Array, firstOff: number, stride: number,
    cap: number, maxSlots: number, lens: Int32Array): number;

  /**
   * AF_PACKET socket on interface `ifname` (brought up, its MTU set when mtu > 0, the host's IPv6
   * and ARP off it): one frame per read/write as a TAP fd, only frames arriving on the interface;
   * see src/native/packet_port.c.
   */
  packetOpen(ifname: string, mtu: number, flags: number, bufferBytes: number, netnsPath: string | null): number;
  /**
   * Raw IPv4 socket for `protocol`, IP_HDRINCL, non-blocking, bound to addr (host order). With
   * shards > 1 it receives only shard `shard`'s packets: ESP by SPI mod shards, IPv6-in-IPv4 by
   * the inner destination's last word (see src/native/raw_socket.c); shards 0 or 1: every packet.
   */
  rawOpen(protocol: number, addr: number, bufferBytes: number, netnsPath: string | null, shards: number, shard: number): number;
  /**
   * `count` (2-256) UDP sockets bound to addr:port with SO_REUSEPORT, in worker order, and a
   * classic BPF program on the group that gives each key-exchange message to its worker's
   * socket (src/native/kx_sockets.c, as workers/kx-route.ts). Throws with the step and errno.
   */
  kxSocketsOpen(addr: number, port: number, count: number): number[];
  /** recvmmsg up to n packets as tapRead does; addrs[k] = source address (host order). 0 at EAGAIN, -errno on error. */
  rawRecv(fd: number, buf: Uint8Array, firstOff: number, stride: number, cap: number, n: number,
    lens: Int32Array, addrs: Uint32Array): number;
  /** sendmmsg packets idx[0..n) to peer[i]; returns how many were sent; status as for tapWrite. */
  rawSend(fd: number, buf: Uint8Array, start: Int32Array, len: Int32Array, peer: Uint32Array, idx: Int32Array,
    n: number, status: Int32Array): number;
  /** UDP socket for ESP in UDP bound to addr:port (host order), UDP GRO on, DF always (src/native/udp_esp.c). */
  udpEspOpen(addr: number, port: number, bufferBytes: number, netnsPath: string | null): number;
  /**
   * `count` (2-64) such sockets on addr:port with SO_REUSEPORT, in worker order, and a classic BPF
   * program on the group that gives each datagram to the socket of its SPI mod count (src/native/udp_esp.c).
   */
  udpEspGroupOpen(addr: number, port: number, bufferBytes: number, count: number, netnsPath: string | null): number[];
  /**
   * Up to n ESP packets from the UDP socket, each behind an IPv4 header written for it (protocol
   * 50, from the sender, to `local`), as rawRecv gives them; a datagram of several segments fills
   * several slots. scratch: UDP_ESP_SCRATCH bytes, state: UDP_ESP_STATE words, both kept per socket
   * (segments that did not fit wait there). 0 when nothing waits, -errno on error.
   */
  udpEspRecv(fd: number, scratch: Uint8Array, state: Int32Array, buf: Uint8Array, firstOff: number, stride: number, cap: number,
    n: number, lens: Int32Array, addrs: Uint32Array, local: number): number;
  /**
   * Send packets idx[0..n) to peer[i]: ESP ones by the UDP socket to `port` without their IPv4
   * header, a run of one peer, TOS and size in one datagram (UDP_SEGMENT); others by the raw socket.
   * Returns how many were sent; status as for rawSend.
   */
  udpEspSend(udpFd: number, rawFd: number, buf: Uint8Array, start: Int32Array, len: Int32Array, peer: Uint32Array, idx: Int32Array,
    n: number, status: Int32Array, port: number): number;

  gcmCreate(): NativeGcmTable;
  gcmAddKey(t: NativeGcmTable, key: Uint8Array, salt: Uint8Array): number;
  gcmRemoveKey(t: NativeGcmTable, handle: number): void;
  /** Writes the key then the salt into out (at least 36 bytes); returns the key's length, 0 when the handle is not installed. */
  gcmExportKey(t: NativeGcmTable, handle: number, out: Uint8Array): number;
  gcmKeyCount(t: NativeGcmTable): number;
  /** OpenSSL contexts alive (one per key in use). */
  gcmContextCount(t: NativeGcmTable): number;
  /** Bytes of the key table: its slots, used or free. */
  gcmTableBytes(t: NativeGcmTable): number;
  /** One pass: frees the contexts of keys not used in the last `idle` passes, among up to maxKeys keys from where the last pass stopped; returns how many it freed. */
  gcmTrim(t: NativeGcmTable, idle: number, maxKeys: number): number;
  gcmSeal(t: NativeGcmTable, buf: Uint8Array, key: Int32Array, espOff: Int32Array, ptLen: Int32Array,
    seqHi: Uint32Array, ok: Uint8Array, count: number): void;
  gcmOpen(t: NativeGcmTable, buf: Uint8Array, key: Int32Array, espOff: Int32Array, ptLen: Int32Array,
    seqHi: Uint32Array, ok: Uint8Array, count: number): void;
}

const ADDON_FILE = join('build', 'Release', 'nvi_native.node');

/** The package root: the nearest directory above this module that holds binding.gyp. */
function packageRoot(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

// The addon, once loaded; a module is loaded once per process anyway.
let loaded: NativeAddon | null = null;

/** Load the addon; throws NVI_ERR_NATIVE_MISSING with what to do when it was not built. */
export function loadNative(): NativeAddon {
  if (loaded) return loaded;
  const root = packageRoot();
  const file = root === null ? null : join(root, ADDON_FILE);
  if (file === null || !existsSync(file)) {
    throw new NviError('NVI_ERR_NATIVE_MISSING',
      `native addon ${file ?? ADDON_FILE} is missing: run npm install (builds the native addon)`);
  }
  try {
    loaded = createRequire(import.meta.url)(file) as NativeAddon;
  } catch (e) {
    throw new NviError('NVI_ERR_NATIVE_LOAD',
      `native addon ${file} does not load (${(e as Error).message}): run npm install (builds the native addon)`);
  }
  return loaded;
}

/** True when the addon is built and loads. */
export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

/** "EAGAIN"-style name for a positive errno, for messages and counters. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno));
  } catch {
    return `errno ${errno}`;
  }
}

/** Text of an error thrown by an open call: its message and errno name. */
export function nativeErrorText(e: unknown): string {
  const err = e as Error & { errno?: number };
  return typeof err.errno === 'number' ? `${err.message} (${errnoName(err.errno)})` : String(err.message ?? e);
}

/** Path of a named namespace as `ip netns` creates it. */
export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}
