// `switch.busyPollUs` in nvi-switch.yaml: off by default, read when given, and an error naming
// its path when it is not a whole number of microseconds from 0 to 10 s.

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

function withBusyPoll(value: unknown): CloudConfig {
  const doc = parseDocument(readFileSync(SHIPPED, 'utf8'));
  if (value === undefined) doc.deleteIn(['switch', 'busyPollUs']);
  else doc.setIn(['switch', 'busyPollUs'], value);
  const file = join(dir, 'nvi-switch.yaml');
  writeFileSync(file, doc.toString());
  return loadConfig(file);
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

test.run();
