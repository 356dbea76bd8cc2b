// What the main thread and a data-path thread say to each other (sharded-switch.ts and
// worker-thread.ts). Nothing here is per packet: key-exchange messages, operator commands
// and their answers, verdict events that an operator follows.

import type { Shard } from './shard.js';

/** What a worker thread starts with. */
export interface WorkerStart {
  readonly configFile: string;
  readonly host: string;
  readonly shard: Shard;
  readonly cipher?: string;
  readonly vmNetnsPrefix?: string;
  readonly exportSa?: string;
}

/** The operator commands a worker answers (its share of the host's answer). */
export type WorkerMethod = 'stats' | 'cables' | 'flush' | 'explain' | 'vm' | 'lastVerdicts';

export type ToWorker =
  | { readonly kind: 'kx'; readonly msg: Uint8Array; readonly from: number }
  | { readonly kind: 'call'; readonly id: number; readonly method: WorkerMethod; readonly arg?: unknown }
  | { readonly kind: 'watch'; readonly id: number; readonly filter: unknown }
  | { readonly kind: 'unwatch'; readonly id: number }
  | { readonly kind: 'stop' };

export type FromWorker =
  | { readonly kind: 'ready' }
  | { readonly kind: 'failed'; readonly error: string; readonly code?: string }
  | { readonly kind: 'kx'; readonly msg: Uint8Array; readonly to: number }
  | { readonly kind: 'reply'; readonly id: number; readonly result?: unknown; readonly error?: string }
  | { readonly kind: 'verdict'; readonly id: number; readonly verdict: unknown; readonly lost: number }
  /** Keep a VM detached (or not) across restarts: the main thread writes the host's list. Sent before the reply to the command that did it. */
  | { readonly kind: 'remember'; readonly vm: string; readonly detached: boolean }
  | { readonly kind: 'stopped' };
