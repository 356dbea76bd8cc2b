// Histogram snapshots: cumulative buckets, the difference of two snapshots, quantiles
// estimated from the buckets.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Histogram, histogramDelta, histogramQuantile } from '../src/base/histogram.js';

const BOUNDS = [1, 2, 4, 8];

test('a quantile falls linearly within its bucket, from 0 in the first', () => {
  const h = new Histogram(BOUNDS);
  for (const x of [0.5, 1.5, 1.5, 3]) h.observe(x);
  const s = h.snapshot();
  assert.is(histogramQuantile(s, 0.25), 1, 'the first of four: the top of the first bucket');
  assert.is(histogramQuantile(s, 0.5), 1.5, 'half way through (1, 2]');
  assert.is(histogramQuantile(s, 0.75), 2);
  assert.is(histogramQuantile(s, 1), 4, 'the last one, in (2, 4]');
  assert.is(histogramQuantile(s, 0.125), 0.5, 'within the first bucket, from 0');
});

test('above every bound the quantile is the last bound; an empty histogram has none', () => {
  const h = new Histogram(BOUNDS);
  assert.ok(Number.isNaN(histogramQuantile(h.snapshot(), 0.5)));
  h.observe(100);
  assert.is(histogramQuantile(h.snapshot(), 0.5), 8);
});

test('a delta counts only what came between two snapshots', () => {
  const h = new Histogram(BOUNDS);
  h.observe(0.5);
  h.observe(7);
  const before = h.snapshot();
  h.observe(3);
  h.observe(3);
  const d = histogramDelta(h.snapshot(), before);
  assert.is(d.count, 2);
  assert.is(d.sum, 6);
  assert.equal(d.buckets.map((b) => b.count), [0, 0, 2, 2]);
  assert.is(histogramQuantile(d, 0.5), 3);
  assert.throws(() => histogramDelta(d, new Histogram([1]).snapshot()), /different histograms/);
});

test.run();
