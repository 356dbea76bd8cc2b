// `switch.busyPollUs` and `switch.workers` in nvi-switch.yaml: defaults, values read when
// given, and an error naming the path when a value is out of its range.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { loadConfig, type CloudConfig } from '../src/config/config.js';
import { atExit } from './at-exit.js';

const SHIPPED = fileURLToPath(new URL('../../nvi-switch.yaml', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'nvi-config-switch-'));
atExit(() => rmSync(dir, { recursive: true, force: true }));

/** The shipped config with `edit` made to it, loaded. */
function edited(edit: (doc: ReturnType<typeof parseDocument>) => void): CloudConfig {
  const doc = parseDocument(readFileSync(SHIPPED, 'utf8'));
  edit(doc);
  const file = join(dir, 'nvi-switch.yaml');
  writeFileSync(file, doc.toString());
  return loadConfig(file);
}

function withBusyPoll(value: unknown, workers?: unknown): CloudConfig {
  return edited((doc) => {
    if (value === undefined) doc.deleteIn(['switch', 'busyPollUs']);
    else doc.setIn(['switch', 'busyPollUs'], value);
    if (workers !== undefined) doc.setIn(['switch', 'workers'], workers);
  });
}

test('busy polling is off unless asked for, and takes a window in microseconds', () => {
  assert.is(withBusyPoll(undefined).switch.busyPollUs, 0);
  assert.is(loadConfig(SHIPPED).switch.busyPollUs, 0);
  assert.is(withBusyPoll(5000).switch.busyPollUs, 5000);
  assert.is(withBusyPoll(10_000_000).switch.busyPollUs, 10_000_000);
});

for (const bad of [-1, 1.5, 10_000_001, 'fast']) {
  test(`busyPollUs ${JSON.stringify(bad)} is an error naming switch.busyPollUs`, () => {
    assert.throws(() => withBusyPoll(bad), /switch\.busyPollUs/);
  });
}

test('one data-path thread unless asked for; up to 64', () => {
  assert.is(loadConfig(SHIPPED).switch.workers, 1);
  assert.is(withBusyPoll(undefined, 2).switch.workers, 2);
  assert.is(withBusyPoll(0, 64).switch.workers, 64);
});

for (const bad of [0, 65, 1.5, 'many']) {
  test(`workers ${JSON.stringify(bad)} is an error naming switch.workers`, () => {
    assert.throws(() => withBusyPoll(undefined, bad), /switch\.workers/);
  });
}

test('busy polling with several workers: each worker thread polls with the window', () => {
  const c = withBusyPoll(5000, 2);
  assert.is(c.switch.busyPollUs, 5000);
  assert.is(c.switch.workers, 2);
});


function withCpus(cpus: unknown): CloudConfig {
  return edited((doc) => doc.setIn(['hosts', 'h1', 'cpus'], cpus));
}

test('a host names the CPUs of its data-path threads, or none', () => {
  assert.is(loadConfig(SHIPPED).hosts.get('h1')!.cpus, undefined);
  assert.equal(withCpus([1, 0]).hosts.get('h1')!.cpus, [1, 0]);
  assert.equal(withCpus([1023]).hosts.get('h1')!.cpus, [1023]);
  assert.is(withCpus([3]).hosts.get('h2')!.cpus, undefined, 'per host');
});

for (const [bad, why] of [[[], /at least one CPU/], [[-1], /cpus\[0\]/], [[0, 1024], /cpus\[1\]/], [[1, 1], /CPU 1 is listed twice/], [[0.5], /cpus\[0\]/], ['0', /expected a list/]] as const) {
  test(`hosts.h1.cpus ${JSON.stringify(bad)} is an error naming hosts.h1.cpus`, () => {
    assert.throws(() => withCpus(bad), (e: Error) => /hosts\.h1\.cpus/.test(e.message) && why.test(e.message));
  });
}

test('switch.esp.spares: 2 unless given, 0 turns them off; refused outside 0-16', () => {
  const withSpares = (n: unknown): CloudConfig => edited((doc) => {
    if (n === undefined) doc.deleteIn(['switch', 'esp', 'spares']);
    else doc.setIn(['switch', 'esp', 'spares'], n);
  });
  assert.is(withSpares(undefined).switch.esp.spares, 2);
  assert.is(withSpares(0).switch.esp.spares, 0);
  assert.is(withSpares(16).switch.esp.spares, 16);
  for (const bad of [17, -1, 1.5, 'two']) assert.throws(() => withSpares(bad), /switch\.esp\.spares/, String(bad));
});

test.run();

function withEspUdpPort(port: unknown, workers?: unknown): CloudConfig {
  return edited((doc) => {
    if (port === undefined) doc.deleteIn(['underlay', 'espUdpPort']);
    else doc.setIn(['underlay', 'espUdpPort'], port);
    if (workers !== undefined) doc.setIn(['switch', 'workers'], workers);
  });
}

test('underlay.espUdpPort: 0 (ESP as IP protocol 50) unless given, with one data-path thread or several; refused on the key exchange\'s port or out of range', () => {
  assert.is(withEspUdpPort(undefined).underlay.espUdpPort, 0);
  assert.is(withEspUdpPort(4500).underlay.espUdpPort, 4500);
  assert.throws(() => withEspUdpPort(7011), /underlay\.espUdpPort.*key exchange's port/);
  assert.throws(() => withEspUdpPort(70000), /underlay\.espUdpPort/);
  assert.throws(() => withEspUdpPort('x'), /underlay\.espUdpPort/);
  assert.is(withEspUdpPort(4500, 2).underlay.espUdpPort, 4500);
});
