// This thread's wake times (src/native/wake_times.c) as two histograms: from a port's
// readiness callback to its read (the entry), and from that read to the first packet sent
// (the pipeline). `stats` shows them; the metrics endpoint exports them.

import type { HistogramSnapshot } from '../base/histogram.js';
import type { NativeAddon } from '../native/addon.js';

export interface WakeTimes {
  readonly entry: HistogramSnapshot;
  readonly pipeline: HistogramSnapshot;
}

export function wakeTimes(native: NativeAddon): WakeTimes {
  const bounds = native.wakeTimeBounds();
  const width = bounds.length + 2; // the buckets, the one above the last bound, the sum
  const raw = new Float64Array(2 * width);
  native.wakeTimes(raw);
  const histogram = (at: number): HistogramSnapshot => {
    let running = 0;
    const buckets = bounds.map((le, k) => ({ le, count: (running += raw[at + k]!) }));
    return { buckets, sum: raw[at + width - 1]!, count: running + raw[at + bounds.length]! };
  };
  return { entry: histogram(0), pipeline: histogram(width) };
}
