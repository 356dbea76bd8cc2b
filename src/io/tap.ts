// A VM's TAP device as a batch port. The fd is non-blocking and watched by the event loop
// (uv_poll, no thread pool); on each readiness event the owner reads up to a batch with one
// native call, and writes a batch of frames with one native call.
//
// Ownership: read() hands each frame to the batch (slot of index b.count.., at
// FRAME_OFFSET); write() is done with the frames when it returns.

import { closeSync } from 'node:fs';
import { BATCH_MAX, Batch, FRAME_OFFSET, MAX_PACKET, SLOT_BYTES } from '../dataplane/batch.js';
import { ETH_HLEN } from '../wire/ethernet.js';
import type { VmLink } from './vm-link.js';
import { NviError } from '../base/errors.js';
import {
  GRO_SCRATCH, PACKET_VNET_HDR, POLL_READABLE, RX_COUNTS_LEN, RX_FRAMES, RX_MALFORMED, RX_TOO_BIG, TAP_MULTI_QUEUE, TAP_NAPI, TAP_OFFLOAD, TAP_PERSIST,
  TAP_VNET_HDR, TX_ERRNO, TX_FAILED,
  TX_STATUS_LEN, TX_STOPPED, VNET_HDR_LEN, errnoName, loadNative, nativeErrorText, netnsPath,
  type NativeAddon, type NativePoll,
} from '../native/addon.js';

/** Largest frame an offloading guest hands over: 64 KB of IPv6 payload and its headers, with the vnet header. */
const OFFLOAD_SCRATCH = VNET_HDR_LEN + 14 + 40 + 65_535;

const ENODEV = 19;
/** Interface names are at most IFNAMSIZ - 1 = 15 bytes (linux/if.h). */
export const TAP_NAME_MAX = 15;
/** Queues of one multi-queue TAP the kernel allows (MAX_TAP_QUEUES in drivers/net/tun.c). */
export const TAP_QUEUES_MAX = 256;
/** Smallest link MTU Linux accepts for IPv6 is 1280; IPv4 needs 68. */
const MTU_MIN = 68;
/** A frame must fit a slot: MTU + Ethernet header <= MAX_PACKET. */
export const TAP_MTU_MAX = MAX_PACKET - ETH_HLEN;

export interface TapOptions {
  /** Link MTU to set; left as the kernel has it when absent. */
  mtu?: number;
  /** Named network namespace (as `ip netns add` makes) to create the device in. */
  netns?: string;
  /** MAC of the device's own (guest) side, set before the link comes up. */
  mac?: Buffer;
  /**
   * Exchange a virtio-net header with the kernel (IFF_VNET_HDR), the hook for TSO/GSO
   * later. Off by default; with no offloads enabled the header is all zero both ways.
   */
  vnetHdr?: boolean;
  /**
   * Let the guest hand over TSO frames of up to 64 KB and partial checksums; the switch makes
   * them wire frames as it reads (src/native/gso.c), and the kernel runs GRO on what it
   * writes (IFF_NAPI), marked as already checked (the ESP ICV covered every byte).
   */
  offload?: boolean;
  /**
   * With offload: UDP segmentation offload too, where the kernel has it (>= 6.2; default
   * true): the guest may hand over UDP super-frames (cut into datagrams as they are read) and
   * runs of one UDP flow are written to it as one.
   */
  offloadUdp?: boolean;
}

/** How a TAP's fd is read and written, for the process that takes it over. */
export interface TapHandover {
  readonly vnetHdr: boolean;
  readonly offload: boolean;
  /** Absent from a process of a version before it: false. */
  readonly uso?: boolean;
}

/** Checks a TAP name and MTU; returns the MTU to set (0: leave it). */
function checkNameAndMtu(name: string, mtu: number | undefined): number {
  if (name.length === 0 || Buffer.byteLength(name) > TAP_NAME_MAX || /[\s/:]/.test(name)) {
    throw new NviError('NVI_ERR_TAP_NAME',
      `TAP name ${JSON.stringify(name)}: must be 1..${TAP_NAME_MAX} bytes without spaces, "/" or ":"`);
  }
  if (mtu !== undefined && !(Number.isInteger(mtu) && mtu >= MTU_MIN && mtu <= TAP_MTU_MAX)) {
    throw new NviError('NVI_ERR_TAP_MTU', `TAP ${name}: mtu ${mtu} must be an integer in ${MTU_MIN}..${TAP_MTU_MAX}`);
  }
  return mtu ?? 0;
}

export class TapPort implements VmLink {
  // Counters (never reset; the owner takes differences).
  rxFrames = 0;
  txFrames = 0;
  rxBytes = 0;
  txBytes = 0;
  /** Frames the kernel refused one by one (write error other than EAGAIN/ENOBUFS). */
  txRefused = 0;
  /** write() calls that stopped early because the device queue was full. */
  txBusy = 0;
  /** errno of the last read or write error, 0 if none yet. */
  lastErrno = 0;
  /** Set when a read failed for good (device deleted, ...): the port stopped watching. */
  failure: string | null = null;
  /** Offload mode: frames read from the kernel (each may have become several wire frames in rxFrames). */
  rxKernelFrames = 0;
  /** Offloaded frames refused before they became wire frames (counted by the owner as drops). */
  rxMalformed = 0;
  rxTooBig = 0;

  private readonly lens = new Int32Array(BATCH_MAX);
  private readonly status = new Int32Array(TX_STATUS_LEN);
  private readonly hdrLen: number;
  /** Offload mode: the frame being read, kept across calls when its segments did not fit. */
  private readonly scratch: Buffer | null;
  /** Offload mode: where a super-frame is built before it is written. */
  private readonly groScratch: Buffer | null;
  private readonly rxState = new Int32Array(1);
  private readonly rxCounts = new Int32Array(RX_COUNTS_LEN);
  private watcher: NativePoll | null = null;
  private readable: (() => void) | null = null;
  private closed = false;
  // Created once: the watcher calls it on every readiness event.
  private readonly onPoll = (status: number): void => {
    if (status < 0) {
      this.fail('poll', -status); // EPOLLERR: the tun driver reports a detached device this way
      return;
    }
    this.readable?.();
    // A frame read from the kernel whose segments did not fit the batch waits in scratch, and
    // no readiness event comes for it while the kernel's queue is empty: hand it over now.
    for (let more = BATCH_MAX; this.pending && this.readable !== null && more > 0; more--) this.readable();
  };

  private constructor(
    private readonly native: NativeAddon,
    readonly name: string,
    readonly fd: number,
    vnetHdr: boolean,
    /** TSO and partial checksums accepted (see TapOptions.offload). */
    readonly offload: boolean,
    /** UDP segmentation offload on, both ways (TapOptions.offloadUdp, where the kernel has it). */
    readonly uso = false,
  ) {
    this.hdrLen = vnetHdr || offload ? VNET_HDR_LEN : 0;
    this.scratch = offload ? Buffer.alloc(OFFLOAD_SCRATCH) : null;
    this.groScratch = offload ? Buffer.alloc(GRO_SCRATCH) : null;
  }

  /** An offloaded frame was read that did not fit the last batch: read again before waiting. */
  get pending(): boolean {
    return this.rxState[0] > 0;
  }

  /** Create the TAP device `name` or attach to an existing one, and bring it up. */
  static open(name: string, opts: TapOptions = {}): TapPort {
    return TapPort.openQueues(name, 1, opts)[0];
  }

  /**
   * `queues` queues of one TAP device, each a port with its own fd, for as many data-path
   * threads. With more than one the device is multi-queue (IFF_MULTI_QUEUE): the kernel puts
   * all frames of a flow on one queue, the one where the switch last wrote frames of that flow
   * (or one chosen by the flow's hash before that). A device made with one queue cannot take
   * more, nor the other way round (the kernel refuses with EINVAL).
   */
  static openQueues(name: string, queues: number, opts: TapOptions = {}): TapPort[] {
    const mtu = checkNameAndMtu(name, opts.mtu);
    if (!(Number.isInteger(queues) && queues >= 1 && queues <= TAP_QUEUES_MAX)) {
      throw new NviError('NVI_ERR_TAP_QUEUES', `TAP ${name}: queues ${queues} must be an integer in 1..${TAP_QUEUES_MAX}`);
    }
    const native = loadNative();
    const vnetHdr = opts.vnetHdr === true;
    const offload = opts.offload === true;
    const opened: { fd: number; name: string }[] = [];
    let uso = false;
    try {
      if (opts.mac !== undefined && opts.mac.length !== 6) throw new Error('mac must be 6 bytes');
      const flags = (vnetHdr ? TAP_VNET_HDR : 0) | (offload ? TAP_OFFLOAD | TAP_NAPI : 0) | (queues > 1 ? TAP_MULTI_QUEUE : 0);
      const ns = opts.netns ? netnsPath(opts.netns) : null;
      for (let q = 0; q < queues; q++) {
        opened.push(native.tapOpen(name, mtu, flags, ns, opts.mac ?? null));
        // Offloads are the device's; every queue's fd reads and writes with them.
        uso = offload && opts.offloadUdp !== false && native.tapUso(opened[q].fd);
      }
    } catch (e) {
      for (const o of opened) closeSync(o.fd);
      throw new NviError('NVI_ERR_TAP_OPEN', `TAP ${name}${queues > 1 ? ` (queue ${opened.length} of ${queues})` : ''}: ${nativeErrorText(e)}`);
    }
    return opened.map((o) => new TapPort(native, o.name, o.fd, vnetHdr, offload, uso));
  }

  /**
   * The host side of a TAP that a hypervisor opens by name (QEMU `-netdev tap,ifname=NAME,
   * script=no,downscript=no`, libvirt `<interface type='ethernet'>`): created here, persistent,
   * when it does not exist yet, so the VM can stop and start again under the same port; frames
   * cross an AF_PACKET socket bound to it (src/native/packet_port.c). The host's own stack stays
   * off the interface: no IPv6 (no address, no ND of its own) and no ARP answers.
   */
  static attach(name: string, opts: { mtu?: number; offload?: boolean; bufferBytes?: number; netns?: string } = {}): TapPort {
    const mtu = checkNameAndMtu(name, opts.mtu);
    const native = loadNative();
    const offload = opts.offload === true;
    const ns = opts.netns ? netnsPath(opts.netns) : null;
    let fd: number;
    try {
      fd = native.packetOpen(name, mtu, offload ? PACKET_VNET_HDR : 0, opts.bufferBytes ?? 4 << 20, ns);
    } catch (e) {
      if ((e as { errno?: number }).errno !== ENODEV) throw new NviError('NVI_ERR_TAP_OPEN', `TAP ${name} (the hypervisor's): ${nativeErrorText(e)}`);
      // Not there yet: made here, persistent, for the hypervisor to open by name.
      try {
        closeSync(native.tapOpen(name, mtu, TAP_PERSIST | TAP_VNET_HDR, ns, null).fd);
        fd = native.packetOpen(name, mtu, offload ? PACKET_VNET_HDR : 0, opts.bufferBytes ?? 4 << 20, ns);
      } catch (e2) {
        throw new NviError('NVI_ERR_TAP_OPEN', `TAP ${name} (the hypervisor's): ${nativeErrorText(e2)}`);
      }
    }
    return new TapPort(native, name, fd, false, offload);
  }

  /**
   * Carry on with a TAP (or AF_PACKET) fd another process opened (handover.ts), read and
   * written the same way: `handover` is what the `handover` getter said there.
   */
  static adopt(name: string, fd: number, handover: TapHandover): TapPort {
    return new TapPort(loadNative(), name, fd, handover.vnetHdr, handover.offload, handover.uso === true);
  }

  /** What a process taking this port over needs besides the fd. */
  get handover(): TapHandover {
    return { vnetHdr: this.hdrLen > 0 && !this.offload, offload: this.offload, uso: this.uso };
  }

  /** Stop reading (a handover: the next process reads what queues meanwhile); writing goes on. */
  pause(): void {
    if (this.watcher !== null) this.native.pollStop(this.watcher);
  }

  /** The TAP is there and read (whether a VM is behind it, the kernel does not say here). */
  get up(): boolean {
    return this.failure === null && !this.closed;
  }

  /** Call cb (on the JS thread, no arguments) whenever frames are waiting; replaces an earlier cb. */
  onReadable(cb: () => void): void {
    if (this.closed) throw new NviError('NVI_ERR_PORT_CLOSED', `TAP ${this.name} is closed`);
    this.readable = cb;
    if (this.watcher === null) this.watcher = this.native.pollCreate(this.fd, this.onPoll);
    if (this.failure === null) this.native.pollStart(this.watcher, POLL_READABLE);
  }

  /** Let the process exit even while this port is watched. */
  unref(): void {
    if (this.watcher !== null && !this.closed) this.native.pollRef(this.watcher, false);
  }

  /**
   * Append up to BATCH_MAX - b.count frames to the batch, each at FRAME_OFFSET of its slot,
   * marked as coming from `port` at `timeUs`. Returns how many; 0 when none are waiting.
   */
  read(b: Batch, port: number, timeUs: number): number {
    const first = b.count;
    const room = BATCH_MAX - first;
    if (room <= 0 || this.closed || this.failure !== null) return 0;
    const at = Batch.slot(first) + FRAME_OFFSET;
    const c = this.rxCounts;
    const n = this.scratch === null
      ? this.native.tapRead(this.fd, b.data, at, SLOT_BYTES, MAX_PACKET, room, this.lens, this.hdrLen)
      : this.native.tapReadGso(this.fd, this.scratch, this.rxState, b.data, at, SLOT_BYTES, MAX_PACKET, room, this.lens, c);
    if (n < 0) {
      this.fail('read', -n);
      return 0;
    }
    const lens = this.lens;
    let bytes = 0;
    for (let k = 0; k < n; k++) {
      b.init(first + k, at + k * SLOT_BYTES, lens[k], port, timeUs);
      bytes += lens[k];
    }
    b.count = first + n;
    this.rxFrames += n;
    this.rxBytes += bytes;
    if (this.scratch !== null) {
      this.rxKernelFrames += c[RX_FRAMES];
      this.rxMalformed += c[RX_MALFORMED];
      this.rxTooBig += c[RX_TOO_BIG];
      c.fill(0);
    }
    return n;
  }

  /**
   * Write frames b.start[idx[k]] .. + b.len[idx[k]] for k < n, in order. Returns how many
   * were written; the rest were refused (txRefused) or not tried because the queue was full
   * (txBusy). Never throws for a frame.
   */
  write(b: Batch, idx: Int32Array, n: number): number {
    if (n <= 0 || this.closed) return 0;
    const s = this.status;
    const w = this.groScratch === null
      ? this.native.tapWrite(this.fd, b.data, b.start, b.len, idx, n, this.hdrLen, s)
      : this.native.tapWriteGro(this.fd, b.data, b.start, b.len, idx, n, s, this.groScratch, this.uso);
    this.txFrames += w;
    for (let k = 0; k < w; k++) this.txBytes += b.len[idx[k]];
    this.txRefused += s[TX_FAILED];
    if (s[TX_STOPPED] !== 0) this.txBusy++;
    if (s[TX_ERRNO] !== 0) this.lastErrno = s[TX_ERRNO];
    return w;
  }

  /** Stop watching and close the fd. The device goes away unless it was made persistent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watcher !== null) this.native.pollClose(this.watcher); // before close(fd): epoll forgets it
    this.watcher = null;
    this.readable = null;
    closeSync(this.fd);
  }

  /** A read error other than EAGAIN is not transient for a TAP (e.g. EBADFD: device deleted). */
  private fail(what: 'poll' | 'read', errno: number): void {
    this.lastErrno = errno;
    this.failure = `TAP ${this.name}: ${what} failed with ${errnoName(errno)} (device deleted?); the port stopped reading`;
    if (this.watcher !== null) this.native.pollStop(this.watcher);
  }
}
