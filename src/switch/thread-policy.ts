// The switch's packet threads come first on their CPUs. A Node process also runs V8's
// platform workers (optimizing compiles, concurrent GC) and libuv's pool; under the default
// policy a helper that wakes on a packet thread's CPU preempts it for the length of its job
// (0.5-3 ms of a compile was traced in the middle of a first packet's miss path). Each packet
// thread (the main thread, which also runs the miss path, and each data-path worker) marks
// itself; once the switch runs, every other thread of the process goes to SCHED_BATCH: the
// same share of the CPU, without the wake-up preemption (src/native/thread_policy.c).

import { access } from 'node:fs/promises';
import { loadNative } from '../native/addon.js';

/** The calling thread carries packets (or runs the miss path): it keeps its policy. Returns its thread id. */
export function markPacketThread(): number {
  return loadNative().markPacketThread();
}

/**
 * Every thread of this process that no packet thread marked goes to SCHED_BATCH; returns how
 * many helpers run under it now. libuv starts its pool at the first request: one request
 * first, so that the pool's threads exist when they are moved.
 */
export async function yieldHelperThreads(): Promise<number> {
  await access('/proc/self/task');
  return loadNative().yieldHelperThreads();
}
