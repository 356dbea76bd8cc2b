// The import layers of src/ (test/layers.ts): the real tree has no upward import and no
// cycle, and the checker does catch each kind of violation planted in a copy of the tree.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkLayers, readTree, SRC_DIR, type Violation } from './layers.js';

const tree = readTree(SRC_DIR);
const baseline = new Set(checkLayers(tree).map((x) => x.text));

/** The violations a change to the tree adds (the first test holds the tree itself to none). */
function added(planted: ReadonlyMap<string, string>): Violation[] {
  return checkLayers(planted).filter((x) => !baseline.has(x.text));
}

test('src/ has no upward import and no import cycle', () => {
  assert.ok(tree.size > 50, `read only ${tree.size} files from ${SRC_DIR}`);
  const v = checkLayers(tree);
  assert.equal(v.map((x) => x.text), []);
});

test('an import from the base layer up into the data path is reported', () => {
  const planted = new Map(tree);
  const file = 'base/drops.ts';
  planted.set(file, `import { Batch } from '../dataplane/batch.js';\n${tree.get(file)}`);
  const v = added(planted);
  assert.equal(v.map((x) => x.kind), ['upward']);
  assert.match(v[0].text, 'base/drops.ts (base) imports dataplane/batch.ts (dataplane), a higher layer');
});

test('a type-only import from the ESP layer up into policy is reported', () => {
  const planted = new Map(tree);
  planted.set('esp/sa.ts', `import type { Policy } from '../policy/decision.js';\n${tree.get('esp/sa.ts')}`);
  assert.equal(added(planted).map((x) => x.text), ['esp/sa.ts (esp) imports policy/decision.ts (policy), a higher layer']);
});

test('two modules of one layer importing each other are reported as a cycle', () => {
  const planted = new Map(tree);
  planted.set('wire/ipv4.ts', `import { ETH_HLEN } from './ethernet.js';\n${tree.get('wire/ipv4.ts')}`);
  planted.set('wire/ethernet.ts', `export { IPV4_HLEN } from './ipv4.js';\n${tree.get('wire/ethernet.ts')}`);
  assert.equal(added(planted).map((x) => x.text), ['import cycle among wire/ethernet.ts, wire/ipv4.ts']);
});

test('a module outside every layer is reported', () => {
  const planted = new Map(tree);
  planted.set('misc/helper.ts', 'export const x = 1;\n');
  assert.equal(added(planted).map((x) => x.kind), ['unlayered']);
});

test.run();
