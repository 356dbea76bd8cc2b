// A running switch's wake times (src/switch/wake-times.ts), read through its control socket,
// and the median of what they counted between two readings.

import type { CloudConfig } from '../../src/config/config.js';
import { histogramDelta, histogramQuantile } from '../../src/base/histogram.js';
import { controlRequest } from '../../src/switch/control.js';
import { controlPath } from '../../src/switch/paths.js';
import type { WakeTimes } from '../../src/switch/wake-times.js';

/** Host `host`'s wake times now (its `stats`). */
export async function switchWake(cfg: CloudConfig, host: string): Promise<WakeTimes> {
  return ((await controlRequest(controlPath(cfg, host), { cmd: 'stats' })) as { wake: WakeTimes }).wake;
}

/** The median of `part` (µs, estimated from the buckets) over the wakes between `before` and `after`. */
export function medianUs(after: WakeTimes, before: WakeTimes, part: keyof WakeTimes): number {
  return histogramQuantile(histogramDelta(after[part], before[part]), 0.5) * 1e6;
}
