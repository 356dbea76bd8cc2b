// A histogram of durations with fixed bucket bounds (seconds), as Prometheus exposes one:
// cumulative counts per upper bound, a sum and a count. Observing is a short scan over a
// dozen bounds, no allocation: for events (upcalls, key exchanges), not for every packet.

/** Upper bounds in seconds, from 100 µs to 10 s. */
export const LATENCY_BOUNDS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10];

export interface HistogramSnapshot {
  /** Upper bound (seconds) -> observations at or below it (cumulative); +Inf is `count`. */
  readonly buckets: readonly { readonly le: number; readonly count: number }[];
  readonly sum: number;
  readonly count: number;
}

export class Histogram {
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(private readonly bounds: readonly number[] = LATENCY_BOUNDS) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(seconds: number): void {
    const b = this.bounds;
    let k = 0;
    while (k < b.length && seconds > b[k]) k++;
    if (k < b.length) this.counts[k]++;
    this.sum += seconds;
    this.count++;
  }

  snapshot(): HistogramSnapshot {
    let running = 0;
    const buckets = this.bounds.map((le, k) => {
      running += this.counts[k];
      return { le, count: running };
    });
    return { buckets, sum: this.sum, count: this.count };
  }
}

/** What `after` counted since `before` (two snapshots of one histogram). */
export function histogramDelta(after: HistogramSnapshot, before: HistogramSnapshot): HistogramSnapshot {
  if (after.buckets.length !== before.buckets.length) throw new RangeError('histogramDelta: snapshots of different histograms');
  return {
    buckets: after.buckets.map((b, k) => ({ le: b.le, count: b.count - before.buckets[k]!.count })),
    sum: after.sum - before.sum,
    count: after.count - before.count,
  };
}

/**
 * The q-quantile (0..1) estimated from the buckets, linear within the bucket it falls in (the
 * first bucket from 0); NaN when empty, the last bound when it falls above every bound.
 */
export function histogramQuantile(h: HistogramSnapshot, q: number): number {
  if (h.count === 0) return NaN;
  const rank = q * h.count;
  let below = 0;
  let lower = 0;
  for (const b of h.buckets) {
    if (b.count >= rank && b.count > below) return lower + ((b.le - lower) * (rank - below)) / (b.count - below);
    below = b.count;
    lower = b.le;
  }
  return lower;
}
