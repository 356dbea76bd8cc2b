// The policy in the store is taken only when the cloud CA signed it, over its revision and its
// text, and only above the revision a switch runs: a table of what a switch must refuse.

import { generateKeyPairSync } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { policyRefusal, signPolicy, type PolicyRecord } from '../src/policy/signed-policy.js';

const ca = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const doc = '{"version":1,"tenants":[]}';
const good = signPolicy(4, doc, ca.privateKey);

const rows: [string, PolicyRecord, number, string | undefined][] = [
  ['a signed policy above the running revision is taken', good, 3, undefined],
  ['a policy without a signature is refused', { ...good, signature: '' }, 3, 'unsigned'],
  ['a signature by another key is refused', signPolicy(4, doc, other.privateKey), 3, 'bad-signature'],
  ['a document changed after signing is refused', { ...good, document: '{"version":1,"tenants":[{}]}' }, 3, 'bad-signature'],
  ['a revision changed after signing is refused', { ...good, revision: 9 }, 3, 'bad-signature'],
  ['a signature of the wrong length is refused', { ...good, signature: Buffer.alloc(63).toString('base64') }, 3, 'bad-signature'],
  ['a signed policy at the running revision is refused', good, 4, 'older-revision'],
  ['an older signed revision is refused', signPolicy(2, doc, ca.privateKey), 4, 'older-revision'],
];

for (const [name, rec, current, want] of rows) {
  test(name, () => assert.is(policyRefusal(rec, ca.publicKey, current), want));
}

test('revisions start at 1', () => {
  assert.throws(() => signPolicy(0, doc, ca.privateKey), /from 1/);
});

test.run();
