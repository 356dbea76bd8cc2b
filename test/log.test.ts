// The JSON logger: each event is rate-limited by its own token bucket; what it suppresses is
// counted and reported before that event's next line, and other events are not affected.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { JsonLogger } from '../src/base/log.js';

function logger(perSecond: number) {
  let now = 1_000_000;
  const lines: Record<string, unknown>[] = [];
  const log = new JsonLogger((l) => lines.push(JSON.parse(l) as Record<string, unknown>), () => now, perSecond, { host: 'h1' });
  return { log, lines, step: (ms: number) => (now += ms) };
}

test('a flood of one event logs the burst, then reports how many lines it suppressed', () => {
  const { log, lines, step } = logger(20);
  for (let k = 0; k < 100; k++) log.warn('tap-failed', { k });
  assert.is(lines.length, 20);
  log.info('other-event');
  assert.is(lines.length, 21, 'another event has its own bucket');
  step(1000);
  log.warn('tap-failed', { k: 100 });
  assert.equal(lines.slice(21).map((l) => [l.event, l.of, l.lines ?? l.k]), [['log-suppressed', 'tap-failed', 80], ['tap-failed', undefined, 100]]);
  assert.is(lines[22].host, 'h1');
  assert.is(lines[22].level, 'warn');
});

test('lines within the rate are never suppressed', () => {
  const { log, lines, step } = logger(10);
  for (let k = 0; k < 50; k++) {
    log.info('tick');
    step(100);
  }
  assert.is(lines.length, 50);
  assert.not.ok(lines.some((l) => l.event === 'log-suppressed'));
});

test.run();
