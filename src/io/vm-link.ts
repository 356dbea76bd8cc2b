// What every kind of VM port offers the switch: frames read into a batch on readiness, a batch
// of frames written in one call, and counters the owner takes differences of. TapPort (a TAP
// the switch owns, or one a hypervisor opened) and StreamPort (QEMU's stream netdev) are links.

import type { Batch } from '../dataplane/batch.js';

export interface VmLink {
  /** The TAP's name or the socket's path, for logs and stats. */
  readonly name: string;
  /** A VM is behind the link now (a stream port: a QEMU connected; a TAP: not failed). */
  readonly up: boolean;
  readonly rxFrames: number;
  readonly txFrames: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  /** Frames refused one by one by the kernel or the peer. */
  readonly txRefused: number;
  /** Writes that stopped early because the link was full. */
  readonly txBusy: number;
  /** Frames refused as they were read (offload frames that cannot be segmented, frames too big for a slot). */
  readonly rxMalformed: number;
  readonly rxTooBig: number;
  /** Why the link stopped for good, or null. */
  readonly failure: string | null;
  /** Call cb whenever frames are waiting; replaces an earlier cb. */
  onReadable(cb: () => void): void;
  /** Append up to BATCH_MAX - b.count frames, marked as from `port` at `timeUs`; returns how many. */
  read(b: Batch, port: number, timeUs: number): number;
  /** Write frames b[idx[0..n)] in order; returns how many went out (the rest were refused). */
  write(b: Batch, idx: Int32Array, n: number): number;
  close(): void;
}
