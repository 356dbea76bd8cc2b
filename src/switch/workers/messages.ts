// What the main thread and a data-path thread say to each other (sharded-switch.ts and
// worker-thread.ts). Nothing here is per packet: NOTIFYs (which every worker needs), operator
// commands and their answers, verdict events that an operator follows, a handover's steps.

import type { HandoverState, Restored } from '../handover-state.js';
import type { ThreadHandover } from '../handover.js';
import type { Shard } from './shard.js';

/** What a worker thread starts with. */
export interface WorkerStart {
  readonly configFile: string;
  readonly host: string;
  readonly shard: Shard;
  readonly cipher?: string;
  readonly vmNetnsPrefix?: string;
  readonly exportSa?: string;
  /** Its socket of the host's key-exchange group (a switch that starts; a takeover has it in `takeover`). */
  readonly kxFd?: number;
  /** Its socket of the host's ESP-in-UDP group (underlay.espUdpPort set; a takeover has it in `takeover`). */
  readonly espUdpFd?: number;
  /** This worker takes over what worker `shard.index` of the old switch handed over (`nvi-switch restart`). */
  readonly takeover?: ThreadHandover;
}

/** The operator commands a worker answers (its share of the host's answer). */
export type WorkerMethod = 'stats' | 'cables' | 'flush' | 'explain' | 'vm' | 'lastVerdicts'
  /** The old switch's side of a handover (LiveSwitch.handoverPlan, handoverAbandoned, pauseAndSave). */
  | 'handoverPlan' | 'handoverAbandoned' | 'pauseAndSave';

export type ToWorker =
  /** A NOTIFY another worker's socket got (worker-kx.ts). */
  | { readonly kind: 'notify'; readonly msg: Uint8Array; readonly from: number }
  | { readonly kind: 'call'; readonly id: number; readonly method: WorkerMethod; readonly arg?: unknown }
  | { readonly kind: 'watch'; readonly id: number; readonly filter: unknown }
  | { readonly kind: 'unwatch'; readonly id: number }
  /** The state of this worker's shard, from the old switch (a takeover). */
  | { readonly kind: 'takeover-state'; readonly state: HandoverState }
  /** handedOver: the new process took over; close this thread's copies of the fds and remove nothing. */
  | { readonly kind: 'stop'; readonly handedOver?: boolean };

export type FromWorker =
  | { readonly kind: 'ready' }
  /** A takeover: the handed ports are adopted and the peers verified; the worker waits for its state. */
  | { readonly kind: 'takeover-ready' }
  /** A takeover: what the worker took over; it reads from now on. */
  | { readonly kind: 'took-over'; readonly restored: Restored }
  | { readonly kind: 'failed'; readonly error: string; readonly code?: string }
  /** A NOTIFY this worker's socket got: for every other worker. */
  | { readonly kind: 'notify'; readonly msg: Uint8Array; readonly from: number }
  | { readonly kind: 'reply'; readonly id: number; readonly result?: unknown; readonly error?: string }
  | { readonly kind: 'verdict'; readonly id: number; readonly verdict: unknown; readonly lost: number }
  /** Keep a VM detached (or not) across restarts: the main thread writes the host's list. Sent before the reply to the command that did it. */
  | { readonly kind: 'remember'; readonly vm: string; readonly detached: boolean }
  | { readonly kind: 'stopped' };
